"""A LlamaIndex FunctionAgent on an OpenAI-compatible chat model, with tools, as users run it: real
HTTP to the local OpenAI-compatible server and to the Langfuse receiver, assertions on what
Langfuse shows. Also: trace fields from ``run_with_flush`` on any workflow, and per-step flushing
of undecorated steps (in process, and across a crash in a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from llama_index.core.agent.workflow import AgentStream, ToolCallResult
from llama_index.llms.openai import OpenAI
from llama_index.llms.openai_like import OpenAILike
from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

import otel_basic
from basic.agent import support_agent
from basic.email_workflow import EmailWorkflow
from basic.llm import offline_answer
from basic.samples import sample_email
from otel_basic.testing import LangfuseReceiver
from otel_basic.testing.langfuse_view import LangfuseView, ObservationView, TraceView, langfuse_view
from otel_basic.testing.openai_server import OpenAICompatServer, Reply, usage_for
from tests.conftest import PYTHON, subprocess_env

QUESTION = "What is the ticket_status of ticket 1234?"
STATUS = "ticket 1234 is waiting for customer"


@pytest.fixture
def server() -> Iterator[OpenAICompatServer]:
    with OpenAICompatServer(first_token_delay=0.05, chunk_delay=0.005) as srv:
        yield srv


@pytest.fixture
def slow_batches(langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch) -> otel_basic.Telemetry:
    """Only per-step kicks and explicit flushes can send: the batch timer is an hour."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    tel = otel_basic.configure()
    assert tel.enabled
    return tel


def _llm(server: OpenAICompatServer, like: bool = False) -> OpenAI:
    if like:  # what basic.llm uses for a custom OPENAI_BASE_URL: any model name
        llm: OpenAI = OpenAILike(
            model="gpt-4o-mini",
            api_key="sk-test",
            api_base=server.base_url,
            max_retries=0,
            is_chat_model=True,
            is_function_calling_model=True,
            context_window=128_000,
        )
        return llm
    return OpenAI(model="gpt-4o-mini", api_key="sk-test", api_base=server.base_url, max_retries=0)


def _view(receiver: LangfuseReceiver) -> LangfuseView:
    report = otel_basic.flush(timeout=5)
    assert report, report
    return langfuse_view(receiver.spans)


def _only_trace(view: LangfuseView) -> TraceView:
    assert len(view.traces) == 1, [t.name for t in view.traces.values()]
    return next(iter(view.traces.values()))


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _assert_one_generation_per_request(trace: TraceView, server: OpenAICompatServer) -> list[ObservationView]:
    """Exactly one generation per HTTP exchange, with the server's usage and within its times."""
    gens = sorted((o for o in trace.observations if o.type == "GENERATION"), key=lambda o: o.start_time)
    assert len(gens) == len(server.requests) == len(server.exchanges)
    for gen, body, (received, last_byte) in zip(gens, server.requests, server.exchanges, strict=True):
        usage = usage_for(body)
        assert gen.model == "gpt-4o-mini"
        assert gen.usage == {
            "input": usage["prompt_tokens"],
            "output": usage["completion_tokens"],
            "total": usage["total_tokens"],
        }
        assert gen.start_time <= _at(received) and gen.end_time >= _at(last_byte)
    others = [o for o in trace.observations if o.type != "GENERATION"]
    assert all(o.model is None and not o.usage for o in others), [o.name for o in others if o.model or o.usage]
    return gens


@pytest.mark.parametrize(("streaming", "like"), [(True, False), (False, False), (True, True)])
async def test_function_agent_with_tools_as_langfuse_shows_it(
    telemetry: otel_basic.Telemetry,
    langfuse_env: LangfuseReceiver,
    server: OpenAICompatServer,
    streaming: bool,
    like: bool,
) -> None:
    agent = support_agent(_llm(server, like), streaming=streaming)
    handler = agent.run(user_msg=QUESTION)
    deltas, tool_results = [], []
    async for event in handler.stream_events():
        if isinstance(event, AgentStream):
            deltas.append(event.delta)
        elif isinstance(event, ToolCallResult):
            tool_results.append(str(event.tool_output))
    result = await handler
    assert tool_results == [STATUS]
    assert str(result) == f"The tool says: {STATUS}."
    if streaming:
        assert "".join(deltas).endswith(f"The tool says: {STATUS}.")
        assert all(body["stream_options"] == {"include_usage": True} for body in server.requests)

    trace = _only_trace(_view(langfuse_env))
    assert trace.name == "FunctionAgent"
    assert trace.input["user_msg"] == QUESTION
    assert trace.output == f"The tool says: {STATUS}."  # the answer, not the AgentOutput dump
    [root] = [o for o in trace.observations if o.parent_id is None]
    assert (root.name, root.type) == ("FunctionAgent.run", "AGENT")
    first, second = _assert_one_generation_per_request(trace, server)
    assert first.input == [
        {"role": "system", "content": agent.system_prompt},
        {"role": "user", "content": QUESTION},
    ]
    [call] = first.output["tool_calls"]
    assert call["function"] == {"name": "ticket_status", "arguments": '{"ticket_number": 1234}'}
    assert second.input[-1] == {
        "role": "tool",
        "content": STATUS,
        "tool_call_id": call["id"],
    }
    assert second.output == {"role": "assistant", "content": f"The tool says: {STATUS}."}
    if streaming:
        assert all(
            g.completion_start_time is not None and g.completion_start_time < g.end_time for g in (first, second)
        )
    [tool] = [o for o in trace.observations if o.type == "TOOL"]
    assert tool.name == "FunctionTool.acall"


