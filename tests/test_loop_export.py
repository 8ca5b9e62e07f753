"""Exports made by the app's event loop (OTEL_BASIC_LOOP_EXPORT, on by default) keep every guarantee of
the export workers': nothing lost or counted twice under faults, a flush that blocks the loop or runs
after it closed is still truthful and quick, and a loop blocked by a synchronous call does not hold a
finished step's spans back."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

import otel_basic
from basic.email_workflow import email_workflow
from basic.samples import sample_email
from basic.workflow import workflow as hello_workflow
from otel_basic.testing import LangfuseReceiver


def _created(telemetry: otel_basic.Telemetry) -> InMemorySpanExporter:
    """Every span the app makes, as the SDK hands it to processors (to compare with what arrived)."""
    memory = InMemorySpanExporter()
    assert telemetry.provider is not None
    telemetry.provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


def _ids(spans: Any) -> set[str]:
    return {format(s.context.span_id, "016x") for s in spans}


def plant_fault(receiver: LangfuseReceiver, fault: str, rng: random.Random, slow: tuple[float, ...] = (0.05,)) -> None:
    """Arms the receiver for one of the faults the randomized tests draw ("none" arms nothing)."""
    if fault == "503":
        receiver.fail_next(503, count=rng.randint(1, 2))
    elif fault == "drop":
        receiver.drop_next()
    elif fault == "partial":
        receiver.partial_success_next(rejected=1)
    elif fault == "slow":
        receiver.set_delay(rng.choice(slow))
    elif fault == "hang":
        receiver.hang_next()
    elif fault == "413":
        receiver.max_body_bytes = 600


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_faults_every_span_arrives_and_the_final_flush_tells_the_truth(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    monkeypatch.setenv("OTEL_BASIC_EXPORT_LINGER_MS", "2")
    telemetry = otel_basic.configure()
    created = _created(telemetry)
    rng = random.Random(seed)
    for i in range(12):
        fault = rng.choice(["none", "none", "503", "drop", "partial", "slow", "hang", "413"])
        plant_fault(langfuse_env, fault, rng, slow=(0.01, 0.05))
        if i % 3 == 0:
            await email_workflow.run(email_data=sample_email("question"), callback=None)
        else:
            await hello_workflow.run(name=f"n{i}")
        await asyncio.sleep(rng.choice([0, 0.005, 0.03]))
        if fault in ("slow", "413"):
            langfuse_env.set_delay(0)
            langfuse_env.max_body_bytes = None
    langfuse_env.reset_faults()
    report = await otel_basic.aflush(timeout=20)
    refused = report.rejected
    while report.in_spool or report.pending:  # what the faults spooled, replayed
        report = await otel_basic.aflush(timeout=20)
        refused += report.rejected
    made = _ids(created.get_finished_spans())
    arrived = {s.span_id for s in langfuse_env.spans}
    # Every span arrived, except those the endpoint refused for good (partial success): counted, once.
    assert made - arrived <= made and len(made - arrived) == refused
    assert report.dropped == 0
    assert report.pending == 0 and report.in_spool == 0


async def test_a_sync_flush_inside_the_loop_takes_over_its_request(langfuse_env: LangfuseReceiver) -> None:
    """The loop cannot read its answer while a synchronous flush blocks it: the flush hands the batch to
    the export workers instead of waiting for its own deadline."""
    assert otel_basic.configure().enabled
    langfuse_env.set_delay(0.3)
    await hello_workflow.run(name="blocked")
    await asyncio.sleep(0.05)  # the loop's request is out, its answer 0.25 s away
    started = time.monotonic()
    report = otel_basic.flush(timeout=5)
    assert report, report.summary()
    assert time.monotonic() - started < 2.0
    assert {"HelloWorkflow.hello", "HelloWorkflow.run"} <= set(langfuse_env.span_names())


def test_a_flush_after_the_loop_closed_sends_what_it_had_out(langfuse_env: LangfuseReceiver) -> None:
    """``asyncio.run`` ends with the loop's request unanswered: the next flush (the exit's) resends it
    from a worker at once, truthfully."""
    assert otel_basic.configure().enabled
    langfuse_env.set_delay(0.3)

    async def main() -> None:
        await hello_workflow.run(name="closing")
        await asyncio.sleep(0.05)

    asyncio.run(main())
    started = time.monotonic()
    report = otel_basic.flush(timeout=5)
    assert report, report.summary()
    assert time.monotonic() - started < 2.0
    assert {"HelloWorkflow.hello", "HelloWorkflow.run"} <= set(langfuse_env.span_names())


class _Next(Event):
    pass


class _Blocking(Workflow):
    @step
    async def first(self, ev: StartEvent) -> _Next:
        return _Next()

    @step
    async def second(self, ctx: Context, ev: _Next) -> StopEvent:
        time.sleep(0.8)  # a synchronous call in an async step: the loop is blocked
        return StopEvent(result="done")


async def test_a_blocked_loop_does_not_hold_back_a_finished_step(langfuse_env: LangfuseReceiver) -> None:
    assert otel_basic.configure().enabled
    arrived: dict[str, float] = {}
    langfuse_env.add_span_listener(lambda spans: arrived.update((s.name, time.monotonic()) for s in spans))
    started = time.monotonic()
    await _Blocking(timeout=10).run()
    ended = time.monotonic()
    assert ended - started >= 0.8
    first = arrived.get("_Blocking.first")
    assert first is not None and first - started < 0.5, (first and first - started, arrived)


@pytest.mark.parametrize("setting", ["false", None])
async def test_on_by_default_and_off_the_workers_make_every_export(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch, setting: str | None
) -> None:
    if setting is None:
        monkeypatch.delenv("OTEL_BASIC_LOOP_EXPORT", raising=False)
    else:
        monkeypatch.setenv("OTEL_BASIC_LOOP_EXPORT", setting)
    telemetry = otel_basic.configure()
    assert telemetry.enabled and telemetry.settings.loop_export is (setting is None)
    loop = asyncio.get_running_loop()
    made: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(getattr(coro, "__qualname__", ""))
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    try:
        await hello_workflow.run(name="workers")
        await asyncio.sleep(0.1)  # a step's export is due 15 ms after it
    finally:
        loop.set_task_factory(None)
    assert await otel_basic.aflush(timeout=5)
    assert {"HelloWorkflow.hello", "HelloWorkflow.run"} <= set(langfuse_env.span_names())
    assert ("LoopExports._send" in made) is (setting is None), made


def test_a_loop_per_call_leaks_no_socket_and_no_loop(langfuse_env: LangfuseReceiver) -> None:
    """A sync app that calls ``asyncio.run`` per request: each loop's connection goes with the loop
    (a table of ours held every loop and its socket: 200 runs, 200 more open files)."""
    assert otel_basic.configure().enabled
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await hello_workflow.run(name="per-call")
        await asyncio.sleep(0.03)  # the loop's export is answered

    asyncio.run(main())
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(30):
        asyncio.run(main())
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before + 2
    assert sum(ref() is not None for ref in loops) <= 1
    assert otel_basic.flush(timeout=5)
    assert len(langfuse_env.spans) == 62


@pytest.mark.parametrize("runner", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
@pytest.mark.parametrize("delay", [0.0, 0.05])
def test_a_run_per_asyncio_run_delivers_each_span_once(
    langfuse_env: LangfuseReceiver, delay: float, runner: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    """``asyncio.run`` (and ``uvloop.run``) ends right after a run, with the run's export out: it cancels
    that task, which still waits for the answer instead of leaving the batch to a worker to send again (a
    review found 16-62% of such a script's spans delivered twice, at 0 ms too). One span twice is the
    README's documented rare case (an answer later than the wait; seen once in CI under load, 1 of 48):
    tolerated, once; none may be lost."""
    telemetry = otel_basic.configure()
    created = _created(telemetry)
    langfuse_env.set_delay(delay)

    async def main() -> None:
        await email_workflow.run(email_data=sample_email("question"), callback=None)

    for _ in range(8):
        runner(main())
    assert otel_basic.flush(timeout=10)
    made = [format(s.context.span_id, "016x") for s in created.get_finished_spans()]
    arrived = [s.span_id for s in langfuse_env.spans]
    assert set(arrived) == set(made)  # none lost, none foreign
    assert len(arrived) - len(made) <= 1, sorted(arrived)  # each once (the bug sent 8-30 of 48 twice)


def test_a_loop_closed_by_hand_with_its_export_started_still_sends_it(langfuse_env: LangfuseReceiver) -> None:
    """``new_event_loop(); run_until_complete(...); close()`` right after the export task started: the
    primary worker's watch resends the batch, without waiting for a flush that may never come."""
    assert otel_basic.configure().enabled
    loop = asyncio.new_event_loop()

    async def main() -> None:
        await hello_workflow.run(name="by-hand")
        for _ in range(400):
            if any(task.get_name() == "otel-basic-export" for task in asyncio.all_tasks()):
                return
            await asyncio.sleep(0.0005)

    loop.run_until_complete(main())
    loop.close()
    spans = langfuse_env.wait_for_spans(2, timeout=2)
    assert {s.name for s in spans} == {"HelloWorkflow.hello", "HelloWorkflow.run"}


def test_an_export_task_left_pending_by_a_closed_loop_is_closed_by_us_not_by_the_gc(
    langfuse_env: LangfuseReceiver,
) -> None:
    """A loop closed with its export task pending: the task is closed from its outermost coroutine by
    the primary's watch. Left to the garbage collector, CPython 3.11 crashed (SIGSEGV) when it closed an
    inner coroutine of the chain first: 4 runs in 30 of threads whose loops closed with exports out."""
    assert otel_basic.configure().enabled
    langfuse_env.set_delay(0.3)  # the request is out when the loop closes
    loop = asyncio.new_event_loop()
    coroutines: list[Any] = []

    async def main() -> None:
        await hello_workflow.run(name="stranded")
        for _ in range(400):
            tasks = [t for t in asyncio.all_tasks() if t.get_name() == "otel-basic-export"]
            if tasks:
                await asyncio.sleep(0.01)  # it connects and writes its request
                coroutines.extend(t.get_coro() for t in tasks)
                return
            await asyncio.sleep(0.0005)

    loop.run_until_complete(main())
    loop.close()
    assert coroutines
    deadline = time.monotonic() + 2
    while any(c.cr_frame is not None for c in coroutines) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(c.cr_frame is None for c in coroutines), "an export coroutine is still suspended"
    langfuse_env.set_delay(0)
    assert otel_basic.flush(timeout=5)
    assert {s.name for s in langfuse_env.spans} == {"HelloWorkflow.hello", "HelloWorkflow.run"}


def test_loops_dropped_without_closing_are_not_all_kept(langfuse_env: LangfuseReceiver) -> None:
    """``new_event_loop(); run_until_complete(...)`` and the loop dropped, never closed, with its export
    out: a few such loops keep their pending export (they may run again), not every one (a hostile
    review: 240 dropped loops kept 257 more fds open; without telemetry the collector closes them)."""
    assert otel_basic.configure().enabled
    langfuse_env.set_delay(0.5)  # each loop stops with its request out
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        await hello_workflow.run(name="dropped")
        for _ in range(400):
            if any(t.get_name() == "otel-basic-export" for t in asyncio.all_tasks()):
                await asyncio.sleep(0.005)
                return
            await asyncio.sleep(0.0005)

    for _ in range(40):
        loop = asyncio.new_event_loop()
        loops.append(weakref.ref(loop))
        loop.run_until_complete(main())
        del loop
    langfuse_env.set_delay(0)
    assert otel_basic.flush(timeout=10)
    gc.collect()
    assert sum(ref() is not None for ref in loops) <= 16
    assert len({s.span_id for s in langfuse_env.spans}) == 80


def test_a_stopped_loop_whose_export_was_closed_runs_again_quietly(
    langfuse_env: LangfuseReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The oldest of too many stopped loops has its export task closed; run again, that loop neither logs
    the task's end ("Task exception was never retrieved") nor trips on what the export left registered."""
    assert otel_basic.configure().enabled
    langfuse_env.set_delay(0.3)

    async def main(name: str) -> None:
        await hello_workflow.run(name=name)
        for _ in range(400):
            if any(t.get_name() == "otel-basic-export" for t in asyncio.all_tasks()):
                await asyncio.sleep(0.005)
                return
            await asyncio.sleep(0.0005)

    first = asyncio.new_event_loop()
    first.run_until_complete(main("first"))
    others = []
    for i in range(20):
        loop = asyncio.new_event_loop()
        loop.run_until_complete(main(f"other-{i}"))
        others.append(loop)  # kept, never run again: the first is the oldest stopped loop
    assert otel_basic.flush(timeout=5)
    langfuse_env.set_delay(0)

    async def again() -> None:
        for i in range(3):
            await hello_workflow.run(name=f"again-{i}")
            _, writer = await asyncio.open_connection("127.0.0.1", langfuse_env.port)  # new fds on this loop
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.2)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        first.run_until_complete(again())
        first.close()
        gc.collect()
    for loop in others:
        loop.close()
    assert otel_basic.flush(timeout=5)
    assert not [r for r in caplog.records if r.name == "asyncio"], [r.getMessage() for r in caplog.records]
    assert len({s.span_id for s in langfuse_env.spans}) == 2 * (1 + 20 + 3)


async def test_a_retry_after_answered_to_the_loop_is_honoured(langfuse_env: LangfuseReceiver) -> None:
    """The workers go on from the loop's answer: a 429 with ``Retry-After: 1`` is retried a second
    later, not at once (and a refusal or partial success is settled as answered, not sent again)."""
    assert otel_basic.configure().enabled
    await hello_workflow.run(name="warm")
    assert await otel_basic.aflush(timeout=5)
    arrived: list[float] = []
    langfuse_env.add_span_listener(lambda spans: arrived.append(time.monotonic()))
    langfuse_env.fail_next(429, retry_after=1)
    ended_at = time.monotonic()
    await hello_workflow.run(name="limited")
    report = await otel_basic.aflush(timeout=5)
    assert report, report.summary()
    assert arrived and arrived[0] - ended_at >= 0.9
    langfuse_env.partial_success_next(rejected=1)
    requests = len(langfuse_env.trace_requests)
    await hello_workflow.run(name="partly")
    report = await otel_basic.aflush(timeout=5)
    assert report.rejected == 1 and report.exported == 1
    assert len(langfuse_env.trace_requests) == requests + 1


def _spin(seconds: float) -> None:
    """A burst of the app's own work: holds the GIL (but for the interpreter's switch-interval drops)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


async def test_a_busy_loop_hands_its_batch_to_the_workers_between_bursts_not_during_one(
    langfuse_env: LangfuseReceiver,
) -> None:
    """Many concurrent runs make the loop's iterations long (50 runs' steps ending in one): a worker that
    wakes by its own timer in the middle of one takes the GIL from it and lengthens it (the event-loop lag
    that issue 14 measures). The loop's own timer, which can only run between iterations, wakes it."""
    telemetry = otel_basic.configure()
    assert telemetry.enabled and telemetry.provider is not None
    tracer = telemetry.provider.get_tracer("bursts")
    arrived: list[tuple[str, float]] = []
    langfuse_env.add_span_listener(lambda spans: arrived.extend((s.name, time.monotonic()) for s in spans))

    def burst(name: str, spans: int, seconds: float) -> None:
        for i in range(spans):
            tracer.start_span(f"{name}-{i}").end()
        telemetry.kick()  # what a step's end does
        _spin(seconds)

    burst("warm", 5, 0.05)  # its export timer (due 15 ms after the kick) runs 35 ms late: a busy loop
    await asyncio.sleep(0.05)
    assert await otel_basic.aflush(timeout=5)
    burst("burst", 20, 0.08)
    ended = time.monotonic()
    await asyncio.sleep(0.05)
    assert await otel_basic.aflush(timeout=5)
    times = [t for name, t in arrived if name.startswith("burst-")]
    assert len(times) == 20, arrived
    assert min(times) >= ended, f"exported {ended - min(times):.3f} s before the burst ended"


