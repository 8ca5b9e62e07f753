"""Scores reach Langfuse's /api/public/scores exactly once, or the next flush says they did not.

Scores no longer go through the Langfuse client's consumer thread (see otel_basic.score_sender):
they ride on the export worker after a delivered span batch, and every flush sends the rest. These
tests attack that path through the public API against the real test receiver: scores that leave
without any flush, failing score requests in random order, refusals, secrets in failure text.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

import otel_basic
from otel_basic.testing import LangfuseReceiver


def _score_in_span(name: str, value: float | bool | str = 1.0) -> bool:
    with otel_basic.get_tracer("test.scores").start_as_current_span("scored"):
        return otel_basic.score_current_trace(name, value, comment="c")


def _wait_for_scores(receiver: LangfuseReceiver, n: int, timeout: float = 10.0) -> list[dict[str, object]]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len(receiver.scores) >= n:
            return receiver.scores
        time.sleep(0.02)
    return receiver.scores


def test_a_score_leaves_with_the_next_export_without_any_flush(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    assert _score_in_span("background", True)
    otel_basic.get_tracer("test.scores").start_span("kick").end()
    telemetry.kick()  # what a step's end does: the export worker sends the span, then the score
    scores = _wait_for_scores(langfuse_env, 1)  # with that export, or within half a second of the last
    assert [s["name"] for s in scores] == ["background"]
    assert scores[0]["dataType"] == "BOOLEAN" and scores[0]["value"] == 1.0 and scores[0]["comment"] == "c"
    trace_ids = {span.trace_id for span in langfuse_env.spans if span.name == "scored"}
    assert scores[0]["traceId"] in trace_ids  # on the run's trace, as Langfuse joins them


def test_scores_of_many_exports_share_requests_and_the_last_leaves_while_the_app_is_idle(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    """A score request after every export cost more CPU than the exports (issue 14): scores ride on at
    most one export per half second, and the primary worker's idle wake sends what the last export left."""
    for i in range(30):  # a busy app: a step's span (with a score) and a kick every 20 ms
        assert _score_in_span(f"s{i}")
        telemetry.kick()
        time.sleep(0.02)
    scores = _wait_for_scores(langfuse_env, 30, timeout=5.0)  # no flush: the idle wake sends the rest
    assert sorted(str(s["name"]) for s in scores) == sorted(f"s{i}" for i in range(30))
    score_requests = [r for r in langfuse_env.requests if r.path == "/api/public/scores"]
    exports = langfuse_env.trace_requests
    assert len(exports) >= 10, "the spans still leave a linger after each kick"
    assert len(score_requests) <= 4, [len(score_requests), len(exports)]