async def test_run_with_flush_trace_fields_on_every_span_and_not_in_input(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver, server: OpenAICompatServer
) -> None:
    result = await otel_basic.run_with_flush(
        support_agent(_llm(server)),
        user_msg=QUESTION,
        session_id="thread-7",
        user_id="u-9",
        tags=["beta"],
        metadata={"plan": "pro"},
    )
    assert "ticket 1234" in str(result)
    spans = langfuse_env.spans
    assert len(spans) > 10
    assert all(s.attributes.get("session.id") == "thread-7" for s in spans)
    assert all(s.attributes.get("user.id") == "u-9" for s in spans)
    trace = _only_trace(langfuse_view(spans))
    assert (trace.session_id, trace.user_id) == ("thread-7", "u-9")
    assert "beta" in trace.tags
    for value in [trace.input, *(o.input for o in trace.observations)]:
        text = json.dumps(value)
        assert "thread-7" not in text and "u-9" not in text and "session_id" not in text


class _Middle(Event):
    text: str


class _PlainFlow(Workflow):
    """Not a TracedWorkflow, steps not decorated: what a user writes without this project."""

    @step
    async def first(self, ctx: Context, ev: StartEvent) -> _Middle:
        return _Middle(text=str(ev.get("question")))

    @step
    async def second(self, ctx: Context, ev: _Middle) -> StopEvent:
        return StopEvent(result=ev.text.upper())