@pytest.mark.parametrize("seed", [4, 5])
async def test_busy_loop_with_random_faults_every_span_arrives_and_no_flush_says_ok_too_soon(
    langfuse_env: LangfuseReceiver, seed: int
) -> None:
    """Bursts of 20 concurrent runs (and the app's own busy work) make the loop busy, so its exports go to the
    workers from its timer: under random endpoint faults, every span still arrives, and a flush that says
    ok has every span made before it delivered."""
    telemetry = otel_basic.configure()
    created = _created(telemetry)
    rng = random.Random(seed)
    partial = False
    refused = 0  # spans the endpoint refused for good, as every flush reported them (each once)

    async def busy() -> None:
        _spin(rng.choice([0.02, 0.04]))

    for i in range(6):
        fault = rng.choice(["none", "503", "drop", "slow", "hang", "partial"])
        plant_fault(langfuse_env, fault, rng)
        partial = partial or fault == "partial"
        await asyncio.gather(busy(), *(hello_workflow.run(name=f"b{i}-{k}") for k in range(20)), busy())
        report = await otel_basic.aflush(timeout=rng.choice([0.02, 0.2]))
        refused += report.rejected
        if report and not partial:
            made = _ids(created.get_finished_spans())
            assert made <= {s.span_id for s in langfuse_env.spans}, "a flush said ok with spans undelivered"
        langfuse_env.set_delay(0)
    langfuse_env.reset_faults()
    report = await otel_basic.aflush(timeout=20)
    refused += report.rejected
    while report.in_spool or report.pending:
        report = await otel_basic.aflush(timeout=20)
        refused += report.rejected
    made = _ids(created.get_finished_spans())
    arrived = {s.span_id for s in langfuse_env.spans}
    assert len(made) >= 6 * 20 * 2
    assert len(made - arrived) == refused and report.dropped == 0


