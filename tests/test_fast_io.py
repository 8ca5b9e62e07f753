"""fast_io: OpenInference no longer serializes workflow inputs we replace, nor LLM call arguments
whose ``input.value`` genai makes at the end, and the endpoint sees exactly the same attributes
(hello and email workflows, LLM and tool spans, hiding configs, calls without LlamaIndex's callback)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, CompletionResponse, MessageRole
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool
from openinference.instrumentation import TraceConfig
from openinference.instrumentation.llama_index import _handler

import otel_basic
from basic.email_workflow import EmailWorkflow
from basic.llm import OfflineLLM
from basic.samples import SAMPLE_EMAILS
from basic.workflow import HelloWorkflow
from otel_basic import fast_io, genai
from otel_basic.instrumentation import enable_fast_path
from otel_basic.testing import LangfuseReceiver
from tests.test_fast_path import _broad_workload, _collect_all, _EchoLLM, _instrumented, _lookup

_TIMING = re.compile(r'"duration_ms": [0-9.e-]+')


@pytest.fixture(autouse=True)
def _uninstalled() -> Iterator[None]:
    yield
    fast_io.uninstall()


async def _workload() -> None:
    await HelloWorkflow(timeout=10).run(name="Ada")
    await EmailWorkflow(llm=OfflineLLM()).run(email_data=SAMPLE_EMAILS[0], callback=None)


async def _spans(receiver: LangfuseReceiver, *, fast: bool) -> list[tuple[str, list[tuple[str, str]]]]:
    receiver.clear()
    otel_basic.configure()  # installs fast_io
    if not fast:
        fast_io.uninstall()  # OpenInference's own input serialization, for comparison
    await _workload()
    report = await otel_basic.aflush(timeout=10)
    assert report, report.summary()
    fast_io.uninstall()
    otel_basic.reset()
    return sorted(
        (s.name, sorted((k, _TIMING.sub('"duration_ms": T', str(v))) for k, v in s.attributes.items()))
        for s in receiver.spans
    )


async def test_endpoint_sees_the_same_attributes(langfuse_env: LangfuseReceiver) -> None:
    stock = await _spans(langfuse_env, fast=False)
    fast = await _spans(langfuse_env, fast=True)
    assert [name for name, _ in stock] == [name for name, _ in fast]
    assert stock == fast
    kinds = {dict(attrs).get("openinference.span.kind") for _, attrs in fast}
    assert {"CHAIN", "LLM", "TOOL"} <= kinds


async def test_workflow_inputs_are_not_serialized_twice(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    dumped: list[Any] = []
    original = _handler.safe_json_dumps

    def counting(obj: Any, *args: Any, **kwargs: Any) -> str:
        dumped.append(obj)
        return str(original(obj, *args, **kwargs))

    monkeypatch.setattr(_handler, "safe_json_dumps", counting)
    otel_basic.configure()
    fast_io.uninstall()

    def with_ctx() -> int:
        return sum(1 for obj in dumped if isinstance(obj, dict) and "ctx" in obj)

    await _workload()
    assert with_ctx() > 0, "without fast_io OpenInference serializes the workflow Context"
    dumped.clear()
    assert fast_io.install()
    await _workload()
    assert with_ctx() == 0
    # The email workflow's LLM calls: genai makes input.value from the prompt, so no JSON of the arguments.
    assert not any(isinstance(obj, dict) and "prompt" in obj for obj in dumped)


# --- LLM calls: the arguments' JSON deferred to the span's end, made only when genai made none ----


class _Undecorated(_EchoLLM):
    """``complete`` without LlamaIndex's callback: no prompt event, so genai has no prompt to show."""

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if kwargs.get("inner"):
            _Undecorated().complete(prompt + " (inner)")
        if kwargs.get("switch_off"):
            fast_io.defer_llm_inputs(False)  # while this call is in flight
        return CompletionResponse(text=prompt[::-1])


async def _llm_workload() -> None:
    await _broad_workload()  # streams, an error, tools, images, a workflow
    _Undecorated().complete("no callback ran", inner=True)
    messages = [ChatMessage(role=MessageRole.USER, content="with tools=")]
    MockFunctionCallingLLM(max_tokens=3).chat(messages, tools=[FunctionTool.from_defaults(fn=_lookup)])


@pytest.fixture
def counted_dumps(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    dumped: list[Any] = []
    original = _handler.safe_json_dumps

    def counting(obj: Any, *args: Any, **kwargs: Any) -> str:
        dumped.append(obj)
        return str(original(obj, *args, **kwargs))

    monkeypatch.setattr(_handler, "safe_json_dumps", counting)
    return dumped


_TIME = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+Z")


def _rows(memory: Any) -> list[str]:
    """The spans as ``_collect_all`` shows them, with the times of first tokens blanked."""
    return [_TIME.sub("<time>", repr(row)) for row in _collect_all(memory)]


def _call_arguments(dumped: list[Any]) -> int:
    return sum(1 for obj in dumped if isinstance(obj, dict) and ("prompt" in obj or "messages" in obj))


@pytest.mark.parametrize("hide", ["", "OPENINFERENCE_HIDE_INPUT_MESSAGES", "OPENINFERENCE_HIDE_INPUTS"])
@pytest.mark.parametrize("max_waiting", [4096, 1], ids=["bound-4096", "bound-1"])
async def test_llm_inputs_deferred_to_the_end_are_identical(
    hide: str, max_waiting: int, monkeypatch: pytest.MonkeyPatch, counted_dumps: list[Any]
) -> None:
    if hide:
        monkeypatch.setenv(hide, "true")
    monkeypatch.setattr(fast_io, "_MAX_DEFERRED", max_waiting)  # 1: the outer call is serialized at once
    with _instrumented(TraceConfig()) as memory:
        enable_fast_path()
        genai.install()
        try:
            fast_io.defer_llm_inputs(False)
            await _llm_workload()
            stock = _rows(memory)
            stock_dumps = _call_arguments(counted_dumps)
            counted_dumps.clear()
            assert fast_io.defer_llm_inputs(True)
            await _llm_workload()
            deferred = _rows(memory)
        finally:
            genai.uninstall()
    assert deferred == stock
    assert not fast_io._deferred, "every deferred input was settled"
    if not hide and max_waiting > 1:
        # Serialized now only: the two calls without a callback, and the three chats given tools=
        # (chat_with_tools's chat and the chat inside it, the explicit one), which keep the stock path.
        assert stock_dumps >= 9
        assert _call_arguments(counted_dumps) == 5


async def test_a_call_in_flight_when_deferral_stops_keeps_its_input(counted_dumps: list[Any]) -> None:
    with _instrumented(TraceConfig()) as memory:
        genai.install()
        try:
            fast_io.defer_llm_inputs(False)
            _Undecorated().complete("in flight", switch_off=True)
            stock = _collect_all(memory)
            assert fast_io.defer_llm_inputs(True)
            _Undecorated().complete("in flight", switch_off=True)  # switches deferral off mid-call
            deferred = _collect_all(memory)
        finally:
            genai.uninstall()
    inputs = [dict(row[4]).get("input.value") for row in deferred]
    assert inputs and all(value and "in flight" in value for value in inputs)
    assert deferred == stock
