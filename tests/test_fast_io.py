"""fast_io: OpenInference no longer serializes workflow inputs we replace, nor LLM call arguments
whose ``input.value`` genai makes at the end, and the endpoint sees exactly the same attributes
(hello and email workflows, LLM and tool spans, hiding configs, calls without LlamaIndex's callback)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, CompletionResponse, MessageRole
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool
from llama_index_instrumentation import get_dispatcher
from openinference.instrumentation import TraceConfig
from openinference.instrumentation.llama_index import LlamaIndexInstrumentor, _handler
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import otel_basic
from basic.email_workflow import EmailWorkflow
from basic.llm import OfflineLLM
from basic.samples import SAMPLE_EMAILS
from basic.workflow import HelloWorkflow
from otel_basic import fast_io, genai
from otel_basic.instrumentation import disable_fast_path, enable_fast_path
from otel_basic.testing import LangfuseReceiver
from tests.test_fast_path import _broad_workload, _collect_all, _EchoLLM, _instrumented, _lookup

_TIMING = re.compile(r'"duration_ms": ?[0-9.e-]+')  # JSON as written, or compact (masking parsed it)


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


@pytest.fixture
def counted_dumps(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    dumped: list[Any] = []
    original = _handler.safe_json_dumps

    def counting(obj: Any, *args: Any, **kwargs: Any) -> str:
        dumped.append(obj)
        return str(original(obj, *args, **kwargs))

    monkeypatch.setattr(_handler, "safe_json_dumps", counting)
    return dumped


async def test_endpoint_sees_the_same_attributes(langfuse_env: LangfuseReceiver) -> None:
    stock = await _spans(langfuse_env, fast=False)
    fast = await _spans(langfuse_env, fast=True)
    assert [name for name, _ in stock] == [name for name, _ in fast]
    assert stock == fast
    kinds = {dict(attrs).get("openinference.span.kind") for _, attrs in fast}
    assert {"CHAIN", "LLM", "TOOL"} <= kinds


async def test_workflow_inputs_are_not_serialized_twice(
    langfuse_env: LangfuseReceiver, counted_dumps: list[Any]
) -> None:
    dumped = counted_dumps
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
    """``complete`` without LlamaIndex's callback (no prompt event); its body changes its arguments."""

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        kwargs.get("opts", {}).update(temperature=0.0, api_key="added by the body")
        if kwargs.get("inner"):
            _Undecorated().complete(prompt + " (inner)")
        return CompletionResponse(text=prompt[::-1])


class _Uninstalling(_EchoLLM):
    """A callback-wrapped ``complete`` during which genai is uninstalled (as shutdown or reset do)."""

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        genai.uninstall()
        return CompletionResponse(text=prompt[::-1])


class _UndecoratedParent(_EchoLLM):
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        kwargs.get("opts", {}).update(api_key="added by the parent")
        return CompletionResponse(text=prompt[::-1])


class _DecoratedChild(_UndecoratedParent):
    """Its inner span (``super().complete``) carries the child's class name but wraps the parent's
    function, which has no callback and changes its arguments."""

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return super().complete(prompt, formatted=formatted, **kwargs)


class _Replaced(_EchoLLM):
    """Its ``complete`` is replaced at run time by a function with a span but without the callback."""


@get_dispatcher(__name__).span
def _replacement(self: Any, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
    kwargs.get("opts", {}).update(api_key="added by the replacement")
    return CompletionResponse(text=prompt)


def _replaced_after_first_call() -> None:
    original = _Replaced.complete
    _Replaced().complete("first")
    _Replaced.complete = _replacement  # type: ignore[method-assign]
    try:
        _Replaced().complete("second", opts={"temperature": 0.7})
    finally:
        _Replaced.complete = original  # type: ignore[method-assign]


def _stream_then_append() -> None:
    """The app appends to the history it passed before it reads the stream."""
    history = [ChatMessage(role=MessageRole.USER, content="first question")]
    stream = MockLLM(max_tokens=2).stream_chat(history)
    history.append(ChatMessage(role=MessageRole.USER, content="APPENDED later"))
    for _ in stream:
        pass


async def _llm_workload() -> None:
    await _broad_workload()  # streams, an error, tools, images, a workflow
    _Undecorated().complete("no callback ran", inner=True, opts={"temperature": 0.7})
    messages = [ChatMessage(role=MessageRole.USER, content="with tools=")]
    MockFunctionCallingLLM(max_tokens=3).chat(messages, tools=[FunctionTool.from_defaults(fn=_lookup)])
    _stream_then_append()
    # Over the SDK's 128-attribute limit: the oldest keys are dropped, so input.value's place decides.
    long_chat = [ChatMessage(role=MessageRole.USER, content=f"m{i}") for i in range(70)]
    MockLLM(max_tokens=2).chat(long_chat)
    _DecoratedChild().complete("super", opts={"temperature": 0.7})
    _replaced_after_first_call()


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
        # Serialized by OpenInference at the start now only: the two calls without a callback, the three chats
        # given tools= (chat_with_tools's chat, the chat inside it, the explicit one), the super() call into a
        # parent without the callback and the replaced complete(): they keep the stock path.
        assert stock_dumps >= 13
        assert _call_arguments(counted_dumps) == 7


async def test_a_call_in_flight_when_genai_is_uninstalled_keeps_its_input() -> None:
    rows = []
    with _instrumented(TraceConfig()) as memory:
        for defer in (False, True):
            genai.install()
            assert fast_io.defer_llm_inputs(defer)
            _Uninstalling().complete("in flight")  # its end is no longer genai's: OpenInference's JSON stays
            rows.append(_rows(memory))
    stock, deferred = rows
    assert deferred == stock
    assert len(deferred) == 1 and re.search(r"input\.value.{0,20}args.{0,10}in flight", deferred[0])
    assert not fast_io._deferred


async def test_a_call_starting_while_genai_is_uninstalled_is_not_left_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The call has passed the unlocked check when the uninstall runs: it must not wait for an end that
    no longer settles it."""
    checked, uninstalled = threading.Event(), threading.Event()
    deferrable = fast_io._deferrable

    def slow(*args: Any) -> bool:
        checked.set()
        uninstalled.wait(5)
        return deferrable(*args)

    monkeypatch.setattr(fast_io, "_deferrable", slow)
    with _instrumented(TraceConfig()) as memory:
        genai.install()
        call = threading.Thread(target=lambda: _EchoLLM().complete("racing"))
        call.start()
        assert checked.wait(5)
        genai.uninstall()
        uninstalled.set()
        call.join()
        rows = _rows(memory)
    assert len(rows) == 1 and "racing" in rows[0] and "input.value" in rows[0]
    assert not fast_io._deferred


def test_calls_that_are_not_recorded_leave_nothing_waiting() -> None:
    """Sampled out: OpenInference never ends a streamed span that is not recording, so nothing may wait."""
    disable_fast_path()
    instrumentor = LlamaIndexInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    instrumentor.instrument(tracer_provider=provider, config=TraceConfig())
    enable_fast_path()
    genai.install()
    try:
        for _ in _EchoLLM().stream_complete("sampled out"):
            pass
        _EchoLLM().complete("sampled out")
        assert not fast_io._deferred
    finally:
        genai.uninstall()
        instrumentor.uninstrument()
        disable_fast_path()
        provider.shutdown()