async def test_run_with_flush_trace_fields_on_a_plain_workflow(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    result = await otel_basic.run_with_flush(_PlainFlow(), question="hi", session_id="s-1", user_id="u-1")
    assert result == "HI"
    spans = langfuse_env.spans
    assert sorted(s.name for s in spans) == ["_PlainFlow.first", "_PlainFlow.run", "_PlainFlow.second"]
    assert all(s.attributes.get("session.id") == "s-1" and s.attributes.get("user.id") == "u-1" for s in spans)
    trace = _only_trace(langfuse_view(spans))
    assert trace.input == {"question": "hi"}


async def test_traced_workflow_session_argument_is_not_input(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    class Flow(otel_basic.TracedWorkflow):
        @step
        async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
            return StopEvent(result=str(ev.get("question")))

    assert await Flow().run(question="q", session_id="s-2", user_id="u-2") == "q"
    trace = _only_trace(_view(langfuse_env))
    assert (trace.session_id, trace.user_id) == ("s-2", "u-2")
    assert trace.input == {"question": "q"}
    assert all(o.input in ({"question": "q"}, None) for o in trace.observations)


# --- per-step flushing of undecorated steps ---------------------------------------------------


def _wait_for(receiver: LangfuseReceiver, name: str, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if any(s.name == name for s in receiver.spans):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("mode", ["background", "wait", "off"])
async def test_agent_steps_are_sent_as_they_end(
    langfuse_env: LangfuseReceiver, server: OpenAICompatServer, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
    monkeypatch.setenv("OTEL_BASIC_STEP_FLUSH", mode)
    otel_basic.configure()
    seen: dict[str, bool] = {}

    def ticket_status(ticket_number: int) -> str:
        """The status of a support ticket, by its number."""
        # While the agent is still running: has the finished LLM step (and its generation) arrived?
        seen["step"] = _wait_for(langfuse_env, "BaseWorkflowAgent.run_agent_step", 3 if mode != "off" else 0.5)
        seen["generation"] = any(s.name == "OpenAI.astream_chat" for s in langfuse_env.spans)
        return "open"

    from llama_index.core.agent.workflow import FunctionAgent

    agent = FunctionAgent(tools=[ticket_status], llm=_llm(server))
    await agent.run(user_msg=QUESTION)
    expected = mode != "off"
    assert seen == {"step": expected, "generation": expected}


async def test_flush_after_step_and_the_automatic_flush_kick_once_per_step(
    slow_batches: otel_basic.Telemetry, langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Decorated(Workflow):
        @step
        @otel_basic.flush_after_step
        async def first(self, ctx: Context, ev: StartEvent) -> _Middle:
            return _Middle(text="x")

        @step
        @otel_basic.flush_after_step
        async def second(self, ctx: Context, ev: _Middle) -> StopEvent:
            return StopEvent(result=ev.text)

    kicks: list[str] = []
    processor = slow_batches.processor
    assert processor is not None
    real_kick = slow_batches.kick

    def kick(*, at_once: bool = False) -> None:
        kicks.append("run end" if at_once else "kick")
        real_kick(at_once=at_once)

    monkeypatch.setattr(slow_batches, "kick", kick)
    monkeypatch.setattr(processor, "kick_when_ended", lambda span_id: kicks.append("kick_when_ended"))
    assert await Decorated().run() == "x"
    assert kicks == ["kick", "kick", "run end"]  # one per step, and the run's end


CHILD = textwrap.dedent(
    """
    import asyncio, os, sys, time
    import otel_basic
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.llms.openai import OpenAI

    def ticket_status(ticket_number: int) -> str:
        '''The status of a support ticket, by its number.'''
        time.sleep(1.0)  # the tool works a while, then the process dies: no exit handler runs
        os._exit(3)

    async def main() -> None:
        otel_basic.configure()
        llm = OpenAI(model="gpt-4o-mini", api_key="sk-test", api_base=sys.argv[1], max_retries=0)
        await FunctionAgent(tools=[ticket_status], llm=llm).run(user_msg=sys.argv[2])

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("mode", ["background", "off"])
def test_a_crash_mid_run_keeps_the_finished_steps(
    langfuse_env: LangfuseReceiver, server: OpenAICompatServer, mode: str
) -> None:
    env = subprocess_env(OTEL_BSP_SCHEDULE_DELAY="3600000", OTEL_BASIC_STEP_FLUSH=mode)
    proc = subprocess.run(
        [PYTHON, "-c", CHILD, server.base_url, QUESTION], env=env, capture_output=True, text=True, timeout=90
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    names = {s.name for s in langfuse_env.spans}
    if mode == "off":
        assert names == set()  # everything was still in the batch when the process died
    else:
        assert {"BaseWorkflowAgent.init_run", "BaseWorkflowAgent.run_agent_step", "OpenAI.astream_chat"} <= names
        [gen] = [
            o
            for t in langfuse_view(langfuse_env.spans).traces.values()
            for o in t.observations
            if o.type == "GENERATION"
        ]
        assert gen.usage["total"] == usage_for(server.requests[0])["total_tokens"]


# --- the email workflow and the demo on an OpenAI-compatible server ------------------------------


def _offline_reply(body: dict[str, Any]) -> Reply:
    """The email workflow's prompts answered by the offline model's rules, over real HTTP."""
    users = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
    return Reply(content=offline_answer(str(users[-1] if users else "")))


async def test_email_workflow_on_an_openai_compatible_server(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OpenAICompatServer(responder=_offline_reply) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-mini")
        otel_basic.configure()
        workflow = EmailWorkflow()
        assert isinstance(workflow.llm, OpenAILike)
        result = await otel_basic.run_with_flush(workflow, email_data=sample_email("question"))
        assert result.verification.ok, result
        trace = _only_trace(langfuse_view(langfuse_env.spans))
        gens = sorted(trace.generations, key=lambda g: g.start_time)
        assert len(gens) == len(server.requests) >= 3
        for gen, body in zip(gens, server.requests, strict=True):
            usage = server.usage(body)
            assert gen.usage == {
                "input": usage["prompt_tokens"],
                "output": usage["completion_tokens"],
                "total": usage["total_tokens"],
            }
            assert isinstance(gen.input, str) and gen.input.startswith("### TASK:")  # the prompt, once
            assert "llm.prompts" not in gen.attributes


def test_agent_demo_shows_generations_tokens_and_cost(langfuse_env: LangfuseReceiver, tmp_path: Any) -> None:
    proc = subprocess.run(
        [PYTHON, "-m", "basic.agent_demo"],
        env=subprocess_env(COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "local OpenAI-compatible stand-in" in out
    assert out.count("2 generations") == 2 and "at list price" in out and "first token" in out
    assert "ticket_status" in out
    trace_names = {t.name for t in langfuse_view(langfuse_env.spans).traces.values()}
    assert trace_names == {"FunctionAgent"}
