"""transport_options against real servers on 127.0.0.1: a private CA, TLS, mTLS, a proxy, gRPC.

Everything is generated here (a CA, a server and a client certificate) and served for real: what
the functions return must make a real handshake succeed, and the same client without them fail.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_basic.pipeline import build_transport
from otel_basic.road import Deadline, SendResult
from otel_basic.settings import Settings, load_settings
from otel_basic.transport_options import grpc_channel, grpc_target, httpx_client_options

# --- certificates ---------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Certificate, Any] | None, *, ca: bool = False
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("otel-basic test CA", ca_key, None, ca=True)
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out = {}
    for who in ("server", "client"):
        key = _key()
        cert = _cert(f"{who}.test", key, (ca, ca_key))
        (d / f"{who}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[who] = (d / f"{who}.pem", _write_key(key, d / f"{who}.key"))
    return Pki(d / "ca.pem", out["server"][0], out["server"][1], out["client"][0], out["client"][1])


# --- servers --------------------------------------------------------------------------------


class _Ok(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b"ok"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST


@pytest.fixture
def https_server(pki: Pki, request: pytest.FixtureRequest) -> Iterator[str]:
    """An HTTPS server with the private CA's certificate; ``indirect=True`` with True = mTLS."""
    mtls = getattr(request, "param", False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if mtls:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def plain_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _Listener:
    """A socket on 127.0.0.1 that hands each connection to ``_handle`` in a thread of its own."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def _start(self) -> None:
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()


class Proxy(_Listener):
    """A forward proxy on 127.0.0.1: CONNECT tunnels and absolute-URI requests, each recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.url = f"http://127.0.0.1:{self.port}"
        self._start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode()
            method, target, _ = line.split(" ", 2)
            self.seen.append(f"{method} {target}")
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)))
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                rest = b""
            else:  # absolute URI: forward as is (the origin server ignores the scheme/host part)
                parts = httpx.URL(target)
                upstream = socket.create_connection((parts.host, parts.port or 80))
                rest = head.replace(target.encode(), parts.raw_path, 1)
            with upstream:
                if rest:
                    upstream.sendall(rest)
                _pipe(conn, upstream)



def _pipe(a: socket.socket, b: socket.socket) -> None:
    while True:
        ready, _, _ = select.select([a, b], [], [], 5)
        if not ready:
            return
        for s in ready:
            data = s.recv(65536)
            if not data:
                return
            (b if s is a else a).sendall(data)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    p = Proxy()
    yield p
    p.close()


def _settings(env: dict[str, str], endpoint: str) -> Settings:
    return load_settings({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint, "OTEL_BASIC_SPOOL_DIR": "off", **env})


def _post(settings: Settings) -> int:
    with httpx.Client(**httpx_client_options(settings)) as client:
        return client.post(settings.endpoint, content=b"x", timeout=5).status_code


# --- HTTP: trust and mTLS -------------------------------------------------------------------


