"""End to end through a real collector: app (OTel SDK) -> rotel-agent -> Langfuse-compatible receiver.

Why real processes: what this path promises (the collector adds the Langfuse credentials, retries
an outage, never duplicates; the app's flush means "accepted by the collector") only shows up
over real sockets with the real agent. Every process is started by a fixture and stopped in its
``finally``; every port is ephemeral. Skipped only when the rotel binary is not installed.

App side: :class:`OtelBasicApp` is our layer (``otel_basic.configure(endpoint=..., protocol=...)``,
``otel_basic.flush``); :class:`SdkApp` is a plain OTel SDK pipeline (TracerProvider +
BatchSpanProcessor + OTLP exporter, with a counting exporter and a deadline-bounded flush), i.e.
what any other OTel user runs. The headline cases run both; tests only use ``emit``, ``flush``
(truthy/counts/duration, the FlushReport shape) and ``close``.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Tracer

import otel_basic
from otel_basic.collector import RotelCollector, RotelNotFoundError, find_rotel_agent, free_port
from otel_basic.settings import LANGFUSE_TRACES_PATH
from otel_basic.testing.receiver import LangfuseReceiver

try:
    find_rotel_agent()
except RotelNotFoundError as _exc:
    pytestmark = pytest.mark.skip(reason=f"rotel-agent binary not available: {_exc}")

Protocol = Literal["http/protobuf", "grpc"]
AppKind = Literal["otel_basic", "sdk"]
PK, SK = "pk-lf-test", "sk-lf-test"
PROTOCOLS: list[Protocol] = ["http/protobuf", "grpc"]


# ---------------------------------------------------------------------- app side


def _emit(tracer: Tracer, names: Sequence[str]) -> set[str]:
    """One trace: the first name is the root, the others its children. Returns {trace id}."""
    with tracer.start_as_current_span(names[0]) as root:
        for name in names[1:]:
            with tracer.start_as_current_span(name, attributes={"test.name": name}):
                pass
    return {format(root.get_span_context().trace_id, "032x")}


class OtelBasicApp:
    """The application configured through otel_basic with an OTLP endpoint and NO headers."""

    def __init__(self, endpoint: str, protocol: Protocol, export_timeout: float = 2.0) -> None:
        otel_basic.reset()
        telemetry = otel_basic.configure(
            endpoint=endpoint,
            protocol=protocol,
            export_timeout=export_timeout,
            spool_dir=None,  # failures must show in the report, not go to a user cache dir
            install_signal_handlers=False,  # pytest owns the signals
        )
        assert telemetry.enabled, telemetry.settings.reason
        assert not telemetry.settings.headers, "the app must not send credentials to the collector"
        self.tracer = otel_basic.get_tracer("tests.collector_e2e")

    def emit(self, names: Sequence[str]) -> set[str]:
        return _emit(self.tracer, names)

    def flush(self, timeout: float) -> otel_basic.FlushReport:
        return otel_basic.flush(timeout=timeout)

    def close(self) -> None:
        otel_basic.reset()


@dataclass(frozen=True)
class Report:
    """The part of otel_basic.FlushReport these tests rely on, for the plain SDK app."""

    exported: int
    failed: int
    pending: int
    duration: float

    def __bool__(self) -> bool:
        return self.failed == 0 and self.pending == 0


class _CountingExporter(SpanExporter):
    """Counts what the wrapped exporter really delivered (force_flush's True means nothing)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exported = 0
        self.failed = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class SdkApp:
    """A plain OTel SDK app (no otel_basic), configured with an OTLP endpoint and NO headers."""

    def __init__(self, endpoint: str, protocol: Protocol, export_timeout: float = 2.0) -> None:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

            inner: SpanExporter = Grpc(endpoint=endpoint.removeprefix("http://"), insecure=True, timeout=export_timeout)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

            inner = Http(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=export_timeout)
        self.exporter = _CountingExporter(inner)
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "collector-e2e"}), shutdown_on_exit=False
        )
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter, schedule_delay_millis=60_000))
        self.tracer = self.provider.get_tracer("tests.collector_e2e")
        self.ended = 0

    def emit(self, names: Sequence[str]) -> set[str]:
        self.ended += len(names)
        return _emit(self.tracer, names)

    def flush(self, timeout: float) -> Report:
        start = time.monotonic()
        worker = threading.Thread(target=self.provider.force_flush, daemon=True)
        worker.start()
        worker.join(timeout)
        done = self.exporter.exported + self.exporter.failed
        return Report(self.exporter.exported, self.exporter.failed, max(0, self.ended - done), time.monotonic() - start)

    def close(self) -> None:
        self.provider.shutdown()


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_*/LANGFUSE_* from the outside: the app gets only an endpoint (no credentials, no
    headers); the collector adds them."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "LANGFUSE_")):
            monkeypatch.delenv(name)


