"""Nothing lost: exit paths x endpoint behaviours in real child processes, SIGKILL, bursts."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import otel_basic
from otel_basic.pipeline import build_spool
from otel_basic.settings import load_settings
from otel_basic.testing import LangfuseReceiver

from .conftest import PYTHON
from .fault_matrix import CHILD, ENDPOINTS, EXIT_PATHS, _env, run_matrix, table


@pytest.mark.parametrize("exit_path", EXIT_PATHS)
def test_every_endpoint_behaviour_delivers_or_keeps_every_span(exit_path: str) -> None:
    cells = run_matrix([exit_path], ENDPOINTS, workers=3)
    failed = [c for c in cells if not c.ok]
    assert not failed, table(cells) + "\n" + "\n".join(map(str, failed))


@pytest.mark.parametrize("down", [False, True], ids=["endpoint up", "endpoint down until restart"])
def test_sigkill_mid_run_loses_at_most_the_step_in_progress(down: bool, tmp_path: Path) -> None:
    receiver = LangfuseReceiver().start()
    try:
        env = _env(receiver, tmp_path / "spool")
        if down:
            receiver.stop()
        proc = subprocess.Popen(
            [PYTHON, str(CHILD), "sigkill", str(tmp_path / "spans"), str(tmp_path / "flushes")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == "READY":
                    break
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if down:
            receiver.start()
            # a restart of the app replays the spool in the background at configure()
            restart = subprocess.run(
                [PYTHON, "-c", "import otel_basic, time; otel_basic.configure(); time.sleep(3)"],
                env=env,
                timeout=60,
            )
            assert restart.returncode == 0
        receiver.wait_for_spans(21, timeout=10)
        names = set(receiver.span_names())
        finished_step = {f"work-1-{i}" for i in range(20)} | {"Matrix.one"}
        assert finished_step <= names, sorted(finished_step - names)
        assert len({s.span_id for s in receiver.spans}) == len(receiver.spans), "duplicates"
    finally:
        receiver.stop()


def _burst(n: int) -> None:
    tracer = otel_basic.get_tracer("burst")
    for i in range(n):
        tracer.start_span("burst", attributes={"i": i}).end()


def test_burst_of_20k_spans_with_default_settings_loses_nothing(langfuse_env: LangfuseReceiver) -> None:
    otel_basic.configure()
    _burst(20_000)
    report = otel_basic.flush(timeout=60)
    assert report, report.summary()
    assert len(langfuse_env.spans) == 20_000
    assert report.dropped == 0


def test_burst_into_a_small_queue_spills_to_the_spool_and_replays(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "2048")
    # the endpoint is slower than the producer on any machine (at 0.05 s a slow machine's burst was drained
    # as fast as it came, and nothing overflowed)
    langfuse_env.set_delay(0.5)
    tel = otel_basic.configure()
    with caplog.at_level(logging.WARNING, logger="otel_basic"):
        _burst(20_000)
        report = otel_basic.flush(timeout=60)
    assert tel.pipeline is not None and tel.pipeline.spool is not None
    spool = tel.pipeline.spool
    assert spool.spooled_total() > 0, "the queue should have overflowed into the spool"
    assert report.dropped == 0
    # every span is either at the endpoint (some replayed already after successful exports) or on disk
    assert len({s.span_id for s in langfuse_env.spans}) + spool.state().spans == 20_000
    assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 1, "one summarising warning"
    langfuse_env.set_delay(0)
    otel_basic.reset()
    otel_basic.configure()  # the next start replays the spool
    langfuse_env.wait_for_spans(20_000, timeout=60)
    assert len({s.span_id for s in langfuse_env.spans}) == 20_000


def test_burst_with_drop_policy_counts_every_dropped_span(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "2048")
    monkeypatch.setenv("OTEL_BASIC_OVERFLOW", "drop")
    # slow enough that four workers (4 x 512 spans per 0.5 s) cannot keep up with the burst on any machine:
    # at 0.05 s, a slow machine's burst was drained as fast as it came and nothing was dropped
    langfuse_env.set_delay(0.5)
    otel_basic.configure()
    processor = otel_basic.current().processor  # type: ignore[union-attr]
    assert processor is not None
    _burst(20_000)
    otel_basic.flush(timeout=60)
    dropped = processor.ledger.totals.dropped
    assert dropped > 0
    assert len(langfuse_env.spans) + dropped == 20_000


def test_401_spans_are_kept_aside_with_the_reason(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    langfuse_env.fail_next(401, count=1000)
    otel_basic.configure()
    _burst(5)
    report = otel_basic.flush(timeout=5)
    assert not report and "401" in (report.error or "")
    spool = build_spool(load_settings())
    assert spool is not None
    state = spool.state()
    assert state.rejected_spans == 5 and state.spans == 0
    assert any("401" in reason for reason in state.rejected_reasons)


def test_413_single_huge_span_is_truncated_not_dropped(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BASIC_MAX_ATTRIBUTE_CHARS", str(10_000_000))  # let it reach the wire
    monkeypatch.setenv("OTEL_BASIC_MASK", "off")
    langfuse_env.max_body_bytes = 100_000
    otel_basic.configure()
    import base64
    import os

    blob = base64.b64encode(os.urandom(600_000)).decode()
    with otel_basic.get_tracer("t").start_as_current_span("huge", attributes={"input.value": blob}):
        pass
    _burst(3)
    report = otel_basic.flush(timeout=10)
    assert report, report.summary()
    spans = {s.name: s for s in langfuse_env.spans}
    assert "truncated by otel-basic after HTTP 413" in spans["huge"].attributes["input.value"]
    assert len(langfuse_env.spans) == 4


def test_matrix_table_script_runs() -> None:
    # the README's table comes from `python -m tests.fault_matrix`; keep its entry point working
    out = subprocess.run(
        [sys.executable, "-c", "import tests.fault_matrix as m; print(m.table([]))"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0 and "exit path" in out.stdout


def test_after_an_outage_the_next_flush_sends_the_spool(langfuse_env: LangfuseReceiver) -> None:
    otel_basic.configure()
    langfuse_env.stop()
    _burst(7)
    report = otel_basic.flush(timeout=3)
    assert not report and report.spooled == 7
    langfuse_env.start()
    assert otel_basic.flush(timeout=5), "nothing new, but the spool goes out with this flush"
    assert len({s.span_id for s in langfuse_env.spans}) == 7


def test_after_an_outage_an_idle_app_drains_the_spool(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BASIC_SPOOL_RETRY_SECONDS", "0.2")
    otel_basic.configure()
    langfuse_env.stop()
    _burst(5)
    assert otel_basic.flush(timeout=3).spooled == 5
    langfuse_env.start()  # the app creates no span and calls no flush from here on
    langfuse_env.wait_for_spans(5, timeout=10)
    assert len({s.span_id for s in langfuse_env.spans}) == 5
