"""One keep-alive HTTP/1.1 connection that releases the GIL as few times as a request allows.

Why not httpx for the export hot path: an export worker that releases the GIL hands it to the
app's busy event-loop thread and waits up to a switch interval (5 ms) to get it back, once per
syscall. httpx makes about ten per request (readability poll, ``settimeout`` ioctls, a poll
before every send and receive, headers and body apart); under load an export then lasts tens of
milliseconds, the next kick is due when it ends, and the worker and the app trade the GIL
thousands of times a second (measured: a hello run cost 1.3 ms of CPU or 1.9 ms, depending on
which of those two states the process fell into). Here a request is one ``sendall`` (headers and
body together; ``http.client`` sends them apart) and usually one ``recv``, on a blocking socket
whose timeouts the kernel enforces (``SO_SNDTIMEO``/``SO_RCVTIMEO``), so Python polls nothing.

One deadline bounds the whole request: every receive gets only the time left, so a server that
trickles its answer a byte at a time cannot stretch it, and a receive that times out raises
``TimeoutError`` (``http.client`` reading through ``socket.makefile`` would take the timeout for
the end of the answer and report a 200). ``http.client`` (stdlib) parses the answer. Credentials
in the URL (``user:password@``) become Basic auth, as httpx does. Used only when no proxy variable
is set at all (httpx handles proxies); TLS uses the same SSL context httpx would.
"""

from __future__ import annotations

import base64
import http.client
import io
import socket
import ssl
import struct
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

__all__ = ["FastConnection"]


#: ``Response.extensions`` key: seconds from the request written to its status line read (the
#: endpoint's answer time, plus at most the GIL hand-offs of one read: not the encoding before it)
ANSWER_SECONDS = "otel_basic.answer_seconds"


def _timeval(seconds: float) -> bytes:
    seconds = max(0.001, min(seconds, 3600.0))
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


class _Timeouts:
    """The kernel's send/receive timeouts of one socket, moved only when they change noticeably."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send = self._recv = -1.0

    def send(self, seconds: float) -> None:
        if abs(seconds - self._send) > 0.005:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(seconds))
            self._send = seconds

    def recv(self, seconds: float) -> None:
        if abs(seconds - self._recv) > 0.005:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
            self._recv = seconds


class _DeadlineReader(io.RawIOBase):
    """What ``http.client`` reads the answer from: each receive bounded by the time left."""

    def __init__(self, timeouts: _Timeouts, deadline: float) -> None:
        self._timeouts = timeouts
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete answer before the deadline")
        self._timeouts.recv(left)
        try:
            return self._timeouts.sock.recv_into(buffer)
        except (BlockingIOError, ssl.SSLWantReadError) as exc:  # SO_RCVTIMEO expired
            raise TimeoutError("no answer before the deadline") from exc


class _AnswerSource:
    """Stands in for the socket ``http.client.HTTPResponse`` wants: it only calls ``makefile``."""

    def __init__(self, reader: _DeadlineReader) -> None:
        self._reader = reader

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(self._reader)


class FastConnection:
    """POSTs to one URL over a reused connection; answers as ``httpx.Response`` for the classifier.

    Not thread-safe: one user at a time (the transport pools them, one per concurrent export; the
    score sender posts under its own lock).
    """

    def __init__(self, url: str, headers: Mapping[str, str], ssl_context: ssl.SSLContext | None) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = parts.port is None or parts.port == (443 if self._https else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host  # an IPv6 literal
        self._host_header = host if default_port else f"{host}:{self._port}"
        self._headers = dict(headers)
        if parts.username is not None and not any(k.lower() == "authorization" for k in self._headers):
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._url = url
        self._ssl = ssl_context if self._https else None
        self._conn: http.client.HTTPConnection | None = None
        self._timeouts: _Timeouts | None = None

    @classmethod
    def for_client(
        cls, url: str, headers: Mapping[str, str], client_options: Mapping[str, Any]
    ) -> FastConnection | None:
        """A connection with the TLS context httpx would use (``client_options["verify"]``), or None
        when there is none to use (an ``https`` URL without an ``SSLContext``): then httpx sends."""
        verify = client_options.get("verify")
        context = verify if isinstance(verify, ssl.SSLContext) else None
        if context is None and url.startswith("https:"):
            return None
        return cls(url, headers, context)

    def fresh(self) -> FastConnection:
        """Another, unconnected connection like this one (a pool's next, or a fork child's)."""
        return FastConnection(self._url, self._headers, self._ssl)

    def address(self) -> tuple[str, int, ssl.SSLContext | None]:
        """Host, port and TLS context (None: plain http), for a connection made elsewhere (loop_http)."""
        return self._host, self._port, self._ssl

    def request_bytes(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        """The whole request, headers and body in one buffer (one write)."""
        lines = [f"POST {self._path} HTTP/1.1", f"Host: {self._host_header}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in {**self._headers, **headers}.items()]
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("a header name or value contains a line break")
        return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        conn.connect()
        conn.sock.settimeout(None)  # blocking: no poll() before each operation; the kernel times out
        self._timeouts = _Timeouts(conn.sock)
        return conn

    def post(self, body: bytes, timeout: float, headers: Mapping[str, str]) -> httpx.Response:
        """One POST within ``timeout`` seconds in all; raises on any network or protocol error
        (after closing the connection), ``TimeoutError`` when the time ran out.

        A kept-alive connection the server closed meanwhile fails at once, before any answer: that
        case alone is retried, once, on a new connection (what httpx's readability check is for)."""
        deadline = time.monotonic() + timeout
        reused = self._conn is not None
        try:
            return self._post(body, deadline, headers)
        except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
            if not reused or timeout - (deadline - time.monotonic()) > 0.25:
                raise
        return self._post(body, deadline, headers)

    def _post(self, body: bytes, deadline: float, headers: Mapping[str, str]) -> httpx.Response:
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no time left to send")
            conn = self._conn if self._conn is not None else self._connect(left)
            self._conn = conn
            timeouts = self._timeouts
            assert timeouts is not None
            request = self.request_bytes(body, headers)
            timeouts.send(max(0.001, deadline - time.monotonic()))
            try:
                timeouts.sock.sendall(request)
            except (BlockingIOError, ssl.SSLWantWriteError) as exc:  # SO_SNDTIMEO expired
                raise TimeoutError("the endpoint did not take the request before the deadline") from exc
            written = time.monotonic()
            source = _AnswerSource(_DeadlineReader(timeouts, deadline))
            answer = http.client.HTTPResponse(source, method="POST")  # type: ignore[arg-type]
            answer.begin()
            waited = time.monotonic() - written
            length = answer.getheader("content-length")
            if length is not None and not length.strip().isdigit():  # http.client reads it as "to the close"
                raise http.client.HTTPException("the answer's Content-Length is not a number")
            content = answer.read()
        except BaseException:
            self.close()
            raise
        if answer.will_close:
            self.close()
        return httpx.Response(
            answer.status, headers=answer.getheaders(), content=content, extensions={ANSWER_SECONDS: waited}
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._timeouts = None
        if conn is not None:
            conn.close()