def test_batches_left_by_ended_loops_share_requests_to_a_slow_endpoint(langfuse_env: LangfuseReceiver) -> None:
    """One run per ``asyncio.run`` against a slow endpoint: a loop that ends before its run's request is
    written hands the prepared batch to the workers; those that wait together leave in one request.
    Sent one request each, a final flush took 2-3 round trips where the workers alone needed one
    (1.2 s against 0.7 s). So once the runs are over, whatever still waits leaves in one request (two
    if a worker comes back just then). A run whose request was out waits for its answer instead; an
    attempt where too few runs handed over proves nothing, so it repeats."""
    telemetry = otel_basic.configure()
    created = _created(telemetry)
    delay, runs, workers = 0.45, 16, 4
    langfuse_env.set_delay(delay)

    async def main() -> None:
        await email_workflow.run(email_data=sample_email("question"), callback=None)

    for _attempt in range(3):
        handed = 0
        for _ in range(runs):
            started = time.monotonic()
            asyncio.run(main())
            handed += time.monotonic() - started < delay * 0.7  # its loop did not wait for an answer
        ended = time.time()
        assert otel_basic.flush(timeout=10)
        made = [format(s.context.span_id, "016x") for s in created.get_finished_spans()]
        assert sorted(s.span_id for s in langfuse_env.spans) == sorted(made)  # each once
        if handed > workers + 2:
            break
        created.clear()
        langfuse_env.clear()
    sent_later = [q for q in langfuse_env.trace_requests if q.received_at - delay > ended + 0.05]
    assert len(sent_later) <= 2, [q.span_count for q in sent_later]


