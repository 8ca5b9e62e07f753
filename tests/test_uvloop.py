"""Under uvloop (what ``uvicorn[standard]`` runs on), the event loop's own exports keep every guarantee they
have on asyncio's loop: each span arrives once, a finished step is seen before its run ends, an export due
while the runner shuts down is not sent twice, and faults lose nothing and never make a flush say ok too soon
(a run per ``uvloop.run``: ``test_loop_export.test_a_run_per_asyncio_run_delivers_each_span_once``)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
import uvloop
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from workflows import Context, Workflow, step
from workflows.events import StartEvent, StopEvent

import otel_basic
from basic.email_workflow import email_workflow
from basic.samples import sample_email
from basic.workflow import workflow as hello_workflow
from otel_basic.testing import LangfuseReceiver

from .test_loop_export import _created, _Next, plant_fault


def _made(memory: InMemorySpanExporter) -> list[str]:
    return sorted(format(s.context.span_id, "016x") for s in memory.get_finished_spans())


class _Slow(Workflow):
    @step
    async def first(self, ev: StartEvent) -> _Next:
        return _Next()

    @step
    async def second(self, ctx: Context, ev: _Next) -> StopEvent:
        await asyncio.sleep(0.6)
        return StopEvent(result="done")


def test_on_uvloop_the_loop_exports_each_span_once_and_a_step_is_seen_before_its_run_ends(
    langfuse_env: LangfuseReceiver,
) -> None:
    created = _created(otel_basic.configure())
    made_tasks: list[str] = []
    loop_errors: list[dict[str, Any]] = []
    seen_first: list[bool] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert type(loop).__module__.startswith("uvloop")

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            made_tasks.append(getattr(coro, "__qualname__", ""))
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(factory)
        loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
        for i in range(3):  # a quiet loop: the loop itself exports
            await hello_workflow.run(name=f"q{i}")
            await asyncio.sleep(0.05)
        slow = asyncio.ensure_future(_Slow(timeout=10).run())
        runs = [email_workflow.run(email_data=sample_email(kind), callback=None) for kind in ("question", "complaint")]
        await asyncio.gather(*runs, *(hello_workflow.run(name=f"u{i}") for i in range(3)))
        deadline = time.monotonic() + 0.5
        while not slow.done() and time.monotonic() < deadline:
            if "_Slow.first" in langfuse_env.span_names():
                break
            await asyncio.sleep(0.01)
        seen_first.append("_Slow.first" in langfuse_env.span_names() and not slow.done())
        await slow
        assert await otel_basic.aflush(timeout=10)

    uvloop.run(main())
    # uvloop's transports are no asyncio.Transport: a check for one failed every loop export, with a
    # traceback through the loop's exception handler, and left each batch to the workers
    assert loop_errors == []
    assert "LoopExports._send" in made_tasks
    assert seen_first == [True]  # the per-step flush sent the first step while the second still ran
    assert sorted(s.span_id for s in langfuse_env.spans) == _made(created)  # each span, once


@pytest.mark.parametrize("runner", ["asyncio", "uvloop"])
def test_an_export_due_while_the_runner_shuts_down_is_sent_once(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch, runner: str
) -> None:
    """``asyncio.run`` and ``uvloop.run`` run their shutdown steps as tasks after the app's main coroutine
    returned; here ``shutdown_default_executor`` waits for an executor job while the last run's export
    comes due (a linger after the previous run's). A request the loop started then was still out when
    the loop closed (the endpoint takes 0.3 s), and a worker sent it again."""
    monkeypatch.setenv("OTEL_BASIC_EXPORT_LINGER_MS", "60")
    created = _created(otel_basic.configure())

    async def main() -> None:
        langfuse_env.set_delay(0)
        asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.25)  # the runner waits for it
        await hello_workflow.run(name="a")
        await asyncio.sleep(0.02)  # its export is answered
        langfuse_env.set_delay(0.3)
        await hello_workflow.run(name="b")  # its export is due 60 ms after a's: main has returned by then

    for _ in range(3):
        (uvloop.run if runner == "uvloop" else asyncio.run)(main())
    assert otel_basic.flush(timeout=10)
    assert sorted(s.span_id for s in langfuse_env.spans) == _made(created)  # each span, once


@pytest.mark.parametrize("seed", [1, 2])
def test_on_uvloop_faults_lose_nothing_and_no_flush_says_ok_too_soon(langfuse_env: LangfuseReceiver, seed: int) -> None:
    created = _created(otel_basic.configure())
    rng = random.Random(seed)
    refused = 0

    async def main() -> None:
        nonlocal refused
        for i in range(10):
            plant_fault(langfuse_env, rng.choice(["none", "503", "drop", "partial", "slow", "hang"]), rng)
            if i % 3 == 0:
                await email_workflow.run(email_data=sample_email("question"), callback=None)
            else:
                await asyncio.gather(*(hello_workflow.run(name=f"f{i}-{k}") for k in range(3)))
            if rng.random() < 0.4:  # a flush mid-way: truthy only if everything made so far arrived
                report = await otel_basic.aflush(timeout=0.2)
                refused += report.rejected
                if report:
                    arrived = {s.span_id for s in langfuse_env.spans}
                    assert len(set(_made(created)) - arrived) == refused, report.summary()
            await asyncio.sleep(rng.choice([0, 0.01, 0.03]))
            langfuse_env.set_delay(0)
        langfuse_env.reset_faults()
        report = await otel_basic.aflush(timeout=20)
        refused += report.rejected
        while report.in_spool or report.pending:
            report = await otel_basic.aflush(timeout=20)
            refused += report.rejected
        assert report, report.summary()

    uvloop.run(main())
    made = set(_made(created))
    arrived = {s.span_id for s in langfuse_env.spans}
    assert arrived <= made and len(made - arrived) == refused  # only spans refused for good are missing
