"""``python -m basic.server --workers 2``: each worker process has its own telemetry, flushes on its
own SIGTERM, and the workers share one spool directory without duplicates or losses.

As in ``test_server.py``, the batch timer and per-step flushing are off in the server, so a span can
only leave a worker through that worker's flush on the way out.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import otel_basic
from basic.samples import sample_email
from otel_basic.testing import LangfuseReceiver, ReceivedSpan

from .conftest import PYTHON, subprocess_env
from .test_server import running_server

RUNS = 20
GUNICORN_ARGS = [
    *("--worker-class", "uvicorn_worker.UvicornWorker", "--workers", "2", "--bind", "127.0.0.1:0"),
    *("--graceful-timeout", "20", "--no-control-socket"),
]
_FLUSH_LINE = re.compile(r"\[worker (\d+)\] basic\.server: telemetry flush(?:ed)? at exit(?: incomplete)?: (.*)")


def _flushes(logs: str) -> dict[int, dict[str, int]]:
    """Each worker's exit flush report: {pid: {"exported": n, "spooled": n, ...}}."""
    return {
        int(pid): {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", report)}
        for pid, report in _FLUSH_LINE.findall(logs)
    }


def _clean_exports(logs: str) -> dict[int, int]:
    """{pid: exported} of the workers whose exit flush delivered everything (nothing else counted)."""
    return {
        pid: counts["exported"]
        for pid, counts in _flushes(logs).items()
        if all(n == 0 for key, n in counts.items() if key != "exported")
    }


def _post(client: httpx.Client, workflow: str, start_event: dict[str, Any]) -> httpx.Response:
    return client.post(f"/workflows/{workflow}/run", json={"start_event": start_event})


def _run_key(span: ReceivedSpan) -> str | None:
    """The unique name (hello) or thread id (email) a run was started with, from its run span."""
    if not span.name.endswith("Workflow.run"):
        return None
    run_input = json.loads(span.attributes.get("input.value", "{}"))
    return run_input.get("name") or (run_input.get("email_data") or {}).get("thread_id")


def _traces_by_run(spans: list[ReceivedSpan]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for span in spans:
        key = _run_key(span)
        if key is not None:
            found.setdefault(key, []).append(span.trace_id)
    return found


@pytest.mark.slow
def test_two_workers_under_load_then_sigterm_trace_every_answered_run_exactly_once(tmp_path: Path) -> None:
    starts: dict[str, tuple[str, dict[str, Any]]] = {}
    for i in range(RUNS):
        if i % 3 == 0:
            email = sample_email("question" if i % 2 else "complaint")
            email["thread_id"] = f"load-{i}"
            starts[f"load-{i}"] = ("email", {"email_data": email})
        else:
            starts[f"load-{i}"] = ("hello", {"name": f"load-{i}"})
    with (
        LangfuseReceiver() as receiver,
        running_server(tmp_path, receiver, "--workers", "2") as server,
    ):
        with httpx.Client(base_url=server.url, timeout=60) as client, ThreadPoolExecutor(max_workers=8) as pool:
            futures = {key: pool.submit(_post, client, wf, start) for key, (wf, start) in starts.items()}
            responses = {key: future.result() for key, future in futures.items()}
        rc = server.stop(signal.SIGTERM)  # right after the last response
    assert rc == 0, server.logs()
    for key, response in responses.items():
        assert response.status_code == 200 and response.json()["status"] == "completed", (key, response.text)

    # Every answered run: exactly one run span (counted by WorkflowServer's run id), in the trace
    # its response named.
    traces = _traces_by_run(receiver.spans)
    assert set(traces) == set(starts), server.logs()
    run_spans = [s for s in receiver.spans if s.name.endswith("Workflow.run")]
    by_run_id = Counter(s.attributes.get("llamaindex.run_id") for s in run_spans)
    for key, response in responses.items():
        assert traces[key] == [response.headers["x-trace-id"]], key
        assert by_run_id[response.json()["run_id"]] == 1, key
    assert len(run_spans) == len(responses)
    ids = [s.span_id for s in receiver.spans]
    assert len(ids) == len(set(ids)), "a span arrived twice"

    # Each worker flushed its own spans on its own SIGTERM; together, everything that arrived.
    flushed = _clean_exports(server.logs())
    assert len(flushed) == 2, server.logs()
    assert sum(flushed.values()) == len(receiver.spans), (flushed, len(receiver.spans))


@pytest.mark.slow
def test_workers_spool_into_one_directory_and_the_next_start_replays_each_batch_once(tmp_path: Path) -> None:
    """The endpoint is down when two workers stop: both spool (same directory). The next start
    (a supervisor and two workers, three processes replaying the spool at once) sends every span
    exactly once."""
    names = [f"spooled-{i}" for i in range(12)]
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with LangfuseReceiver() as receiver:
        with (
            running_server(tmp_path / "first", receiver, "--workers", "2") as server,
            httpx.Client(base_url=server.url, timeout=60) as client,
            ThreadPoolExecutor(max_workers=6) as pool,
        ):
            answered = list(pool.map(lambda n: _post(client, "hello", {"name": n}), names))
            assert all(r.status_code == 200 for r in answered)
            receiver.stop()  # the endpoint goes away before the workers flush
            assert server.stop(signal.SIGTERM) == 0, server.logs()
        spooled = {pid: counts["spooled"] for pid, counts in _flushes(server.logs()).items()}
        assert len(spooled) == 2 and sum(spooled.values()) == 2 * len(names), server.logs()
        assert receiver.spans == []

        receiver.start()  # back, on the same port
        with running_server(tmp_path / "second", receiver, "--workers", "2") as again:
            deadline = time.monotonic() + 30
            while len(receiver.spans) < 2 * len(names) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # a duplicate would arrive now
            assert again.stop(signal.SIGTERM) == 0, again.logs()
    ids = [s.span_id for s in receiver.spans]
    assert len(ids) == len(set(ids)), "a spooled batch was sent twice"
    assert len(ids) == 2 * len(names), "a spooled batch was lost"
    assert set(_traces_by_run(receiver.spans)) == set(names)


def test_two_processes_replaying_one_spool_at_once_send_each_batch_exactly_once(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool's promise for workers that start (and replay) together, attacked directly: many
    small batches, a slow endpoint so both replayers are busy at the same time, real processes."""
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    monkeypatch.setenv("OTEL_BASIC_STEP_FLUSH", "off")
    langfuse_env.stop()  # down: everything goes to the spool
    telemetry = otel_basic.configure()
    tracer = otel_basic.get_tracer("spool-test")
    for i in range(160):
        with tracer.start_as_current_span(f"work-{i}"):
            pass
    report = otel_basic.shutdown(timeout=3)
    assert report.spooled == 160, report.summary()
    otel_basic.reset()
    del telemetry

    langfuse_env.start()
    langfuse_env.set_delay(0.05)  # 40 batches: 2 s of sending, longer than a start-up
    replayers = [
        subprocess.Popen(
            [PYTHON, "-m", "otel_basic.cli", "replay"],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in replayers]
    assert [p.returncode for p in replayers] == [0, 0], outputs
    ids = [s.span_id for s in langfuse_env.spans]
    assert len(ids) == len(set(ids)), "a batch was sent by both replayers"
    assert len(ids) == 160, "a batch was lost"
    sent = [int(m) for out in outputs for m in re.findall(r"sent\W+(\d+) (?:batch|span)", out)]
    assert len(sent) == 2 and min(sent) > 0, outputs  # both replayers took part


@pytest.mark.slow
def test_gunicorn_with_uvicorn_workers_delivers_every_run_at_sigterm(tmp_path: Path) -> None:
    """The README's gunicorn command. gunicorn's uvicorn worker ends with the default SIGTERM action
    (no exit handler runs): the app's lifespan shutdown is where each worker flushes."""
    pytest.importorskip("gunicorn")
    pytest.importorskip("uvicorn_worker")
    names = [f"gunicorn-{i}" for i in range(10)]
    err_path = tmp_path / "gunicorn.err"
    with LangfuseReceiver() as receiver:
        env = subprocess_env(**receiver.env(), OTEL_BSP_SCHEDULE_DELAY="60000", OTEL_BASIC_STEP_FLUSH="off")
        with err_path.open("wb") as err:
            proc = subprocess.Popen(
                [PYTHON, "-m", "gunicorn", "basic.server:create_app()", *GUNICORN_ARGS],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            deadline = time.monotonic() + 60
            while err_path.read_text().count("Application startup complete") < 2:
                assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.1)
            match = re.search(r"Listening at: (http://\S+)", err_path.read_text())
            assert match, err_path.read_text()
            with httpx.Client(base_url=match.group(1), timeout=60) as client, ThreadPoolExecutor(4) as pool:
                answers = pool.map(lambda n: _post(client, "hello", {"name": n}), names)
                responses = dict(zip(names, answers, strict=True))
            assert receiver.spans == [], "nothing leaves a worker before its stop (batch timer and step flush off)"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, err_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    traces = _traces_by_run(receiver.spans)
    for name, response in responses.items():
        assert response.status_code == 200, response.text
        assert traces[name] == [response.headers["x-trace-id"]], name
    ids = [s.span_id for s in receiver.spans]
    assert len(ids) == len(set(ids)) == 2 * len(names)


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, 1),
        (["--workers", "4"], {}, 4),
        ([], {"BASIC_SERVER_WORKERS": "3"}, 3),
        (["--workers", "2"], {"BASIC_SERVER_WORKERS": "5"}, 2),
    ],
)
def test_workers_come_from_the_flag_then_the_environment(
    argv: list[str], env: dict[str, str], expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from basic.server import _parse_args

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert _parse_args(argv).workers == expected


@pytest.mark.parametrize("value", ["0", "65", "two", "-1", "1.5"])
def test_a_bad_worker_count_is_a_clear_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    from basic.server import _parse_args

    with pytest.raises(SystemExit) as exc:
        _parse_args(["--workers", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--workers" in err and "expected" in err and value in err


def test_create_app_names_a_bad_grace_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from basic.server import create_app

    monkeypatch.setenv("BASIC_SERVER_GRACE", "soon")
    with pytest.raises(ValueError, match="BASIC_SERVER_GRACE: expected seconds"):
        create_app()


@pytest.mark.slow
def test_each_worker_stopped_on_its_own_flushes_its_spans_and_is_replaced(tmp_path: Path) -> None:
    """A rolling restart: SIGTERM one worker, then the other. Each flushes what it made (nothing
    else can send it: batch timer and step flush are off) and the supervisor starts a replacement."""
    started = re.compile(r"Started server process \[(\d+)\]")
    close = {"connection": "close"}  # a new connection per request: either worker may take it
    with LangfuseReceiver() as receiver, running_server(tmp_path, receiver, "--workers", "2") as server:
        with httpx.Client(base_url=server.url, timeout=60, headers=close) as client:
            first = {n: _post(client, "hello", {"name": n}) for n in (f"before-{i}" for i in range(8))}
            originals = [int(pid) for pid in started.findall(server.logs())]
            assert len(originals) == 2, server.logs()
            for count, victim in enumerate(originals, start=3):
                os.kill(victim, signal.SIGTERM)  # one worker, not the server
                deadline = time.monotonic() + 30
                while len(started.findall(server.logs())) < count:  # its replacement serves
                    assert time.monotonic() < deadline, server.logs()
                    time.sleep(0.1)
            flushed = _clean_exports(server.logs())
            assert set(flushed) == set(originals), server.logs()
            assert sum(flushed.values()) == len(receiver.spans) == 2 * len(first), "each sent its own spans"
            second = {n: _post(client, "hello", {"name": n}) for n in (f"after-{i}" for i in range(8))}
        assert server.stop(signal.SIGTERM) == 0, server.logs()
    traces = _traces_by_run(receiver.spans)
    for name, response in {**first, **second}.items():
        assert response.status_code == 200 and traces[name] == [response.headers["x-trace-id"]], name
    flushed = _clean_exports(server.logs())
    assert len(flushed) == 4 and sum(flushed.values()) == len(receiver.spans)