@pytest.mark.parametrize("loop_export", ["true", "false"])
def test_a_body_limit_is_learned_once_then_requests_fit(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch, loop_export: str
) -> None:
    """An endpoint that refuses bodies over 50 KB (one email run is about 23 KB): one run per
    ``asyncio.run`` against it at 0.3 s. Each span arrives once, the flushes tell the truth, and once a
    413 has taught the limit no request is refused again: a joined request (the loop path) goes apart to
    several workers, and later batches are cut to fit before they are sent (the workers' path). Before,
    the join sent a 140-span request that was halved in turn on one worker: the flush took 5.7-7 s. When
    no run's request went over the limit (each sent alone: seen in CI), one big request teaches it, or
    the second half's joins were the first refused."""
    monkeypatch.setenv("OTEL_BASIC_LOOP_EXPORT", loop_export)
    telemetry = otel_basic.configure()
    created = _created(telemetry)
    langfuse_env.max_body_bytes = 50_000
    langfuse_env.set_delay(0.3)

    async def main() -> None:
        await email_workflow.run(email_data=sample_email("question"), callback=None)

    for _ in range(16):
        asyncio.run(main())
    assert otel_basic.flush(timeout=20)
    if not any(q.status == 413 for q in langfuse_env.trace_requests):  # CI once: every run sent alone
        tracer = otel_basic.get_tracer("test.limits")
        with tracer.start_as_current_span("teach"):  # one 130 KB request teaches the limit, as a join would
            for i in range(11):
                tracer.start_span(f"teach-{i}", attributes={"input.value": "t" * 10_000}).end()
        assert otel_basic.flush(timeout=20)
    refused = [q for q in langfuse_env.trace_requests if q.status == 413]
    assert refused
    for _ in range(16):
        asyncio.run(main())
    assert otel_basic.flush(timeout=20)
    made = [format(s.context.span_id, "016x") for s in created.get_finished_spans()]
    assert sorted(s.span_id for s in langfuse_env.spans) == sorted(made)  # each once
    assert [q for q in langfuse_env.trace_requests if q.status == 413] == refused  # none after the first flush
    assert len(refused) <= 5


