"""``run_with_flush(..., session_id=, user_id=, tags=)`` reaches every span of the run: LlamaIndex's,
the app's own (any tracer, any thread the context travels to) and Langfuse's ``@observe``."""

from __future__ import annotations

import asyncio

from langfuse import observe
from opentelemetry import trace
from workflows import Workflow, step
from workflows.events import StartEvent, StopEvent

import otel_basic
from otel_basic.testing import LangfuseReceiver
from otel_basic.testing.langfuse_view import langfuse_view


@observe(name="observed-helper")
def _helper(x: int) -> int:
    return x * 2


class _AppSpans(Workflow):
    @step
    async def work(self, ev: StartEvent) -> StopEvent:
        _helper(2)
        with trace.get_tracer("host").start_as_current_span("host-span"):
            pass
        with otel_basic.get_tracer("own").start_as_current_span("own-span"):
            pass
        await asyncio.to_thread(lambda: otel_basic.get_tracer("own").start_span("thread-span").end())
        return StopEvent(result=1)


async def test_run_fields_reach_the_apps_own_spans(langfuse_env: LangfuseReceiver) -> None:
    otel_basic.configure()
    await otel_basic.run_with_flush(_AppSpans(), session_id="s-1", user_id="u-9", tags=["beta"])
    assert await otel_basic.aflush(timeout=5)
    names = {s.name for s in langfuse_env.spans}
    assert {"observed-helper", "host-span", "own-span", "thread-span", "_AppSpans.work"} <= names
    for span in langfuse_env.spans:
        assert span.attributes.get("session.id") == "s-1", span.name
        assert span.attributes.get("user.id") == "u-9", span.name
    (trace_view,) = langfuse_view(langfuse_env.spans).traces.values()
    assert (trace_view.user_id, trace_view.session_id, trace_view.tags) == ("u-9", "s-1", ["beta"])