def test_private_ca_from_the_otel_certificate_variable(pki: Pki, https_server: str) -> None:
    with pytest.raises(httpx.ConnectError):  # the default trust store does not know our CA
        _post(_settings({}, https_server))
    assert _post(_settings({"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.ca)}, https_server)) == 200
    assert _post(_settings({"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": str(pki.ca)}, https_server)) == 200


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
def test_ca_bundle_variables_of_other_python_clients_are_honoured(
    pki: Pki, https_server: str, variable: str
) -> None:
    assert _post(_settings({variable: str(pki.ca)}, https_server)) == 200
    with pytest.raises(httpx.ConnectError):  # unless the user opts out of the environment
        _post(_settings({variable: str(pki.ca), "OTEL_BASIC_TRUST_ENV": "false"}, https_server))


@pytest.mark.parametrize("https_server", [True], indirect=True)
def test_mutual_tls(pki: Pki, https_server: str) -> None:
    ca = {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.ca)}
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        _post(_settings(ca, https_server))  # the server wants a client certificate
    mtls = {
        **ca,
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(pki.client_cert),
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(pki.client_key),
    }
    assert _post(_settings(mtls, https_server)) == 200


# --- HTTP: proxies --------------------------------------------------------------------------


def test_http_proxy_is_used_and_no_proxy_bypasses_it(
    plain_server: str, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "")
    settings = _settings(dict(HTTP_PROXY=proxy.url), plain_server)
    assert _post(settings) == 200
    assert proxy.seen and proxy.seen[-1].startswith("POST http://127.0.0.1:")
    count = len(proxy.seen)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # the usual NO_PROXY: direct
    assert _post(_settings(dict(HTTP_PROXY=proxy.url, NO_PROXY="127.0.0.1,localhost"), plain_server)) == 200
    assert len(proxy.seen) == count
    monkeypatch.setenv("NO_PROXY", "")
    assert _post(_settings(dict(HTTP_PROXY=proxy.url, OTEL_BASIC_TRUST_ENV="false"), plain_server)) == 200
    assert len(proxy.seen) == count  # opted out: direct


def test_https_goes_through_a_connect_proxy_with_the_private_ca(
    pki: Pki, https_server: str, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    env = {"HTTPS_PROXY": proxy.url, "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.ca)}
    assert _post(_settings(env, https_server)) == 200
    assert any(s.startswith("CONNECT 127.0.0.1:") for s in proxy.seen)


def test_a_change_of_proxy_variables_changes_the_settings() -> None:
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example"}
    assert load_settings(base) != load_settings({**base, "HTTPS_PROXY": "http://proxy:3128"})
    secret = load_settings({**base, "HTTPS_PROXY": "http://user:hunter2-secret@proxy:3128"})
    assert "hunter2-secret" not in repr(secret) and "hunter2-secret" not in str(secret.describe())


# --- gRPC -----------------------------------------------------------------------------------


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    def Export(self, request: Any, context: Any) -> Any:
        self.calls += 1
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def grpc_server(pki: Pki, request: pytest.FixtureRequest) -> Iterator[tuple[int, _TraceService]]:
    """param: "plain", "tls" or "mtls"."""
    mode = getattr(request, "param", "plain")
    service = _TraceService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    if mode == "plain":
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        creds = grpc.ssl_server_credentials(
            [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
            root_certificates=pki.ca.read_bytes() if mode == "mtls" else None,
            require_client_auth=mode == "mtls",
        )
        port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    yield port, service
    server.stop(0)


def _export(settings: Settings) -> None:
    channel = grpc_channel(settings)
    try:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
        stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=5)
    finally:
        channel.close()


def _grpc_settings(endpoint: str, **env: str) -> Settings:
    return load_settings(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_BASIC_SPOOL_DIR": "off",
         **env}
    )


def test_grpc_scheme_less_endpoint_plaintext_with_insecure(grpc_server: tuple[int, _TraceService]) -> None:
    port, service = grpc_server
    settings = _grpc_settings(f"127.0.0.1:{port}", OTEL_EXPORTER_OTLP_INSECURE="true")
    assert grpc_target(settings) == (f"127.0.0.1:{port}", False)
    _export(settings)
    _export(_grpc_settings(f"http://127.0.0.1:{port}"))
    assert service.calls == 2


class _CountingRelay(_Listener):
    """A TCP relay to a local port that counts the bytes the client sent: what gRPC put on the wire."""

    def __init__(self, target_port: int) -> None:
        super().__init__()
        self.target_port = target_port
        self.sent = 0
        self._start()

    def _handle(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        threading.Thread(target=self._pump, args=(upstream, conn, False), daemon=True).start()
        self._pump(conn, upstream, True)

    def _pump(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if count:
                    self.sent += len(data)
                sink.sendall(data)


@pytest.mark.parametrize(("chars", "compressed"), [(3_000, False), (12_000, True)])
def test_grpc_compresses_only_requests_of_8_kib_or_more(
    grpc_server: tuple[int, _TraceService], chars: int, compressed: bool
) -> None:
    """As over HTTP: the channel's gzip was applied to every request, small per-step ones included."""
    port, service = grpc_server
    relay = _CountingRelay(port)
    settings = _grpc_settings(f"http://127.0.0.1:{relay.port}", OTEL_EXPORTER_OTLP_COMPRESSION="gzip")
    assert settings.compression == "gzip"
    transport = build_transport(settings)
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(name="s", trace_id=b"\1" * 16, span_id=b"\2" * 8)
    span.attributes.add(key="input.value").value.string_value = "lorem ipsum dolor sit amet " * (chars // 27)
    try:
        assert transport.send(request, Deadline(time.monotonic() + 5)).kind == "delivered"
    finally:
        transport.close()
        relay.close()
    assert service.calls == 1
    if compressed:
        assert relay.sent < chars // 4, relay.sent  # lorem ipsum compresses ~20-fold
    else:
        assert relay.sent > chars, relay.sent


@pytest.mark.parametrize("grpc_server", ["tls"], indirect=True)
def test_grpc_scheme_less_endpoint_is_tls_by_default_with_the_private_ca(
    pki: Pki, grpc_server: tuple[int, _TraceService]
) -> None:
    port, service = grpc_server
    settings = _grpc_settings(f"localhost:{port}", OTEL_EXPORTER_OTLP_CERTIFICATE=str(pki.ca))
    assert grpc_target(settings) == (f"localhost:{port}", True)
    _export(settings)
    assert service.calls == 1
    with pytest.raises(grpc.RpcError):  # without the CA the handshake fails
        _export(_grpc_settings(f"localhost:{port}", OTEL_BASIC_TRUST_ENV="false"))


@pytest.mark.parametrize("grpc_server", ["mtls"], indirect=True)
def test_grpc_mutual_tls(pki: Pki, grpc_server: tuple[int, _TraceService]) -> None:
    port, service = grpc_server
    ca = {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.ca)}
    with pytest.raises(grpc.RpcError):
        _export(_grpc_settings(f"https://localhost:{port}", **ca))
    _export(
        _grpc_settings(
            f"https://localhost:{port}",
            **ca,
            OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE=str(pki.client_cert),
            OTEL_EXPORTER_OTLP_CLIENT_KEY=str(pki.client_key),
        )
    )
    assert service.calls == 1


# --- the export transport itself (its own keep-alive connection when no proxy applies) ------


def _export_http(settings: Settings, timeout: float = 5.0) -> SendResult:
    transport = build_transport(settings, timeout=timeout)
    try:
        return transport.send(ExportTraceServiceRequest(), Deadline(time.monotonic() + timeout))
    finally:
        transport.close()


@pytest.mark.parametrize("https_server", [False, True], indirect=True)
def test_the_export_transport_speaks_tls_and_mtls_with_the_private_ca(pki: Pki, https_server: str) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.ca),
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(pki.client_cert),
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(pki.client_key),
    }
    assert _export_http(_settings(env, https_server)).status == 200  # "ok" is no OTLP answer, but it arrived
    untrusted = _export_http(_settings({}, https_server), timeout=1.0)
    assert untrusted.status is None and "SSL" in (untrusted.reason or ""), untrusted


def test_the_export_transport_uses_the_proxy_unless_no_proxy_says_direct(
    plain_server: str, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "")
    assert _export_http(_settings({"HTTP_PROXY": proxy.url}, plain_server)).status == 200
    assert proxy.seen and proxy.seen[-1].startswith("POST http://127.0.0.1:")
    count = len(proxy.seen)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    env = {"HTTP_PROXY": proxy.url, "NO_PROXY": "localhost,127.0.0.1"}
    assert _export_http(_settings(env, plain_server)).status == 200
    assert len(proxy.seen) == count


class _KeepAlive(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, an empty 200 to every POST; subclasses change one thing (``before_answer``)."""

    protocol_version = "HTTP/1.1"
    seen = 0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def before_answer(self) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).seen += 1
        self.before_answer()
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A plain HTTP server with ``handler`` on 127.0.0.1; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _ClosesSilently(_KeepAlive):
    """Promises keep-alive (HTTP/1.1, no Connection: close), then closes the socket after answering."""

    def before_answer(self) -> None:
        self.close_connection = True


def test_a_kept_alive_connection_the_server_closed_is_replaced_without_a_duplicate() -> None:
    with _serving(_ClosesSilently) as url:
        transport = build_transport(_settings({}, url), timeout=5)
        for _ in range(5):
            time.sleep(0.05)  # the server's close has arrived before the next request
            assert transport.send(ExportTraceServiceRequest(), Deadline(time.monotonic() + 5)).kind == "delivered"
        transport.close()
        assert _ClosesSilently.seen == 5


def test_an_endpoint_that_never_answers_costs_one_timeout_not_a_hang() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts connections (the kernel does) and never reads or answers
    try:
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        transport = build_transport(_settings({}, endpoint), timeout=0.5)
        started = time.monotonic()
        result = transport.send(ExportTraceServiceRequest(), Deadline(time.monotonic() + 0.5))
        transport.close()
        assert result.kind == "retryable" and time.monotonic() - started < 2.0, result
    finally:
        listener.close()


class _SlowAfterFirst(_KeepAlive):
    """Keep-alive; answers the first request at once and every later one after 2 s."""

    def before_answer(self) -> None:
        if type(self).seen > 1:
            time.sleep(2.0)


def test_a_slow_answer_on_a_kept_alive_connection_costs_one_timeout_not_two() -> None:
    """The kernel's receive timeout reads as an empty answer, like a stale connection's; it must not
    be retried as one (that doubled a flush's deadline against a slow endpoint)."""
    with _serving(_SlowAfterFirst) as url:
        transport = build_transport(_settings({}, url), timeout=0.8)
        assert transport.send(ExportTraceServiceRequest(), Deadline(time.monotonic() + 5)).kind == "delivered"
        started = time.monotonic()
        result = transport.send(ExportTraceServiceRequest(), Deadline(time.monotonic() + 0.8))
        took = time.monotonic() - started
        transport.close()
        assert result.kind == "retryable" and took < 1.45, (result, took)  # two timeouts: 1.6 s


class _RawServer(_Listener):
    """A raw-socket server for one behaviour: ``behave(conn)`` answers each request."""

    def __init__(self, behave: Any) -> None:
        super().__init__()
        self.requests: list[bytes] = []
        self.behave = behave
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"
        self._start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lengths = [h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")]
            length = int(lengths[0]) if lengths else 0
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append(head)
            with contextlib.suppress(OSError):
                self.behave(conn)



@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n", b"HTTP/1.1 200 OK\r"],
    ids=["status-line", "one-header", "half-line"],
)
def test_an_answer_that_stalls_before_its_end_is_not_a_success(answer: bytes) -> None:
    server = _RawServer(lambda conn: (conn.sendall(answer), time.sleep(5)))
    try:
        result = _export_http(_settings({}, server.url), timeout=1.0)
        assert result.kind == "retryable", result  # the kernel's timeout is a timeout, not the end of a 200
    finally:
        server.close()


def test_a_200_whose_content_length_is_not_a_number_is_not_a_success() -> None:
    """http.client reads such a length as "to the close": the empty answer counted as a delivery."""
    server = _RawServer(lambda conn: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n"))
    try:
        result = _export_http(_settings({}, server.url), timeout=1.0)
        assert result.kind == "retryable", result
    finally:
        server.close()


def test_an_answer_trickled_byte_by_byte_cannot_outlast_the_deadline() -> None:
    def trickle(conn: socket.socket) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100:
            conn.sendall(bytes([byte]))
            time.sleep(0.1)

    server = _RawServer(trickle)
    try:
        started = time.monotonic()
        result = _export_http(_settings({}, server.url), timeout=1.0)
        assert result.kind == "retryable" and time.monotonic() - started < 2.5, result
    finally:
        server.close()


def test_credentials_in_the_endpoint_url_are_sent_as_basic_auth() -> None:
    def ok(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    server = _RawServer(ok)
    try:
        endpoint = server.url.replace("http://", "http://alice:s3cr%40t@")
        assert _export_http(_settings({}, endpoint)).kind == "delivered"
        expected = b"Basic " + base64.b64encode(b"alice:s3cr@t")
        assert any(b"\r\nAuthorization: " + expected in h for h in server.requests), server.requests
    finally:
        server.close()