def test_a_413_on_a_small_request_teaches_no_limit(langfuse_env: LangfuseReceiver) -> None:
    """One refusal of a small request (a proxy's fluke) must not shrink every later request: a review
    saw one 413 on 816 bytes turn 200 spans into 200 single-span requests, and flushes time out."""
    assert otel_basic.configure().enabled
    tracer = otel_basic.get_tracer("test.limits")
    langfuse_env.fail_next(413)
    for i in range(2):
        tracer.start_span(f"small-{i}").end()
    assert otel_basic.flush(timeout=5)
    langfuse_env.clear()
    for i in range(200):
        tracer.start_span(f"more-{i}", attributes={"input.value": "x" * 500}).end()
    assert otel_basic.flush(timeout=5)
    assert len(langfuse_env.spans) == 200
    assert len(langfuse_env.trace_requests) <= 2


def test_a_limit_learned_from_a_big_refusal_is_refined_by_its_refused_halves(
    langfuse_env: LangfuseReceiver,
) -> None:
    """An endpoint that takes 50 KB refuses a 130 KB request, then both its 65 KB halves (under the 64 KiB
    a first refusal needs to teach). The limit is what those halves show (half of 65 KB), not half of the
    130 KB: with that, a later 58 KB request was sent whole and refused again. Spans of 10 KB, whose
    batches the flush sends whole."""
    assert otel_basic.configure().enabled
    tracer = otel_basic.get_tracer("test.limits")
    langfuse_env.max_body_bytes = 50_000

    def batch(count: int, label: str) -> None:
        with tracer.start_as_current_span(f"{label}-root"):
            for i in range(count - 1):
                tracer.start_span(f"{label}-{i}", attributes={"input.value": f"{i:x}" * 10_000}).end()

    batch(12, "first")  # about 130 KB in one request
    assert otel_basic.flush(timeout=10)
    refused = [len(q.raw_body) for q in langfuse_env.trace_requests if q.status == 413]
    assert refused and max(refused) > 64 * 1024 and min(refused) < 64 * 1024, refused
    langfuse_env.clear()
    batch(6, "later")  # about 58 KB
    assert otel_basic.flush(timeout=10)
    assert len(langfuse_env.spans) == 6
    assert [q.status for q in langfuse_env.trace_requests if q.status != 200] == []  # split before sending
