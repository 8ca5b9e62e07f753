"""Both workflows through the real pipeline to the test receiver: trace shape, one trace per run
under concurrency, clean run input/output, session/user on every span, token-carrying LLM spans,
per-step delivery, errors."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from typing import Any

import pytest

import otel_basic
from basic.email_workflow import email_workflow
from basic.samples import SAMPLE_EMAILS, sample_email
from basic.tools import TOOLS
from basic.workflow import workflow as hello_workflow
from otel_basic.testing import LangfuseReceiver, ReceivedSpan

STEPS = ["triage_email", "execute_plan", "verify_response", "send_results"]


@pytest.fixture
def slow_batches(langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch) -> otel_basic.Telemetry:
    """Only the per-step kicks and explicit flushes can send: the batch timer is an hour."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    tel = otel_basic.configure()
    assert tel.enabled
    return tel


def _by_trace(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    traces: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)
    return traces


def _root(spans: list[ReceivedSpan]) -> ReceivedSpan:
    roots = [s for s in spans if s.parent_span_id is None]
    assert len(roots) == 1, [s.name for s in roots]
    return roots[0]


async def test_hello_workflow_trace(
    slow_batches: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    result = await otel_basic.run_with_flush(hello_workflow, name="Ada")
    assert result == "Hello, Ada!"
    spans = langfuse_env.spans
    assert sorted(s.name for s in spans) == ["HelloWorkflow.hello", "HelloWorkflow.run"]
    root = _root(spans)
    assert json.loads(root.attributes["input.value"]) == {"name": "Ada"}
    assert root.attributes["output.value"] == "Hello, Ada!"
    assert root.attributes["langfuse.trace.name"] == "HelloWorkflow"


async def test_email_run_trace_shape_input_output_session_user(
    slow_batches: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    email = sample_email("meeting_request")
    result = await otel_basic.run_with_flush(email_workflow, email_data=email)
    spans = langfuse_env.spans
    assert len({s.span_id for s in spans}) == len(spans), "duplicate spans"
    assert len(_by_trace(spans)) == 1, "one run, one trace"
    names = Counter(s.name for s in spans)
    for step in STEPS:
        assert names[f"EmailWorkflow.{step}"] == 1, names
    assert names["EmailWorkflow.run"] == 1
    assert names["propose_meeting_slots"] == 1 and names["draft_reply"] == 1
    draft = next(s for s in spans if s.name == "draft_reply")
    assert any(
        s.parent_span_id == draft.span_id and s.attributes.get("openinference.span.kind") == "LLM" for s in spans
    ), "the tool's LLM call nests under the tool span"
    root = _root(spans)
    assert root.name == "EmailWorkflow.run" and root.attributes["langfuse.trace.name"] == "EmailWorkflow"
    run_input = json.loads(root.attributes["input.value"])
    assert run_input["email_data"]["subject"] == email["subject"], "trace input is the start event's fields"
    assert "init_state" not in root.attributes["input.value"], "no internal state dump"
    run_output = json.loads(root.attributes["output.value"])
    assert run_output["category"] == result.category == "meeting_request"
    for span in spans:
        if span.name.startswith("log."):
            continue
        assert span.attributes.get("session.id") == email["thread_id"], span.name
        assert span.attributes.get("user.id"), span.name  # the sender (masked by default)


async def test_one_token_carrying_llm_span_per_call(
    slow_batches: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    await otel_basic.run_with_flush(email_workflow, email_data=sample_email("complaint"))
    llm_spans = [s for s in langfuse_env.spans if s.attributes.get("openinference.span.kind") == "LLM"]
    with_tokens = [s for s in llm_spans if "llm.token_count.total" in s.attributes]
    assert llm_spans and len(with_tokens) == len(llm_spans), "each LLM call is exactly one span with usage"
    for span in with_tokens:
        a = span.attributes
        assert a["llm.token_count.total"] == a["llm.token_count.prompt"] + a["llm.token_count.completion"] > 0
        assert a["llm.model_name"] == "offline-rules-1"
        assert not any(
            p.attributes.get("openinference.span.kind") == "LLM"
            for p in llm_spans
            if p.span_id == span.parent_span_id
        ), "no nested LLM span double-counting usage"


async def test_fifty_concurrent_runs_one_clean_trace_each(
    slow_batches: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    emails = []
    for i in range(50):
        email = dict(SAMPLE_EMAILS[i % len(SAMPLE_EMAILS)])
        email["thread_id"] = f"thread-{i}"
        emails.append(email)
    results = await asyncio.gather(*(email_workflow.run(email_data=e) for e in emails))
    assert len(results) == 50
    report = await otel_basic.aflush(timeout=20)
    assert report, report.summary()
    traces = _by_trace([s for s in langfuse_env.spans if not s.name.startswith("log.")])
    assert len(traces) == 50
    for spans in traces.values():
        sessions = {s.attributes.get("session.id") for s in spans}
        assert len(sessions) == 1, f"a trace mixes runs: {sessions}"
        root = _root(spans)
        assert root.name == "EmailWorkflow.run"
        assert json.loads(root.attributes["input.value"])["email_data"]["thread_id"] == sessions.pop()
        assert (
            sum(1 for s in spans if s.name.startswith("EmailWorkflow.") and s.name != "EmailWorkflow.run")
            == 4
        )


async def test_each_step_is_delivered_before_the_next_step_ends(
    slow_batches: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    seen_at_delivery: list[str] = []

    async def callback(result: Any) -> None:
        # runs inside send_results: the three earlier steps must already be at the endpoint
        deadline = time.monotonic() + 5
        wanted = {f"EmailWorkflow.{s}" for s in STEPS[:3]}
        while time.monotonic() < deadline and not wanted <= set(langfuse_env.span_names()):
            await asyncio.sleep(0.01)
        seen_at_delivery.extend(langfuse_env.span_names())

    await email_workflow.run(email_data=sample_email("question"), callback=callback)
    for step in STEPS[:3]:
        assert f"EmailWorkflow.{step}" in seen_at_delivery, (step, seen_at_delivery)
    # and the last step plus the run span arrive right after the run, with no flush call
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "EmailWorkflow.send_results" not in langfuse_env.span_names():
        await asyncio.sleep(0.01)
    assert "EmailWorkflow.send_results" in langfuse_env.span_names()


async def test_a_runs_end_sends_at_once_the_linger_is_for_steps_only(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's kick lingers so the steps ending meanwhile share one request; once the run has ended
    normally nothing more of it comes, so its last spans leave at once (visibility without a flush call)."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    monkeypatch.setenv("OTEL_BASIC_EXPORT_LINGER_MS", "1000")
    assert otel_basic.configure().enabled
    assert await hello_workflow.run(name="Ada") == "Hello, Ada!"
    ended = time.monotonic()
    while time.monotonic() < ended + 0.6 and "HelloWorkflow.run" not in langfuse_env.span_names():
        await asyncio.sleep(0.005)
    waited = time.monotonic() - ended
    assert sorted(langfuse_env.span_names()) == ["HelloWorkflow.hello", "HelloWorkflow.run"], waited
    assert waited < 0.6  # the step's linger alone would hold them for a second


async def test_back_to_back_runs_share_requests_a_linger_apart(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's end sends at once, but not a second request within a linger of the last: ten runs ending
    10 ms apart make two requests (the first run's, then the other nine's a linger later), not ten."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    monkeypatch.setenv("OTEL_BASIC_EXPORT_LINGER_MS", "1000")
    monkeypatch.setenv("OTEL_BASIC_EXPORT_WORKERS", "1")
    assert otel_basic.configure().enabled
    started = time.monotonic()
    for i in range(10):
        assert await hello_workflow.run(name=f"n{i}") == f"Hello, n{i}!"
        await asyncio.sleep(0.01)  # an idle loop: the export worker is free to send at once each time
    assert time.monotonic() - started < 0.9, "the runs must end within the linger for this test to mean anything"
    spans = langfuse_env.wait_for_spans(20, timeout=5)
    assert len(spans) == 20
    assert len(langfuse_env.trace_requests) == 2, [len(r.spans) for r in langfuse_env.trace_requests]


async def test_failing_tool_is_an_error_span_and_the_plan_continues(
    slow_batches: otel_basic.Telemetry, langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(ctx: Any, args: Any) -> dict[str, Any]:
        raise RuntimeError("faq index offline")

    monkeypatch.setitem(TOOLS, "lookup_faq", dataclasses.replace(TOOLS["lookup_faq"], fn=broken))
    result = await otel_basic.run_with_flush(email_workflow, email_data=sample_email("question"))
    failed = [r for r in result.tool_results if not r.ok]
    assert [r.tool for r in failed] == ["lookup_faq"]
    assert any(r.tool == "draft_reply" and r.ok for r in result.tool_results)
    tool_span = next(s for s in langfuse_env.spans if s.name == "lookup_faq")
    assert tool_span.status_code == "ERROR"
    assert any(e.name == "exception" for e in tool_span.events)


async def test_failing_step_is_an_error_and_still_delivered(
    slow_batches: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    from workflows import Context, step
    from workflows.events import Event, StartEvent, StopEvent

    class Drafted(Event):
        text: str

    class Fragile(otel_basic.TracedWorkflow):
        @step
        @otel_basic.flush_after_step
        async def draft(self, ctx: Context, ev: StartEvent) -> Drafted:
            return Drafted(text="hi")

        @step
        @otel_basic.flush_after_step
        async def send(self, ctx: Context, ev: Drafted) -> StopEvent:
            raise ConnectionError("SMTP relay unreachable")

    with pytest.raises(ConnectionError):
        await Fragile().run()  # no explicit flush: the per-step flush must deliver both steps
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(langfuse_env.spans) < 3:
        await asyncio.sleep(0.01)
    spans = {s.name.rsplit(".", 2)[-2] + "." + s.name.rsplit(".", 1)[-1]: s for s in langfuse_env.spans}
    assert spans["Fragile.draft"].status_code != "ERROR"
    assert spans["Fragile.send"].status_code == "ERROR"
    assert any(e.name == "exception" for e in spans["Fragile.send"].events)


async def test_bad_email_data_is_rejected_clearly(slow_batches: otel_basic.Telemetry) -> None:
    from basic.models import InvalidEmailError

    with pytest.raises(InvalidEmailError) as info:
        await otel_basic.run_with_flush(email_workflow, email_data={"sender": "not-an-address", "body": "hi"})
    assert "sender" in str(info.value)
    with pytest.raises(InvalidEmailError) as info2:
        await email_workflow.run(email_data={"sender": "a@example.com", "subject": "x"})
    assert "body" in str(info2.value)


async def test_start_event_and_callable_callback_keep_clean_input_and_session(
    slow_batches: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    """As WorkflowServer runs it: a built start event, and a Python callable as the callback."""
    from basic.email_workflow import EmailStartEvent

    delivered: list[Any] = []

    async def callback(result: Any) -> None:
        delivered.append(result)

    email = sample_email("question")
    await otel_basic.run_with_flush(email_workflow, start_event=EmailStartEvent(email_data=email, callback=callback))
    assert delivered
    root = _root(langfuse_env.spans)
    assert root.attributes["session.id"] == email["thread_id"]
    run_input = json.loads(root.attributes["input.value"])
    assert run_input["email_data"]["subject"] == email["subject"]
    assert "init_state" not in root.attributes["input.value"]


def _two_step_workflow(seen: list[str], receiver: LangfuseReceiver) -> Any:
    from workflows import Context, step
    from workflows.events import Event, StartEvent, StopEvent

    class Done(Event):
        pass

    class TwoSteps(otel_basic.TracedWorkflow):
        @step
        @otel_basic.flush_after_step
        async def first(self, ctx: Context, ev: StartEvent) -> Done:
            with otel_basic.get_tracer("t").start_as_current_span("child-of-first"):
                pass
            return Done()

        @step
        @otel_basic.flush_after_step
        async def second(self, ctx: Context, ev: Done) -> StopEvent:
            seen.extend(receiver.span_names())  # no waiting: what has arrived right now
            return StopEvent(result="ok")

    return TwoSteps()


async def test_step_flush_wait_mode_delivers_children_before_the_step_returns(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    monkeypatch.setenv("OTEL_BASIC_STEP_FLUSH", "wait")
    otel_basic.configure()
    seen: list[str] = []
    await _two_step_workflow(seen, langfuse_env).run()
    assert "child-of-first" in seen


async def test_step_flush_off_leaves_spans_to_the_batch(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    monkeypatch.setenv("OTEL_BASIC_STEP_FLUSH", "off")
    otel_basic.configure()
    seen: list[str] = []
    await _two_step_workflow(seen, langfuse_env).run()
    await asyncio.sleep(0.3)
    assert seen == [] and langfuse_env.spans == [], "nothing is sent before a flush in off mode"
    assert await otel_basic.aflush(timeout=5)
    assert "child-of-first" in langfuse_env.span_names()
