"""The one road, attacked from the outside: randomized fault sequences against a real receiver.

Each sequence switches the endpoint between behaviours (up, down, 401, 413, 429, 500, OTLP partial
success, a 200 HTML page, a black hole), overflows a tiny queue, flushes (sync and async), lets
per-step style kicks run in the background, and shuts down/reconfigures mid-way (the exit drain).
Every span carries planted personal values. For every sequence:

* no flush is truthy while a span the process made is undelivered (beyond what earlier reports
  counted as dropped or rejected);
* after the endpoint comes back and the spool (and the rejected area) is replayed, every span is
  received exactly once, or was reported dropped/rejected;
* no planted value is on the wire or on disk, at any time;
* the endpoint never receives a span the test did not make.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.trace import Status, StatusCode

import otel_basic
from otel_basic.pipeline import build_road
from otel_basic.settings import load_settings
from otel_basic.testing import LangfuseReceiver

PLANTED = ("ada.lovelace@example.com", "4111 1111 1111 1111", "grace.hopper@navy.example.org")
FAULTS = ("up", "down", "401", "413", "429", "500", "partial", "html200", "hang")
ACTIONS = ("flush", "aflush", "background", "shutdown")
SPAN_NAME = "road-test"


def _spans(tracer_name: str, count: int, made: set[str]) -> None:
    tracer = otel_basic.get_tracer(tracer_name)
    for i in range(count):
        with tracer.start_as_current_span(SPAN_NAME) as span:
            span.set_attribute("input.value", f"mail from {PLANTED[0]} paying with {PLANTED[1]} #{i}")
            span.add_event("log", {"message": f"reply to {PLANTED[2]}"})
            span.set_status(Status(StatusCode.ERROR, f"{PLANTED[0]}: refund failed"))
            made.add(format(span.get_span_context().span_id, "016x"))


def _set_fault(receiver: LangfuseReceiver, fault: str) -> None:
    receiver.reset_faults()
    if not receiver.running:
        receiver.start()
    if fault == "down":
        receiver.stop()
    elif fault in ("401", "429", "500"):
        receiver.fail_next(int(fault), count=10_000, retry_after=0 if fault == "429" else None)
    elif fault == "413":
        receiver.max_body_bytes = 200
    elif fault == "partial":
        receiver.partial_success_next(1, count=10_000)
    elif fault == "html200":
        receiver.fail_next(200, count=10_000, body="<html>Sign in</html>", content_type="text/html")
    elif fault == "hang":
        receiver.blackhole(True)


def _disk_bytes(root: Path) -> list[bytes]:
    """Every file's bytes; one a worker replays (and deletes) meanwhile went to the receiver instead."""
    found: list[bytes] = []
    for path in root.rglob("*") if root.exists() else ():
        try:
            found.append(path.read_bytes())
        except (FileNotFoundError, IsADirectoryError):
            continue
    return found


def _assert_nothing_planted(receiver: LangfuseReceiver, spool_root: Path) -> None:
    blobs = [r.body for r in receiver.requests] + _disk_bytes(spool_root)
    for blob in blobs:
        for value in PLANTED:
            assert value.encode() not in blob, f"planted {value!r} found on the wire or on disk"


SEEDS = [(seed, False) for seed in range(int(os.environ.get("ROAD_SEEDS", "6")))] + [(100, True), (101, True)]


