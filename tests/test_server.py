"""``python -m basic.server`` as a real process: requests over HTTP, then SIGTERM / SIGINT.

The child exports to a test receiver with the batch timer at 60 s and (mostly) per-step flushing
off, so the only way a span can arrive is the flush on the way out: every span of every request
that got a response must be there, exactly once, and the process must exit 0.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

import otel_basic
from basic.email_workflow import email_workflow
from basic.samples import sample_email
from basic.workflow import workflow as hello_workflow
from otel_basic.testing import LangfuseReceiver, ReceivedSpan

from .conftest import PYTHON, subprocess_env

# basic.server configures telemetry when imported: the unit tests import it inside the test, after the
# autouse fixture cleaned the environment (an import at collection time would pin a disabled config).
READY_PREFIX = "basic.server listening on "  # the startup line is part of the CLI's contract
EMAIL_STEPS = ["triage_email", "execute_plan", "verify_response", "send_results"]
STOP_TIMEOUT = 30.0
_FLUSHED = re.compile(r"telemetry flushed at exit: exported=(\d+) rejected=0 dropped=0 spooled=0 pending=0 in_spool=0")


# ------------------------------------------------------------------------------------- helpers


class ServerProcess:
    """The server in a child process; stdout/stderr go to files (no pipe can fill up and block it)."""

    def __init__(self, tmp_path: Path, receiver: LangfuseReceiver, *args: str, **env: str) -> None:
        self.out_path, self.err_path = tmp_path / "server.out", tmp_path / "server.err"
        child_env = subprocess_env(
            **receiver.env(),
            OTEL_BSP_SCHEDULE_DELAY="60000",  # the batch timer never fires during a test
            OTEL_BASIC_STEP_FLUSH="off",  # ... and steps do not send either: only the stop can
            **env,
        )
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "basic.server", "--port", "0", *args], env=child_env, stdout=out, stderr=err
            )
        self.url = self._wait_ready(timeout=30.0)

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.out_path.read_text().splitlines():
                if line.startswith(READY_PREFIX):
                    return line[len(READY_PREFIX) :].strip()
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"server did not start (exit {self.proc.poll()}):\n{self.logs()}")

    def logs(self) -> str:
        return self.out_path.read_text() + self.err_path.read_text()

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit {STOP_TIMEOUT:g}s after {sig.name}:\n{self.logs()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def flushed_at_exit(self) -> int:
        """``exported`` of the final flush's report, which must be a clean one."""
        match = _FLUSHED.search(self.err_path.read_text())
        assert match, f"no clean final flush report in the logs:\n{self.logs()}"
        return int(match.group(1))


@contextmanager
def running_server(tmp_path: Path, receiver: LangfuseReceiver, *args: str, **env: str) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path, receiver, *args, **env)
    try:
        yield server
    finally:
        server.kill()
    assert "Traceback" not in server.logs(), server.logs()


