"""A real, in-process HTTP server that speaks the Langfuse OTLP ingestion contract.

Why a real server (not a mocked exporter): the bugs we care about (lost spans on
shutdown, retries, duplicates after timeouts, gzip, auth, keep-alive) only show up
when bytes go over a socket. The receiver follows the Langfuse route
``/api/public/otel/v1/traces`` (Basic auth, protobuf or JSON, optional gzip, 400/401
semantics), records everything it sees, and can inject faults: error statuses,
delays, black holes, dropped connections and body-size limits.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import gzip
import hmac
import json
import logging
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_basic.otlp_decode import OTLPDecodeError, ReceivedSpan, decode_request

__all__ = ["LANGFUSE_TRACES_PATH", "OTLP_TRACES_PATH", "LangfuseReceiver", "ReceivedRequest"]

_log = logging.getLogger(__name__)

LANGFUSE_OTLP_BASE_PATH = "/api/public/otel"
LANGFUSE_TRACES_PATH = LANGFUSE_OTLP_BASE_PATH + "/v1/traces"
LANGFUSE_METRICS_PATH = LANGFUSE_OTLP_BASE_PATH + "/v1/metrics"
OTLP_TRACES_PATH = "/v1/traces"
TRACES_PATHS = frozenset({LANGFUSE_TRACES_PATH, OTLP_TRACES_PATH})
PROJECTS_PATH = "/api/public/projects"
SCORES_PATH = "/api/public/scores"
HEALTH_PATHS = frozenset({"/health", "/api/public/health"})

MAX_SUPPORTED_INGESTION_VERSION = 4
_PROJECTS_BODY = {
    "data": [
        {
            "id": "test-project",
            "name": "otel-basic test project",
            "organization": {"id": "test-org", "name": "otel-basic test org"},
            "metadata": {},
        }
    ]
}


@dataclass(frozen=True, repr=False)
class ReceivedRequest:
    """One HTTP request as the receiver saw it, plus what it answered.

    ``status`` is ``None`` when no response was sent (dropped or black-holed).
    ``spans`` holds what the body decoded to even when the request was rejected,
    so retry tests can tell which batch a failed attempt carried.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw_body: bytes
    body: bytes
    content_type: str
    status: int | None
    span_count: int
    received_at: float
    spans: tuple[ReceivedSpan, ...] = field(default=())

    @property
    def is_traces(self) -> bool:
        """True for trace exports (Langfuse path or plain OTLP path)."""
        return self.path in TRACES_PATHS

    @property
    def accepted(self) -> bool:
        """True when the receiver answered 2xx."""
        return self.status is not None and 200 <= self.status < 300

    def json(self) -> Any:
        """The (decompressed) body parsed as JSON, e.g. for score requests."""
        return json.loads(self.body)

    def __repr__(self) -> str:  # headers carry the Basic credentials: never show them
        return (
            f"ReceivedRequest({self.method} {self.path} status={self.status} "
            f"spans={self.span_count} bytes={len(self.raw_body)})"
        )


@dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: str | None
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...]


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its connections so ``stop()`` can cut them."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], receiver: LangfuseReceiver) -> None:
        self.receiver = receiver
        self.closed = False  # guarded by receiver._cond
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open client socket, waking handler threads blocked in recv."""
        with self._connections_lock:
            conns = list(self._connections)
            self._connections.clear()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connection resets after stop()/drop are expected; keep test output clean.
        _log.debug("receiver: error while handling %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms per request), which would distort every latency measured against us.
    disable_nagle_algorithm = True
    server_version = "otel-basic-receiver/1"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("receiver: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # ------------------------------------------------------------------ plumbing

    def _dispatch(self) -> None:
        try:
            raw = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self.send_json(400, {"message": f"Bad request body: {exc}"})
            return
        try:
            self.server.receiver._handle(self, raw)
        except (ConnectionError, OSError):
            self.close_connection = True
            raise
        except Exception:  # pragma: no cover - a bug in the receiver, not in the client
            _log.exception("receiver: handler crashed")
            self.close_connection = True
            self.send_json(500, {"message": "receiver crashed"})

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError as exc:
                    raise ValueError("bad chunk size") from exc
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError as exc:
            raise ValueError("bad Content-Length") from exc
        if length < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(length) if length else b""

    def header_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in self.headers.items():
            k = key.lower()
            out[k] = f"{out[k]}, {value}" if k in out else value
        return out

    def send_body(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_body(status, json.dumps(payload).encode(), "application/json", headers)

    def drop(self) -> None:
        """Close the socket without sending anything (the client sees a disconnect)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class LangfuseReceiver:
    """Stand-in Langfuse server for tests: ``with LangfuseReceiver() as r: ...``.

    Point an app at it with ``monkeypatch.setenv`` over :meth:`env`, or use the
    ``langfuse_env`` pytest fixture. All public methods are thread-safe.
    """

    def __init__(
        self,
        public_key: str = "pk-lf-test",
        secret_key: str = "sk-lf-test",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        require_auth: bool = True,
    ) -> None:
        self.public_key = public_key
        self._secret_key = secret_key
        self._host = host
        self._port = port
        self.require_auth = require_auth
        self._cond = threading.Condition(threading.RLock())
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._requests: list[ReceivedRequest] = []
        self._spans: list[ReceivedSpan] = []
        self._listeners: list[Callable[[list[ReceivedSpan]], None]] = []
        # faults
        self._failures: collections.deque[_Failure] = collections.deque()
        self._delay = 0.0
        self._blackhole = False
        self._drops = 0
        self._hangs = 0
        self._hang_scores = False
        self._released = 0  # bumped by reset_faults: hung requests end
        self._max_body_bytes: int | None = None
        self._partial: collections.deque[int | None] = collections.deque()
        self._score_failures: collections.deque[int] = collections.deque()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LangfuseReceiver:
        """Bind and serve in a daemon thread; after ``stop()`` it rebinds the same port."""
        with self._cond:
            if self._server is not None:
                return self
            server = _Server((self._host, self._port), self)
            self._port = int(server.server_address[1])
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"langfuse-receiver-{self._port}",
                daemon=True,
            )
            self._server, self._thread = server, thread
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections; never blocks on stuck handlers."""
        with self._cond:
            server, thread = self._server, self._thread
            if server is None:
                return
            self._server = self._thread = None
            server.closed = True
            self._cond.notify_all()  # wake handlers in delay/blackhole
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    def __enter__(self) -> LangfuseReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        with self._cond:
            return self._server is not None

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        """The bound port (stays the same across stop/start)."""
        if self._port == 0:
            raise RuntimeError("receiver has no port yet: call start() first")
        return self._port

    @property
    def host(self) -> str:
        return self._host

    @property
    def base_url(self) -> str:
        """What goes in ``LANGFUSE_BASE_URL``."""
        return f"http://{self._host}:{self.port}"

    @property
    def otlp_base_url(self) -> str:
        """What goes in ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter appends /v1/traces)."""
        return self.base_url + LANGFUSE_OTLP_BASE_PATH

    @property
    def traces_url(self) -> str:
        """The full Langfuse OTLP traces endpoint."""
        return self.base_url + LANGFUSE_TRACES_PATH

    @property
    def auth_header(self) -> str:
        """The expected ``Authorization`` header value (contains the secret: don't log it)."""
        token = base64.b64encode(f"{self.public_key}:{self._secret_key}".encode()).decode("ascii")
        return f"Basic {token}"

    def env(self) -> dict[str, str]:
        """Environment variables that point the Langfuse SDK (and our app) here."""
        return {
            "LANGFUSE_PUBLIC_KEY": self.public_key,
            "LANGFUSE_SECRET_KEY": self._secret_key,
            "LANGFUSE_BASE_URL": self.base_url,
        }

    def __repr__(self) -> str:
        url = f"http://{self._host}:{self._port}" if self._port else "(not started)"
        return f"LangfuseReceiver(public_key={self.public_key!r}, base_url={url!r}, running={self.running})"

    # ------------------------------------------------------------------ recorded data

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request seen, in arrival order (a snapshot copy)."""
        with self._cond:
            return list(self._requests)

    @property
    def trace_requests(self) -> list[ReceivedRequest]:
        """Only the trace-export requests (either traces path)."""
        with self._cond:
            return [r for r in self._requests if r.is_traces]

    @property
    def spans(self) -> list[ReceivedSpan]:
        """Spans from accepted (2xx) exports, arrival order, duplicates kept."""
        with self._cond:
            return list(self._spans)

    @property
    def scores(self) -> list[dict[str, Any]]:
        """Score bodies from accepted ``POST /api/public/scores`` requests, arrival order.

        The Langfuse SDK posts a JSON array of scores (camelCase fields: id, traceId,
        observationId, name, value, dataType, comment, ...); a single object is accepted too.
        Duplicates are kept, so tests can check that nothing was sent twice.
        """
        out: list[dict[str, Any]] = []
        for request in self.requests:
            if request.path != SCORES_PATH or not request.accepted:
                continue
            raw = request.body
            if raw[:2] == b"\x1f\x8b":  # gzip magic: the request was sent compressed
                raw = gzip.decompress(raw)
            body = json.loads(raw)
            items = body if isinstance(body, list) else [body]
            out.extend(item for item in items if isinstance(item, dict))
        return out

    def span_names(self) -> list[str]:
        """Names of accepted spans in arrival order."""
        with self._cond:
            return [s.name for s in self._spans]

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """Accepted spans grouped by trace id (insertion order = first arrival)."""
        out: dict[str, list[ReceivedSpan]] = {}
        for span in self.spans:
            out.setdefault(span.trace_id, []).append(span)
        return out

    def clear(self) -> None:
        """Forget recorded requests and spans (faults are kept; see ``reset_faults``)."""
        with self._cond:
            self._requests.clear()
            self._spans.clear()

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """Block until at least ``n`` spans were accepted; return all accepted spans."""
        with self._cond:
            if self._cond.wait_for(lambda: len(self._spans) >= n, timeout=timeout):
                return list(self._spans)
            names = [s.name for s in self._spans]
            statuses = [r.status for r in self._requests if r.is_traces]
        raise TimeoutError(
            f"expected at least {n} span(s) within {timeout:g}s but {len(names)} arrived: {names!r}; "
            f"trace export requests seen: {len(statuses)} with statuses {statuses!r}"
        )

    def wait_for_requests(self, n: int, timeout: float = 10.0, *, traces_only: bool = True) -> list[ReceivedRequest]:
        """Block until at least ``n`` (trace) requests arrived, whatever their outcome."""

        def matching() -> list[ReceivedRequest]:
            return [r for r in self._requests if r.is_traces or not traces_only]

        with self._cond:
            if self._cond.wait_for(lambda: len(matching()) >= n, timeout=timeout):
                return matching()
            seen = [(r.method, r.path, r.status) for r in matching()]
        raise TimeoutError(f"expected at least {n} request(s) within {timeout:g}s, got {len(seen)}: {seen!r}")

    def add_span_listener(self, callback: Callable[[list[ReceivedSpan]], None]) -> None:
        """Call ``callback(spans)`` for each accepted export, before the 2xx is sent."""
        with self._cond:
            self._listeners.append(callback)

    # ------------------------------------------------------------------ faults

    def fail_next(
        self,
        status: int,
        count: int = 1,
        retry_after: float | str | None = None,
        body: bytes | str | Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        """Answer the next ``count`` trace exports with ``status`` (spans not stored).

        ``retry_after`` becomes a ``Retry-After`` header. 3xx answers get a
        ``Location`` header pointing at the requested path unless ``headers`` sets one.
        ``content_type`` overrides the body's (e.g. a 200 ``text/html`` login page).
        """
        if isinstance(body, bytes):
            payload, ctype = body, content_type or "application/octet-stream"
        elif isinstance(body, str):
            payload, ctype = body.encode(), content_type or "text/plain; charset=utf-8"
        else:
            message = body if body is not None else {"message": f"injected failure {status}"}
            payload, ctype = json.dumps(dict(message)).encode(), "application/json"
        if isinstance(retry_after, float) and retry_after.is_integer():
            retry_after = int(retry_after)
        failure = _Failure(
            status=status,
            retry_after=None if retry_after is None else str(retry_after),
            body=payload,
            content_type=ctype,
            headers=tuple((headers or {}).items()),
        )
        with self._cond:
            self._failures.extend([failure] * count)

    def partial_success_next(self, rejected: int | None = None, count: int = 1) -> None:
        """Answer the next ``count`` trace exports with OTLP ``partial_success``: the last
        ``rejected`` spans of the request (all of them when None) are refused, the rest stored."""
        with self._cond:
            self._partial.extend([rejected] * count)

    def fail_scores_next(self, status: int, count: int = 1) -> None:
        """Answer the next ``count`` score requests with ``status`` (scores not stored)."""
        with self._cond:
            self._score_failures.extend([status] * count)

    def set_delay(self, seconds: float) -> None:
        """Sleep this long before answering each trace export (0 disables)."""
        with self._cond:
            self._delay = max(0.0, float(seconds))
            self._cond.notify_all()

    def blackhole(self, enabled: bool = True) -> None:
        """Read trace exports but never answer; on disable/stop, close those sockets."""
        with self._cond:
            self._blackhole = enabled
            self._cond.notify_all()

    def hang_next(self, count: int = 1) -> None:
        """Read the next ``count`` trace exports but never answer them (later ones are answered); their
        sockets close on :meth:`reset_faults` or stop. A blackhole for some requests: one connection stuck."""
        with self._cond:
            self._hangs += count

    def hang_scores(self, enabled: bool = True) -> None:
        """Read score requests but never answer; their sockets close on disable, reset or stop."""
        with self._cond:
            self._hang_scores = enabled
            self._cond.notify_all()

    def drop_next(self, count: int = 1) -> None:
        """Close the connection of the next ``count`` trace exports without answering."""
        with self._cond:
            self._drops += count

    @property
    def max_body_bytes(self) -> int | None:
        """Answer 413 for trace exports whose raw (possibly gzipped) body is larger."""
        with self._cond:
            return self._max_body_bytes

    @max_body_bytes.setter
    def max_body_bytes(self, value: int | None) -> None:
        with self._cond:
            self._max_body_bytes = value

    def reset_faults(self) -> None:
        """Remove every injected fault (releases black-holed requests)."""
        with self._cond:
            self._failures.clear()
            self._delay = 0.0
            self._blackhole = False
            self._drops = 0
            self._hangs = 0
            self._hang_scores = False
            self._released += 1
            self._max_body_bytes = None
            self._partial.clear()
            self._score_failures.clear()
            self._cond.notify_all()

    # ------------------------------------------------------------------ request handling

    def _check_auth(self, handler: _Handler) -> str | None:
        """Return an error message, or None when the Basic credentials match."""
        if not self.require_auth:
            return None
        header = handler.headers.get("Authorization")
        if not header:
            return "No authorization header"
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return "Invalid authorization header: expected Basic auth with public and secret key"
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return "Invalid authorization header"
        expected = f"{self.public_key}:{self._secret_key}".encode()
        if not hmac.compare_digest(decoded, expected):
            return "Invalid credentials. Confirm that you've configured the correct host."
        return None

    def _record(self, request: ReceivedRequest, spans: list[ReceivedSpan] | None = None) -> None:
        with self._cond:
            self._requests.append(request)
            if spans:
                self._spans.extend(spans)
            self._cond.notify_all()

    def _handle(self, handler: _Handler, raw: bytes) -> None:
        path, _, query = handler.path.partition("?")
        if len(path) > 1:
            path = path.rstrip("/")
        method = handler.command
        headers = handler.header_dict()
        ctype = headers.get("content-type", "")

        def record(status: int | None, body: bytes = raw) -> None:
            self._record(ReceivedRequest(method, path, query, headers, raw, body, ctype, status, 0, time.time()))

        if path in TRACES_PATHS:
            if method != "POST":
                record(405)
                handler.send_json(405, {"message": "Method not allowed"})
                return
            self._handle_traces(handler, path, query, headers, raw)
            return

        routes: dict[str, tuple[str, bool]] = {
            PROJECTS_PATH: ("GET", True),
            SCORES_PATH: ("POST", True),
            LANGFUSE_METRICS_PATH: ("POST", True),
            **{p: ("GET", False) for p in HEALTH_PATHS},
        }
        if path not in routes:
            record(404)
            handler.send_json(404, {"message": f"Not found: {path}"})
            return
        allowed, needs_auth = routes[path]
        if method != allowed:
            record(405)
            handler.send_json(405, {"message": "Method not allowed"})
            return
        if needs_auth:
            error = self._check_auth(handler)
            if error is not None:
                record(401)
                handler.send_json(401, {"message": error})
                return
        payload: Any
        if path == PROJECTS_PATH:
            status, payload = 200, _PROJECTS_BODY
        elif path == SCORES_PATH:
            with self._cond:
                hang = self._hang_scores
            if hang:
                record(None)
                with self._cond:
                    self._cond.wait_for(lambda: handler.server.closed or not self._hang_scores)
                handler.drop()
                return
            with self._cond:
                injected = self._score_failures.popleft() if self._score_failures else None
            if injected is not None:
                status, payload = injected, {"message": f"injected failure {injected}"}
            else:
                status, payload = _score_answer(raw, headers)
        elif path == LANGFUSE_METRICS_PATH:
            status, payload = 200, {}  # Langfuse authenticates metrics, then discards them
        else:
            status, payload = 200, {"status": "OK", "version": "otel-basic-receiver"}
        record(status)
        handler.send_json(status, payload)

    def _hang_until_released(self, server: _Server) -> None:
        with self._cond:
            released = self._released
            self._cond.wait_for(lambda: server.closed or self._released != released)

    def _handle_traces(self, handler: _Handler, path: str, query: str, headers: dict[str, str], raw: bytes) -> None:
        server = handler.server
        ctype = headers.get("content-type", "")
        body, spans, decode_error = _decode_traces_body(raw, headers)

        def record(status: int | None, accepted: list[ReceivedSpan] | None = None) -> None:
            request = ReceivedRequest(
                method="POST",
                path=path,
                query=query,
                headers=headers,
                raw_body=raw,
                body=body,
                content_type=ctype,
                status=status,
                span_count=len(spans),
                received_at=time.time(),
                spans=tuple(spans),
            )
            self._record(request, accepted)

        # 1. network-level faults: delay, black hole, dropped connection
        with self._cond:
            delay = self._delay
        if delay > 0:
            with self._cond:
                self._cond.wait_for(lambda: server.closed, timeout=delay)
        with self._cond:
            if server.closed:
                drop_reason = "stopped"
            elif self._blackhole:
                drop_reason = "blackhole"
            elif self._hangs > 0:
                self._hangs -= 1
                drop_reason = "hang"
            elif self._drops > 0:
                self._drops -= 1
                drop_reason = "drop"
            else:
                drop_reason = ""
        if drop_reason:
            record(None)
            if drop_reason == "blackhole":
                with self._cond:
                    self._cond.wait_for(lambda: server.closed or not self._blackhole)
            elif drop_reason == "hang":
                self._hang_until_released(server)
            handler.drop()
            return

        # 2. proxy/server-level faults: body limit, queued failures
        with self._cond:
            limit = self._max_body_bytes
            failure = self._failures.popleft() if self._failures else None
            if limit is not None and len(raw) > limit and failure is not None:
                self._failures.appendleft(failure)  # the 413 happens first; keep the failure
                failure = None
        if limit is not None and len(raw) > limit:
            record(413)
            handler.send_json(413, {"message": f"Request body too large ({len(raw)} > {limit} bytes)"})
            return
        if failure is not None:
            extra = list(failure.headers)
            if failure.retry_after is not None:
                extra.append(("Retry-After", failure.retry_after))
            if 300 <= failure.status < 400 and not any(k.lower() == "location" for k, _ in extra):
                extra.append(("Location", path))
            record(failure.status)
            handler.send_body(failure.status, failure.body, failure.content_type, tuple(extra))
            return

        # 3. the Langfuse contract
        auth_error = self._check_auth(handler)
        if auth_error is not None:
            record(401)
            handler.send_json(401, {"message": auth_error})
            return
        version = headers.get("x-langfuse-ingestion-version", "").strip()
        if version.isdigit() and int(version) > MAX_SUPPORTED_INGESTION_VERSION:
            record(400)
            handler.send_json(400, {"message": f"Unsupported x-langfuse-ingestion-version {version}"})
            return
        if decode_error is not None:
            record(400)
            handler.send_json(400, {"message": decode_error})
            return

        with self._cond:
            partial = self._partial.popleft() if self._partial else -1
        refused = 0 if partial == -1 else len(spans) if partial is None else min(partial, len(spans))
        if refused:
            spans = spans[: len(spans) - refused]
        with self._cond:
            # If stop() raced us, behave like the connection died: nothing is stored.
            stopped = server.closed
            listeners = list(self._listeners)
            record(None if stopped else 200, None if stopped else spans)
        if stopped:
            handler.drop()
            return
        for listener in listeners:
            try:
                listener(list(spans))
            except Exception:
                _log.exception("receiver: span listener failed")
        if path == OTLP_TRACES_PATH and "protobuf" in ctype.lower():
            # An ExportTraceServiceResponse, which is what OTLP/HTTP clients expect (empty = all accepted).
            response = ExportTraceServiceResponse()
            if refused:
                response.partial_success.rejected_spans = refused
                response.partial_success.error_message = "injected partial success"
            handler.send_body(200, response.SerializeToString(), "application/x-protobuf")
        elif refused:
            handler.send_json(200, {"partialSuccess": {"rejectedSpans": str(refused), "errorMessage": "injected"}})
        else:
            handler.send_json(200, {})


def _score_answer(raw: bytes, headers: Mapping[str, str]) -> tuple[int, Any]:
    """202 for a JSON score (or list of scores) each with a name and a value, else 400.

    Like Langfuse, a score without a name or value is rejected; the body is kept on the
    recorded request either way.
    """
    body = raw
    if "gzip" in headers.get("content-encoding", "").lower():
        try:
            body = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            return 400, {"message": "Failed to decompress gzip body"}
    try:
        parsed = json.loads(body or b"null")
    except ValueError:
        return 400, {"message": "Invalid JSON body"}
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items or not all(isinstance(i, dict) and "name" in i and "value" in i for i in items):
        return 400, {"message": "Each score needs a name and a value"}
    return 202, {"message": "Accepted"}


def _decode_traces_body(raw: bytes, headers: Mapping[str, str]) -> tuple[bytes, list[ReceivedSpan], str | None]:
    """Gunzip and decode, returning (body, spans, error message for a 400 or None)."""
    ctype = headers.get("content-type", "").lower()
    if "application/x-protobuf" not in ctype and "application/json" not in ctype:
        return raw, [], "Invalid content type: expected application/x-protobuf or application/json"
    body = raw
    if "gzip" in headers.get("content-encoding", "").lower():
        try:
            body = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            return raw, [], f"Failed to decompress gzip body: {exc}"
    try:
        spans = decode_request(body, ctype)
    except OTLPDecodeError as exc:
        return body, [], f"Invalid OTLP trace export request: {exc}"
    return body, spans, None