@pytest.fixture
def receiver() -> Iterator[LangfuseReceiver]:
    rx = LangfuseReceiver(public_key=PK, secret_key=SK)
    rx.start()
    try:
        yield rx
    finally:
        rx.stop()


@pytest.fixture
def collector(receiver: LangfuseReceiver) -> Iterator[RotelCollector]:
    # Fast retries so an outage test takes ~1 s, not rotel's default 5 s first backoff.
    agent = RotelCollector.for_langfuse(
        receiver.base_url,
        PK,
        SK,
        retry_initial_backoff=0.2,
        retry_max_backoff=0.5,
        retry_max_elapsed_time=60,
        batch_timeout=0.05,
        stop_grace=5.0,
    )
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
        print("--- rotel-agent output ---\n" + agent.output())  # shown by pytest on failure


App = OtelBasicApp | SdkApp
MakeApp = Callable[..., App]


@pytest.fixture
def make_app(request: pytest.FixtureRequest) -> Iterator[MakeApp]:
    """``make_app(endpoint, protocol, export_timeout=2.0)``; kind from indirect param (default ours)."""
    kind: AppKind = getattr(request, "param", "otel_basic")
    created: list[App] = []

    def make(endpoint: str, protocol: Protocol, export_timeout: float = 2.0) -> App:
        app: App = (OtelBasicApp if kind == "otel_basic" else SdkApp)(endpoint, protocol, export_timeout)
        created.append(app)
        return app

    try:
        yield make
    finally:
        for app in created:
            app.close()


def _endpoint(collector: RotelCollector, protocol: Protocol) -> str:
    return collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def _assert_each_once(receiver: LangfuseReceiver, names: Sequence[str], trace_ids: set[str]) -> None:
    receiver.wait_for_spans(len(names), timeout=10)
    time.sleep(0.5)  # a duplicate would arrive within rotel's batch timeout + a retry
    spans = receiver.spans
    assert collections.Counter(s.span_id for s in spans).most_common(1)[0][1] == 1, "a span arrived twice"
    assert sorted(s.name for s in spans) == sorted(names)
    assert {s.trace_id for s in spans} == trace_ids


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------------- tests


@pytest.mark.parametrize("make_app", ["otel_basic", "sdk"], indirect=True)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_span_arrives_once_with_langfuse_headers_added_by_the_collector(
    receiver: LangfuseReceiver, collector: RotelCollector, make_app: MakeApp, protocol: Protocol
) -> None:
    app = make_app(_endpoint(collector, protocol), protocol)
    names = _names(f"once-{protocol}", 12)
    trace_ids = app.emit(names[:6]) | app.emit(names[6:])

    report = app.flush(timeout=5)
    assert report, report
    assert report.exported == len(names)
    assert report.duration < 1.0, "the collector accepts at once; Langfuse latency is not on this path"

    _assert_each_once(receiver, names, trace_ids)
    requests = receiver.trace_requests
    assert requests
    for request in requests:
        assert request.path == LANGFUSE_TRACES_PATH
        assert request.status == 200
        assert request.headers["authorization"] == receiver.auth_header
        assert request.headers["x-langfuse-ingestion-version"] == "4"
        assert request.headers.get("content-encoding") == "gzip"
        assert "rotel" in request.headers.get("user-agent", "").lower(), "not sent by the collector"


def test_receiver_down_then_up_spans_still_arrive_once(
    receiver: LangfuseReceiver, collector: RotelCollector, make_app: MakeApp
) -> None:
    app = make_app(collector.http_endpoint, "http/protobuf")
    receiver.stop()
    names = _names("outage", 8)
    trace_ids = app.emit(names)

    report = app.flush(timeout=5)
    assert report, "the collector accepted the spans although Langfuse is down"
    # ...which is all a flush on this path can promise: rotel now holds them in memory.
    _wait_for(lambda: "will retry" in collector.output(), 5, "rotel to retry the export")
    assert receiver.spans == []

    receiver.start()  # same port
    _assert_each_once(receiver, names, trace_ids)


def test_retryable_status_is_retried_without_duplicates(
    receiver: LangfuseReceiver, collector: RotelCollector, make_app: MakeApp
) -> None:
    receiver.fail_next(503, count=2)
    app = make_app(collector.http_endpoint, "http/protobuf")
    names = _names("busy", 5)
    trace_ids = app.emit(names)
    assert app.flush(timeout=5)
    _assert_each_once(receiver, names, trace_ids)
    assert [r.status for r in receiver.trace_requests] == [503, 503, 200]