def test_a_flush_is_false_while_a_score_waits_and_true_once_it_arrived(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    langfuse_env.fail_scores_next(503, count=100)  # the worker's background attempts fail too
    assert _score_in_span("waits")
    report = otel_basic.flush(timeout=2)
    assert not report and report.error is not None and "1 still queued" in report.error, report
    langfuse_env.reset_faults()
    report = otel_basic.flush(timeout=5)
    assert report, report
    assert [s["name"] for s in langfuse_env.scores] == ["waits"]


def test_a_refused_score_is_dropped_counted_and_named_without_secrets(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    langfuse_env.fail_scores_next(400, count=100)
    assert _score_in_span("refused")
    report = otel_basic.flush(timeout=2)
    assert not report and report.error is not None
    assert "1 scores dropped" in report.error and "HTTP 400" in report.error, report
    secret = telemetry.settings.langfuse_secret_key
    assert secret and secret not in report.error and secret not in repr(telemetry.scores)
    langfuse_env.reset_faults()
    assert otel_basic.flush(timeout=2)  # reported once: the next flush starts clean
    assert langfuse_env.scores == []


@pytest.mark.parametrize("seed", range(4))
def test_random_score_faults_never_lose_or_repeat_a_score_silently(
    seed: int, telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    """Created = received + reported dropped; no id twice; a true flush leaves nothing queued."""
    rng = random.Random(seed)
    created: list[str] = []
    dropped = 0
    for round_ in range(6):
        for _ in range(rng.randint(0, 4)):
            langfuse_env.fail_scores_next(rng.choice([500, 503, 429, 400, 408]))
        for i in range(rng.randint(1, 5)):
            name = f"s{round_}-{i}"
            assert _score_in_span(name, rng.random())
            created.append(name)
        if rng.random() < 0.5:
            telemetry.kick()
            time.sleep(rng.choice([0.0, 0.02, 0.1]))
        report = otel_basic.flush(timeout=3)
        if report.error and "scores dropped" in report.error:
            dropped += int(report.error.split(" scores dropped")[0].rsplit(" ", 1)[-1])
        if report:
            assert telemetry.scores is not None and telemetry.scores.queued() == 0
    langfuse_env.reset_faults()
    final = otel_basic.flush(timeout=5)
    if final.error and "scores dropped" in final.error:
        dropped += int(final.error.split(" scores dropped")[0].rsplit(" ", 1)[-1])
    received = [str(s["name"]) for s in langfuse_env.scores]
    ids = [s["id"] for s in langfuse_env.scores]
    assert len(ids) == len(set(ids)), "a score was sent twice"
    assert set(received) <= set(created)
    assert len(received) + dropped == len(created), (received, dropped, created, final)



def test_a_score_that_is_not_a_finite_number_is_refused_at_once(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    """NaN and infinities are not JSON: one would make Langfuse refuse the whole request."""
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert not _score_in_span("bad", bad)
    assert _score_in_span("good", 0.5)
    assert otel_basic.flush(timeout=5)
    assert [s["name"] for s in langfuse_env.scores] == ["good"]
    raw = [r.body for r in langfuse_env.requests if r.path == "/api/public/scores"]
    assert raw and all(b"NaN" not in body and b"Infinity" not in body for body in raw)


def test_a_flush_retries_scores_within_its_deadline(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    """Two 503s in a row (a blip at exit) do not lose a score the flush has time to retry."""
    assert _score_in_span("blip")
    langfuse_env.fail_scores_next(503, count=2)
    report = otel_basic.flush(timeout=5)
    assert report, report
    assert [s["name"] for s in langfuse_env.scores] == ["blip"]


def test_the_score_sender_never_shows_credentials_of_its_url(monkeypatch: pytest.MonkeyPatch) -> None:
    with LangfuseReceiver() as receiver:
        for key, value in receiver.env().items():
            monkeypatch.setenv(key, value)
        url = receiver.base_url.replace("http://", "http://user:urlpassw0rd@")
        telemetry = otel_basic.configure(langfuse_base_url=url)
        try:
            assert telemetry.scores is not None
            assert "urlpassw0rd" not in repr(telemetry.scores) and "urlpassw0rd" not in repr(telemetry)
        finally:
            otel_basic.reset()


def test_the_score_queue_is_bounded_oldest_dropped_counted_newest_delivered(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    """An endpoint that refuses scores for a while must not grow the queue without bound: past 10,000
    queued, the oldest go, the next flush says how many, and the newest 10,000 arrive once each."""
    langfuse_env.fail_scores_next(503, count=1_000_000)  # background attempts fail while scores pile up
    extra = 25
    with otel_basic.get_tracer("test.scores").start_as_current_span("scored"):
        for i in range(10_000 + extra):
            assert otel_basic.score_current_trace(f"s{i}", float(i))
    assert telemetry.scores is not None and telemetry.scores.queued() <= 10_000
    langfuse_env.reset_faults()
    report = otel_basic.flush(timeout=30)
    assert not report and report.error is not None and f"{extra} scores dropped" in report.error, report
    assert "score queue full" in report.error
    names = [s["name"] for s in _wait_for_scores(langfuse_env, 10_000)]
    assert sorted(names) == sorted(f"s{i}" for i in range(extra, 10_000 + extra))  # the newest, each once
    assert otel_basic.flush(timeout=5)  # reported once


def test_scores_made_while_a_flush_runs_do_not_falsify_it_and_those_made_before_it_arrived(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    """A flush answers for the scores queued before it began, as for spans: an app that keeps scoring
    from another thread made every flush false ("N still queued", long before its deadline), though
    everything it answered for had arrived (a review saw it 16 times in 16 flushes)."""
    langfuse_env.set_delay(0.02)
    stop = threading.Event()
    made: list[str] = []

    def scorer() -> None:
        while not stop.is_set():
            name = f"s{len(made)}"
            if _score_in_span(name):
                made.append(name)  # after it was queued
            time.sleep(0.001)

    thread = threading.Thread(target=scorer)
    thread.start()
    try:
        for _ in range(6):
            time.sleep(0.03)
            before = list(made)
            report = otel_basic.flush(timeout=5)
            assert report, report
            assert set(before) <= {str(s["name"]) for s in langfuse_env.scores}
    finally:
        stop.set()
        thread.join()
    assert otel_basic.flush(timeout=5)
    assert sorted(str(s["name"]) for s in langfuse_env.scores) == sorted(made)  # each once
