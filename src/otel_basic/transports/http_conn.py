"""One keep-alive HTTP/1.1 connection that releases the GIL as few times as a request allows.

Why not httpx for the export hot path: an export worker that releases the GIL hands it to the
app's busy event-loop thread and waits up to a switch interval (5 ms) to get it back, once per
syscall. httpx makes about ten per request (readability poll, ``settimeout`` ioctls, a poll
before every send and receive, headers and body apart); under load an export then lasts tens of
milliseconds, the next kick is due when it ends, and the worker and the app trade the GIL
thousands of times a second (measured: a hello run cost 1.3 ms of CPU or 1.9 ms, depending on
which of those two states the process fell into). Here a request is one ``sendall`` (headers and
body together, as ``http.client`` does) and usually one ``recv``, on a blocking socket whose
timeouts the kernel enforces (``SO_SNDTIMEO``/``SO_RCVTIMEO``), so Python polls nothing.

``http.client`` (stdlib) formats the request and parses the answer; this module only owns the
socket, and writes the request itself so that headers and body leave in one ``sendall``
(``http.client`` sends them apart). It is used when no proxy applies (httpx handles proxies);
TLS uses the same SSL context as httpx would.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import struct
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx

__all__ = ["FastConnection"]


def _timeval(seconds: float) -> bytes:
    seconds = max(0.001, min(seconds, 3600.0))
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


class FastConnection:
    """POSTs to one URL over a reused connection; answers as ``httpx.Response`` for the classifier.

    Not thread-safe: one user at a time (the transport pools them, one per concurrent export; the
    score sender posts under its own lock). Timeouts bound each socket operation, as httpx's do.
    """

    def __init__(self, url: str, headers: Mapping[str, str], ssl_context: ssl.SSLContext | None) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = parts.port is None or parts.port == (443 if self._https else 80)
        self._host_header = self._host if default_port else f"{self._host}:{self._port}"
        if ":" in self._host:  # an IPv6 literal
            self._host_header = f"[{self._host}]" + ("" if default_port else f":{self._port}")
        self._headers = dict(headers)
        self._ssl = ssl_context if self._https else None
        self._conn: http.client.HTTPConnection | None = None
        self._timeout = 0.0

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        conn.connect()
        sock = conn.sock
        sock.settimeout(None)  # blocking: no poll() before each operation ...
        self._timeout = -1.0  # ... the kernel enforces the deadline (set per request below)
        return conn

    def _set_timeout(self, sock: socket.socket, timeout: float) -> None:
        if abs(timeout - self._timeout) > 0.05:  # one pair of setsockopt calls per noticeable change
            value = _timeval(timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self._timeout = timeout

    def post(self, body: bytes, timeout: float, headers: Mapping[str, str]) -> httpx.Response:
        """One POST; raises on any network or protocol error (after closing the connection).

        A kept-alive connection the server closed meanwhile fails before any answer: that case
        is retried once at once on a new connection (what httpx's readability check is for)."""
        reused, started = self._conn is not None, time.monotonic()
        try:
            return self._post(body, timeout, headers)
        except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as exc:
            elapsed = time.monotonic() - started
            if elapsed >= 0.9 * timeout:  # the kernel's timeout reads as an empty answer: not stale
                raise TimeoutError(f"no answer within {timeout:.3f} s") from exc
            if not reused or elapsed > 0.25:  # a stale connection fails at once; anything else is real
                raise
        return self._post(body, timeout - (time.monotonic() - started), headers)

    def _post(self, body: bytes, timeout: float, headers: Mapping[str, str]) -> httpx.Response:
        conn = self._conn
        try:
            if conn is None:
                conn = self._conn = self._connect(timeout)
            sock = conn.sock
            self._set_timeout(sock, timeout)
            lines = [f"POST {self._path} HTTP/1.1", f"Host: {self._host_header}", f"Content-Length: {len(body)}"]
            lines += [f"{k}: {v}" for k, v in {**self._headers, **headers}.items()]
            if any("\r" in line or "\n" in line for line in lines):
                raise ValueError("a header name or value contains a line break")
            sock.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body)  # one send, not two
            answer = http.client.HTTPResponse(sock, method="POST")
            answer.begin()
            content = answer.read()
        except BaseException:
            self.close()
            raise
        if answer.will_close:
            self.close()
        return httpx.Response(answer.status, headers=answer.getheaders(), content=content)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