@contextmanager
def slow_callback_server(
    delay: float, per_thread: dict[str, float] | None = None
) -> Iterator[tuple[str, threading.Semaphore]]:
    """An HTTP endpoint for the email workflow's callback that answers 200 after ``delay`` seconds
    (``per_thread[thread_id]`` for the result of that email thread).

    Yields its URL and a semaphore released when a POST arrives (the run is in its last step)."""
    arrived = threading.Semaphore(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            result = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            arrived.release()
            time.sleep((per_thread or {}).get(result.get("thread_id"), delay))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", arrived
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _email(category: str, thread_id: str) -> dict[str, Any]:
    email = sample_email(category)
    email["thread_id"] = thread_id
    return email


def _run_traces(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    """Traces whose root is a workflow run span (log-record traces are left out)."""
    traces: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)
    return {
        trace_id: trace
        for trace_id, trace in traces.items()
        if any(s.parent_span_id is None and s.name.endswith("Workflow.run") for s in trace)
    }


def _root(trace: list[ReceivedSpan]) -> ReceivedSpan:
    roots = [s for s in trace if s.parent_span_id is None]
    assert len(roots) == 1, [s.name for s in roots]
    return roots[0]


def _trace_of_run(traces: dict[str, list[ReceivedSpan]], key: str, value: str) -> list[ReceivedSpan]:
    """The one trace whose run input has ``key == value`` (hello: name; email: email_data.thread_id)."""
    found = []
    for trace in traces.values():
        run_input = json.loads(_root(trace).attributes.get("input.value", "{}"))
        got = run_input.get("email_data", {}).get(key) if key == "thread_id" else run_input.get(key)
        if got == value:
            found.append(trace)
    assert len(found) == 1, f"expected one trace for {key}={value!r}, found {len(found)}"
    return found[0]


def _check_trace(trace: list[ReceivedSpan], expected: Counter[str]) -> None:
    names = Counter(s.name for s in trace)
    assert names == expected, f"spans differ from an in-process run: {names - expected} / {expected - names}"
    ids = {s.span_id for s in trace}
    assert len(ids) == len(trace), "a span arrived twice"
    assert all(s.parent_span_id is None or s.parent_span_id in ids for s in trace), "orphan span"
    assert all(s.status_code != "ERROR" for s in trace), [(s.name, s.status_message) for s in trace]


def _in_process_shapes(
    receiver: LangfuseReceiver, emails: dict[str, dict[str, Any]], callback: str | None = None
) -> dict[str, Counter[str]]:
    """Span names per trace of the same runs done in this process (``telemetry`` fixture)."""

    async def run_all() -> None:
        await otel_basic.run_with_flush(hello_workflow, name="reference")
        for email in emails.values():
            await otel_basic.run_with_flush(email_workflow, email_data=email, callback=callback)

    asyncio.run(run_all())
    traces = _run_traces(receiver.spans)
    shapes = {"hello": Counter(s.name for s in _trace_of_run(traces, "name", "reference"))}
    for category, email in emails.items():
        shapes[category] = Counter(s.name for s in _trace_of_run(traces, "thread_id", email["thread_id"]))
    receiver.clear()
    return shapes


def _post_run(client: httpx.Client, workflow: str, start_event: dict[str, Any]) -> httpx.Response:
    return client.post(f"/workflows/{workflow}/run", json={"start_event": start_event})


# --------------------------------------------------------------------------------- process tests


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "loop"),
    [(signal.SIGTERM, "auto"), (signal.SIGINT, "auto"), (signal.SIGTERM, "asyncio")],
    ids=["SIGTERM", "SIGINT", "SIGTERM-asyncio-loop"],
)
def test_stop_right_after_the_last_response_delivers_every_span(
    sig: signal.Signals, loop: str, tmp_path: Path, telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    """On the loop uvicorn picks (uvloop, installed with the dev extras: the server ran on asyncio's loop
    whatever was installed, unlike ``uvicorn`` itself) and on asyncio's (``--loop asyncio``)."""
    categories = ["question", "meeting_request"]
    shapes = _in_process_shapes(langfuse_env, {c: _email(c, f"ref-{c}") for c in categories})
    with LangfuseReceiver() as receiver, running_server(tmp_path, receiver, "--loop", loop) as server:
        assert f"event loop: {'uvloop' if loop == 'auto' else loop}" in server.err_path.read_text()
        with httpx.Client(base_url=server.url, timeout=20) as client:
            assert client.get("/health").json() == {"status": "healthy"}
            names = [f"n{i}" for i in range(5)]
            emails = {f"t{i}": _email(categories[i % 2], f"t{i}") for i in range(6)}
            for name in names[:2]:
                assert _post_run(client, "hello", {"name": name}).json()["status"] == "completed"
            with ThreadPoolExecutor(max_workers=8) as pool:  # the rest at once
                futures = [pool.submit(_post_run, client, "hello", {"name": n}) for n in names[2:]]
                futures += [pool.submit(_post_run, client, "email", {"email_data": e}) for e in emails.values()]
                responses = [f.result() for f in futures]
            rc = server.stop(sig)  # immediately after the last response
        assert rc == 0, server.logs()
        for response in responses:
            assert response.status_code == 200 and response.json()["status"] == "completed", response.text
        traces = _run_traces(receiver.spans)
        assert len(traces) == len(names) + len(emails), server.logs()
        for name in names:
            _check_trace(_trace_of_run(traces, "name", name), shapes["hello"])
        for thread_id, email in emails.items():
            trace = _trace_of_run(traces, "thread_id", thread_id)
            _check_trace(trace, shapes[categories[int(thread_id[1:]) % 2]])
            steps = sorted(s.name for s in trace if s.name.startswith("EmailWorkflow."))
            assert steps == sorted(f"EmailWorkflow.{s}" for s in [*EMAIL_STEPS, "run"])
            assert email["subject"] in _root(trace).attributes["input.value"]
        # Nothing left the process before the stop: the final flush delivered all of it.
        assert server.flushed_at_exit() == len(receiver.spans), server.logs()


@pytest.mark.slow
def test_sigterm_mid_request_lets_in_flight_runs_finish_within_the_grace_period(
    tmp_path: Path, telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    with slow_callback_server(delay=0) as (fast_callback, _):
        shape = _in_process_shapes(langfuse_env, {"q": _email("question", "ref")}, fast_callback)["q"]
    assert shape["deliver_result"] == 1
    with (
        LangfuseReceiver() as receiver,
        # The /run-nowait run outlives the /run request: only the lifespan's wait can save it.
        slow_callback_server(delay=1.0, per_thread={"no-wait": 2.5}) as (callback_url, arrived),
        running_server(tmp_path, receiver, "--grace", "15") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        start = {"email_data": _email("question", "in-flight"), "callback": callback_url}
        pending = pool.submit(_post_run, client, "email", start)
        background = {"email_data": _email("question", "no-wait"), "callback": callback_url}
        nowait = client.post("/workflows/email/run-nowait", json={"start_event": background})
        assert nowait.status_code == 200, nowait.text
        for _ in range(2):  # both runs are in their last step, waiting for the slow callback
            assert arrived.acquire(timeout=20), server.logs()
        stopped_at = time.monotonic()
        rc = server.stop(signal.SIGTERM)
        response = pending.result(timeout=STOP_TIMEOUT)
        took = time.monotonic() - stopped_at
    assert rc == 0, server.logs()
    assert took < 14, f"stop took {took:.1f}s: it waited for the whole grace period"
    assert response.status_code == 200, response.text
    result = response.json()["result"]["value"]["result"]
    assert result["delivery"]["status"] == "delivered"
    traces = _run_traces(receiver.spans)
    assert len(traces) == 2
    for thread_id in ("in-flight", "no-wait"):  # the /run-nowait run was not cancelled either
        trace = _trace_of_run(traces, "thread_id", thread_id)
        _check_trace(trace, shape)
        assert _root(trace).status_code != "ERROR"
    assert server.flushed_at_exit() == len(receiver.spans)


@pytest.mark.slow
@pytest.mark.parametrize("cut_short_by", ["grace-period-over", "second-SIGINT"])
def test_bad_email_is_400_and_a_run_cut_short_by_the_stop_is_503_with_spans_delivered(
    cut_short_by: str, tmp_path: Path, langfuse_receiver: LangfuseReceiver
) -> None:
    grace = "0.5" if cut_short_by == "grace-period-over" else "15"
    with (
        slow_callback_server(delay=5.0) as (callback_url, arrived),
        running_server(tmp_path, langfuse_receiver, "--grace", grace) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        bad = _post_run(client, "email", {"email_data": {"sender": "not-an-address", "subject": "x"}})
        assert bad.status_code == 400, bad.text
        assert set(bad.json()["problems"]) == {"sender", "body"}
        assert "not-an-address" not in bad.text, "the input is not echoed"
        for body in (
            {"kwargs": {"email_data": "a string"}},
            {"start_event": {"email_data": _email("question", "x"), "callback": "ftp://nope"}},
            {},
        ):
            assert client.post("/workflows/email/run", json=body).status_code == 400, body
        assert client.post("/workflows/email/run-nowait", json={"kwargs": {}}).status_code == 400
        assert client.get("/health").json() == {"status": "healthy"}
        assert _post_run(client, "hello", {"name": "still"}).json()["status"] == "completed"

        start = {"email_data": _email("question", "too-slow"), "callback": callback_url}
        pending = pool.submit(_post_run, client, "email", start)
        assert arrived.acquire(timeout=20), server.logs()
        if cut_short_by == "second-SIGINT":  # Ctrl-C twice: uvicorn's "force quit"
            server.proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
        rc = server.stop(signal.SIGINT if cut_short_by == "second-SIGINT" else signal.SIGTERM)
        response = pending.result(timeout=STOP_TIMEOUT)
    assert rc == 0, server.logs()
    assert response.status_code == 503, response.text
    assert "shutting down" in response.json()["detail"]
    traces = _run_traces(langfuse_receiver.spans)
    assert len(traces) == 2, "bad input starts no run; the hello run and the cancelled one are there"
    trace = _trace_of_run(traces, "thread_id", "too-slow")
    assert _root(trace).status_code == "ERROR", "the cancelled run is delivered, marked as failed"
    assert {f"EmailWorkflow.{s}" for s in EMAIL_STEPS} <= {s.name for s in trace}


# ------------------------------------------------------------------------------------ unit tests


def test_cli_reads_flags_then_env_then_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from basic.server import _parse_args

    args = _parse_args([])
    assert (args.host, args.port, args.grace, args.log_level) == ("127.0.0.1", 8080, 10.0, "info")
    monkeypatch.setenv("BASIC_SERVER_HOST", "0.0.0.0")
    monkeypatch.setenv("BASIC_SERVER_PORT", "9000")
    monkeypatch.setenv("BASIC_SERVER_GRACE", "2.5")
    args = _parse_args([])
    assert (args.host, args.port, args.grace) == ("0.0.0.0", 9000, 2.5)
    args = _parse_args(["--host", "::1", "--port", "0", "--grace", "0"])
    assert (args.host, args.port, args.grace) == ("::1", 0, 0.0)
    assert args.loop == "auto"
    monkeypatch.setenv("BASIC_SERVER_LOOP", "AsyncIO")
    assert _parse_args([]).loop == "asyncio"
    assert _parse_args(["--loop", "uvloop"]).loop == "uvloop"


@pytest.mark.parametrize(
    "argv", [["--port", "70000"], ["--port", "http"], ["--grace", "-1"], ["--grace", "nan"], ["--loop", "trio"]]
)
def test_cli_rejects_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from basic.server import _parse_args

    with pytest.raises(SystemExit) as exc:
        _parse_args(argv)
    assert exc.value.code == 2
    assert "expected" in capsys.readouterr().err


def test_bad_port_in_env_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from basic.server import _parse_args

    monkeypatch.setenv("BASIC_SERVER_PORT", "eighty")
    with pytest.raises(SystemExit):
        _parse_args([])
    assert "expected a port number, got 'eighty'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (b'{"start_event": {"email_data": {"a": 1}}}', {"email_data": {"a": 1}}),
        (b'{"kwargs": {"email_data": 1}}', {"email_data": 1}),
        (b'{"start_event": "{\\"callback\\": \\"x\\"}"}', {"callback": "x"}),
        (b'{"start_event": {"type": "EmailStartEvent", "value": {"email_data": 2}}}', {"email_data": 2}),
        (b'{"start_event": null}', {}),
        (b"", {}),
        (b"not json", None),
        (b"[1]", None),
        (b'{"start_event": 3}', None),
    ],
)
def test_start_fields_are_read_like_workflow_server_reads_them(body: bytes, fields: dict[str, Any] | None) -> None:
    from basic.server import _start_fields

    assert _start_fields(body) == fields


async def test_bad_input_rejected_in_process_without_starting_a_run() -> None:
    from basic.email_workflow import EmailWorkflow
    from basic.server import build_server
    from basic.workflow import HelloWorkflow

    # Fresh instances: WorkflowServer cannot rename the module's ones once this process ran them.
    # No lifespan here: a request that reached WorkflowServer would fail differently.
    app = build_server(hello=HelloWorkflow(), email=EmailWorkflow()).app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/workflows/email/run", json={"start_event": {"email_data": {}}})
        assert response.status_code == 400
        assert response.json()["detail"].startswith("invalid email_data:")
        other = await client.post("/workflows/nope/run", json={})
        assert other.status_code == 404
        # hello's typed start event is validated by WorkflowServer itself, also with a 400
        long_name = await client.post("/workflows/hello/run", json={"start_event": {"name": "x" * 201}})
        assert long_name.status_code == 400 and "start_event" in long_name.json()["detail"]