@pytest.mark.parametrize(("seed", "host_instruments_http"), SEEDS)
def test_random_fault_sequences_keep_every_promise(
    seed: int,
    host_instruments_http: bool,
    langfuse_env: LangfuseReceiver,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # With a host that traces httpx and requests, our sends must stay invisible (no POST spans).
    instrumentors = [HTTPXClientInstrumentor(), RequestsInstrumentor()] if host_instruments_http else []
    for instrumentor in instrumentors:
        instrumentor.instrument()
    try:
        _random_sequence(seed, langfuse_env, monkeypatch, tmp_path)
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()


def _random_sequence(
    seed: int, langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    spool_root = tmp_path / "spool"
    monkeypatch.setenv("OTEL_BASIC_SPOOL_DIR", str(spool_root))
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", str(rng.choice([8, 16, 512])))
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "8")
    monkeypatch.setenv("OTEL_BASIC_SPOOL_RETRY_SECONDS", "0.3")
    receiver = langfuse_env
    made: set[str] = set()
    lost_budget = 0  # spans earlier reports said were rejected or dropped
    otel_basic.configure()

    def check(report: otel_basic.FlushReport, when: str) -> None:
        nonlocal lost_budget
        lost_budget += report.rejected + report.dropped
        if report:
            received = {s.span_id for s in receiver.spans}
            missing = made - received
            assert len(missing) <= lost_budget, f"{when}: truthy flush with {len(missing)} spans undelivered"

    steps: list[str] = []
    for step in range(6):
        fault = rng.choice(FAULTS)
        _set_fault(receiver, fault)
        _spans(f"seq{seed}", rng.choice([3, 12, 30]), made)
        action = rng.choice(ACTIONS)
        when = f"seed {seed} step {step} fault {fault} action {action}"
        steps.append(f"{fault}/{action}")
        if action == "flush":
            check(otel_basic.flush(timeout=1.0), when)
        elif action == "aflush":
            check(asyncio.run(otel_basic.aflush(timeout=1.0)), when)
        elif action == "background":
            telemetry = otel_basic.current()
            assert telemetry is not None
            telemetry.kick()
            time.sleep(0.3)
        else:
            check(otel_basic.shutdown(timeout=rng.choice([0.0, 0.3])), when)
            otel_basic.configure()
        _assert_nothing_planted(receiver, spool_root)

    # The endpoint comes back; spans kept aside as rejected are put back (`otel-basic replay --rejected`).
    _set_fault(receiver, "up")
    telemetry = otel_basic.current()
    assert telemetry is not None and telemetry.pipeline is not None and telemetry.pipeline.spool is not None
    telemetry.pipeline.spool.requeue_rejected()
    check(otel_basic.flush(timeout=10), f"seed {seed} final")  # may still report earlier failures
    report = otel_basic.flush(timeout=10)
    check(report, f"seed {seed} final, nothing new")
    assert report, report.summary()

    received = [s.span_id for s in receiver.spans]
    assert len(received) == len(set(received)), f"a span was received twice: {steps}"
    assert {s.name for s in receiver.spans} <= {SPAN_NAME}, "a span we did not make reached the endpoint"
    missing = made - set(received)
    assert len(missing) <= lost_budget, f"{len(missing)} spans lost, only {lost_budget} reported"
    _assert_nothing_planted(receiver, spool_root)


def test_background_failures_are_reported_by_the_next_flush(langfuse_env: LangfuseReceiver) -> None:
    otel_basic.configure()
    langfuse_env.stop()
    made: set[str] = set()
    _spans("bg", 6, made)
    telemetry = otel_basic.current()
    assert telemetry is not None
    telemetry.kick()  # a per-step export fails in the background, before any flush
    time.sleep(0.5)
    report = otel_basic.flush(timeout=1)
    assert not report and report.in_spool == 6 and report.spooled == 6, report.summary()
    assert not otel_basic.flush(timeout=0.5), "still waiting in the spool: never truthy"
    langfuse_env.start()
    assert otel_basic.flush(timeout=5)
    assert {s.span_id for s in langfuse_env.spans} == made


def test_401_is_reported_even_when_it_happened_in_the_background(
    langfuse_env: LangfuseReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    langfuse_env.fail_next(401, count=100)
    otel_basic.configure()
    _spans("auth", 5, set())
    telemetry = otel_basic.current()
    assert telemetry is not None
    with caplog.at_level("WARNING", logger="otel_basic"):
        telemetry.kick()
        time.sleep(0.5)
        report = otel_basic.flush(timeout=2)
    assert not report and report.rejected == 5 and "401" in (report.error or "")
    assert sum("401" in r.getMessage() for r in caplog.records) == 1, "logged once when it happened"


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(lambda r: r.partial_success_next(2), id="partial-success"),
        pytest.param(
            lambda r: r.fail_next(200, 100, body="<html>SSO</html>", content_type="text/html"), id="html-200"
        ),
    ],
)
def test_a_200_that_is_not_a_success_is_a_failure(langfuse_env: LangfuseReceiver, fault: object) -> None:
    otel_basic.configure()
    fault(langfuse_env)  # type: ignore[operator]
    _spans("p", 5, set())
    report = otel_basic.flush(timeout=2)
    assert not report, report.summary()
    assert "partial success" in (report.error or "") or "not an OTLP answer" in (report.error or "")