def test_rejected_credentials_are_dropped_by_the_collector_not_retried(
    receiver: LangfuseReceiver, collector: RotelCollector, make_app: MakeApp
) -> None:
    """Documents the limit: a 401 (bad keys) loses the batch, while the app's flush said OK."""
    receiver.fail_next(401, count=1)
    app = make_app(collector.http_endpoint, "http/protobuf")
    app.emit(_names("denied", 3))
    assert app.flush(timeout=5)
    receiver.wait_for_requests(1, timeout=5)
    time.sleep(1.0)  # longer than the fixture's retry backoff: a retry would have come
    assert [r.status for r in receiver.trace_requests] == [401]
    assert receiver.spans == []
    assert "dropping data" in collector.output() and "Http(401" in collector.output()


@pytest.mark.parametrize("make_app", ["otel_basic", "sdk"], indirect=True)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_collector_not_running_flush_reports_failure_within_deadline(make_app: MakeApp, protocol: Protocol) -> None:
    port = free_port()  # nothing listens here
    app = make_app(f"http://127.0.0.1:{port}", protocol, export_timeout=2.0)
    app.emit(_names(f"nobody-{protocol}", 3))
    deadline = 3.0
    report = app.flush(timeout=deadline)
    assert not report, report
    assert report.exported == 0
    assert report.failed + report.pending == 3
    assert report.duration <= deadline + 0.5


def test_secret_is_not_on_the_agent_command_line(receiver: LangfuseReceiver, collector: RotelCollector) -> None:
    pid = collector.pid
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        pytest.skip("no /proc on this platform")
    argv = cmdline.read_bytes().decode().split("\0")
    token = receiver.auth_header.split()[1]
    assert SK not in " ".join(argv) and token not in " ".join(argv)
    assert "--otlp-exporter-endpoint" in argv


def test_collector_start_stop_and_ports(receiver: LangfuseReceiver) -> None:
    """Context manager, explicit ports, clean SIGTERM exit, and a clear error on a taken port."""
    http_port, grpc_port = free_port(), free_port()
    while grpc_port == http_port:
        grpc_port = free_port()
    with RotelCollector.for_langfuse(receiver.base_url, PK, SK, http_port=http_port, grpc_port=grpc_port) as agent:
        assert agent.running and agent.http_endpoint == f"http://127.0.0.1:{http_port}"
        assert agent.grpc_endpoint == f"http://127.0.0.1:{grpc_port}"
        pid = agent.pid
        assert pid is not None
        clash = RotelCollector.for_langfuse(receiver.base_url, PK, SK, http_port=http_port, grpc_port=free_port())
        try:
            with pytest.raises(Exception, match="Address already in use") as info:
                clash.start()
            assert "exited with code" in str(info.value)
        finally:
            clash.stop()
        started = time.monotonic()
    assert not agent.running
    assert time.monotonic() - started < 2.0, "an idle agent stops at once on SIGTERM"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_email_workflow_run_arrives_once_through_the_collector(
    receiver: LangfuseReceiver, collector: RotelCollector, protocol: Protocol
) -> None:
    """The real app: a whole email workflow run goes app -> rotel -> Langfuse-compatible receiver."""
    from basic.email_workflow import email_workflow
    from basic.samples import sample_email

    otel_basic.reset()
    tel = otel_basic.configure(
        endpoint=_endpoint(collector, protocol), protocol=protocol, install_signal_handlers=False
    )
    assert tel.enabled and not tel.settings.headers
    await otel_basic.run_with_flush(email_workflow, email_data=sample_email("urgent"))
    processor = tel.processor
    assert processor is not None
    created = processor.ledger.totals.created
    assert processor.ledger.totals.delivered == created
    spans = receiver.wait_for_spans(created, timeout=15)
    time.sleep(0.5)  # a duplicate would show up here
    assert len(receiver.spans) == created == len({s.span_id for s in spans})
    names = {s.name for s in receiver.spans}
    assert {"EmailWorkflow.run", "EmailWorkflow.triage_email", "EmailWorkflow.send_results"} <= names
    assert all(r.headers["authorization"] == receiver.auth_header for r in receiver.trace_requests)
    otel_basic.reset()


def test_collector_not_running_spans_are_spooled_then_replayed(receiver: LangfuseReceiver, tmp_path: Path) -> None:
    """Not silently dropped: with the collector down the spans wait in the spool; once it is up,
    the next start replays them through it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    otel_basic.reset()
    tel = otel_basic.configure(endpoint=endpoint, spool_dir=tmp_path / "spool", install_signal_handlers=False)
    _emit(otel_basic.get_tracer("t"), _names("later", 4))
    report = otel_basic.flush(timeout=3)
    assert not report and report.spooled == 4
    otel_basic.reset()
    with RotelCollector.for_langfuse(receiver.base_url, PK, SK, http_port=port, retry_initial_backoff=0.2):
        otel_basic.configure(endpoint=endpoint, spool_dir=tmp_path / "spool", install_signal_handlers=False)
        receiver.wait_for_spans(4, timeout=15)
    assert sorted(s.name for s in receiver.spans) == sorted(_names("later", 4))
    assert tel.settings.endpoint.startswith(endpoint)
    otel_basic.reset()