def test_replay_splits_on_413(langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "200")
    otel_basic.configure()
    langfuse_env.stop()
    made: set[str] = set()
    _spans("big", 200, made)
    otel_basic.shutdown(timeout=1)  # everything in one spooled batch
    langfuse_env.start()
    langfuse_env.max_body_bytes = 8_000  # each span fits alone, the batch does not
    road = build_road(load_settings())
    try:
        tally = road.replay()
    finally:
        road.close()
    assert tally.delivered == 200 and tally.rejected == 0, tally
    assert {s.span_id for s in langfuse_env.spans} == made


def test_an_unusable_spool_path_is_a_clear_failure_not_a_crash(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("OTEL_BASIC_SPOOL_DIR", str(blocker))
    otel_basic.configure()
    langfuse_env.stop()
    _spans("nospool", 3, set())
    report = otel_basic.flush(timeout=1)
    assert not report and report.dropped == 3 and "spool" in (report.error or ""), report.summary()
    langfuse_env.start()
    _spans("nospool", 2, set())
    assert otel_basic.flush(timeout=3), "the next flush is fine again (nothing from before is hidden in it)"


def test_spans_evicted_by_the_spool_cap_count_as_dropped(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BASIC_SPOOL_MAX_MB", "1")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    monkeypatch.setenv("OTEL_BASIC_MAX_ATTRIBUTE_CHARS", "100000")
    otel_basic.configure()
    langfuse_env.stop()
    tracer = otel_basic.get_tracer("evict")
    for _ in range(40):  # 50 KB each: 2 MB in all, twice the cap
        tracer.start_span("evict", attributes={"blob": os.urandom(25_000).hex()}).end()
    report = otel_basic.flush(timeout=2)
    assert report.dropped > 0 and "evicted" in (report.error or ""), report.summary()
    assert report.spooled == 40 and report.in_spool + report.dropped == 40, report.summary()


def test_doctor_is_not_healthy_behind_a_login_page(langfuse_env: LangfuseReceiver) -> None:
    from otel_basic.doctor import run_doctor

    langfuse_env.fail_next(200, count=100, body="<html>Sign in</html>", content_type="text/html")
    report = run_doctor(langfuse_env.env())
    canary = next(c for c in report.checks if c.name == "canary")
    assert canary.ok is False and "not an OTLP answer" in canary.detail, canary


def test_a_process_that_masks_more_never_replays_batches_masked_less(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BASIC_MASK", "off")
    otel_basic.configure()
    langfuse_env.stop()
    _spans("weak", 3, set())
    otel_basic.shutdown(timeout=0.5)  # spooled with masking off: raw values on disk, by the user's choice
    langfuse_env.start()
    monkeypatch.setenv("OTEL_BASIC_MASK", "detectors")  # the next start promises masking
    otel_basic.configure()
    report = otel_basic.flush(timeout=5)
    assert not report and report.rejected == 3 and "OTEL_BASIC_MASK=off" in (report.error or ""), report.summary()
    _assert_nothing_planted(langfuse_env, Path(os.environ["OTEL_BASIC_SPOOL_DIR"]) / "__none__")
    assert langfuse_env.spans == []
    monkeypatch.setenv("OTEL_BASIC_MASK", "hide")  # masking more than the batches: they are fine to send
    otel_basic.configure()
    _spans("strong", 2, set())
    assert otel_basic.flush(timeout=5)


def test_a_spool_directory_others_can_write_to_is_never_replayed(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    monkeypatch.setenv("OTEL_BASIC_SPOOL_DIR", str(shared))
    otel_basic.configure()
    langfuse_env.stop()
    _spans("mine", 2, set())
    otel_basic.shutdown(timeout=0.5)
    for directory in [shared, *[p for p in shared.rglob("*") if p.is_dir()]]:
        directory.chmod(0o777)  # another local user could now drop batches in here
    langfuse_env.start()
    otel_basic.configure()
    report = otel_basic.flush(timeout=3)
    assert langfuse_env.spans == [], "replayed from a directory others can write to"
    assert not report or report.in_spool == 0
