"""The LLM-span fast path must change nothing but speed.

``otel_basic.instrumentation.enable_fast_path()`` caches OpenInference's ``_detect_llm_provider`` /
``_detect_llm_system`` per LLM class. These tests run the same LLM calls with the stock functions and
with the cache and require the exported attributes to be identical, key for key and value for value,
including the class-name fallback (``...OpenAI...``, ``Azure``, ``Anthropic``, ``Gemini``). They also
check that the stock function really runs once per class and that ``disable_fast_path()`` puts the
originals back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    ImageBlock,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool
from openinference.instrumentation import TraceConfig
from openinference.instrumentation.llama_index import LlamaIndexInstrumentor, _handler
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel
from workflows import Workflow, step
from workflows.events import Event, StartEvent, StopEvent

from basic.llm import OfflineLLM, format_email, triage_prompt
from basic.samples import sample_email
from otel_basic.instrumentation import disable_fast_path, enable_fast_path

DETECTORS = ("_detect_llm_provider", "_detect_llm_system")


class _Middle(Event):
    text: str


class _EchoLLM(CustomLLM):
    """A minimal LLM; subclasses differ only in their class name (what the fallback looks at)."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=f"echo-{type(self).__name__}")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=prompt[::-1])

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=prompt[::-1], delta=prompt[::-1])

        return gen()


class MyOpenAICompatibleLLM(_EchoLLM):
    """Provider "openai" by name only (llama-index-llms-openai is not a base class)."""


class CorpAzureOpenAIProxy(_EchoLLM):
    """Provider "azure", system "openai", by name."""


class AnthropicGatewayLLM(_EchoLLM):
    pass


class GeminiRouterLLM(_EchoLLM):
    pass


NAMED = (MyOpenAICompatibleLLM, CorpAzureOpenAIProxy, AnthropicGatewayLLM, GeminiRouterLLM)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """OpenInference on a private provider, stock to start with (another test's configure() may have
    left the fast path on); everything undone after."""
    with _instrumented(TraceConfig()) as memory:
        yield memory


async def _workload() -> None:
    email = sample_email("question")
    prompt = triage_prompt(format_email(email["sender"], email["subject"], email["body"]))
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="You triage emails."),
        ChatMessage(role=MessageRole.USER, content=prompt),
    ]
    offline = OfflineLLM()
    offline.complete(prompt)
    await offline.acomplete(prompt)
    offline.chat(messages)
    await offline.achat(messages)
    mock = MockLLM(max_tokens=4)
    mock.complete("hello")
    mock.chat(messages)
    await mock.acomplete("hello again")
    for cls in NAMED:
        cls().complete("which provider am I?")


def _collect(memory: InMemorySpanExporter) -> list[tuple[str, str, dict[str, Any]]]:
    spans = memory.get_finished_spans()
    memory.clear()
    return [(s.name, s.status.status_code.name, dict(s.attributes or {})) for s in spans]


async def test_attributes_identical_with_and_without_fast_path(exporter: InMemorySpanExporter) -> None:
    await _workload()
    stock = _collect(exporter)

    assert enable_fast_path()
    await _workload()
    first = _collect(exporter)  # fills the cache
    await _workload()
    cached = _collect(exporter)  # served from the cache

    assert len(stock) >= 8 + len(NAMED)
    assert first == stock
    assert cached == stock
    by_model = {attrs.get("llm.model_name"): attrs for _, _, attrs in stock if "llm.model_name" in attrs}
    # The class-name fallback was exercised (and kept) for every branch:
    assert by_model["echo-MyOpenAICompatibleLLM"]["llm.provider"] == "openai"
    assert by_model["echo-MyOpenAICompatibleLLM"]["llm.system"] == "openai"
    assert by_model["echo-CorpAzureOpenAIProxy"]["llm.provider"] == "azure"
    assert by_model["echo-CorpAzureOpenAIProxy"]["llm.system"] == "openai"
    assert by_model["echo-AnthropicGatewayLLM"]["llm.provider"] == "anthropic"
    assert by_model["echo-GeminiRouterLLM"]["llm.provider"] == "google"
    assert by_model["echo-GeminiRouterLLM"]["llm.system"] == "vertexai"
    # ...and "no provider" stays "no attribute" for the offline model.
    offline = by_model["offline-rules-1"]
    assert "llm.provider" not in offline and "llm.system" not in offline


async def test_stock_detector_runs_once_per_class(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, dict[str, int]] = {name: {} for name in DETECTORS}

    def counting(name: str, original: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        def detect(instance: Any) -> str | None:
            key = type(instance).__name__
            calls[name][key] = calls[name].get(key, 0) + 1
            return original(instance)

        return detect

    counters = {name: counting(name, getattr(_handler, name)) for name in DETECTORS}
    for name, fn in counters.items():
        monkeypatch.setattr(_handler, name, fn)

    assert enable_fast_path()
    for _ in range(3):
        await _workload()
    exporter.clear()

    expected = {"OfflineLLM", "MockLLM", *(cls.__name__ for cls in NAMED)}
    for name in DETECTORS:
        assert set(calls[name]) == expected, name
        assert all(count == 1 for count in calls[name].values()), calls[name]

    disable_fast_path()
    for name, fn in counters.items():  # disabling puts back exactly what was there before
        assert getattr(_handler, name) is fn


def test_enable_is_idempotent_and_disable_restores_originals(exporter: InMemorySpanExporter) -> None:
    originals = {name: getattr(_handler, name) for name in DETECTORS}
    for fn in originals.values():  # the fixture left the stock functions in place
        assert not hasattr(fn, "__wrapped__")
        assert fn.__module__ == _handler.__name__

    assert enable_fast_path()
    wrappers = {name: getattr(_handler, name) for name in DETECTORS}
    assert enable_fast_path()  # a second call must not wrap the wrapper
    for name in DETECTORS:
        current = getattr(_handler, name)
        assert current is wrappers[name]
        assert current is not originals[name]
        assert current.__wrapped__ is originals[name]

    disable_fast_path()
    for name in DETECTORS:
        assert getattr(_handler, name) is originals[name]
    disable_fast_path()  # harmless when already off
    for name in DETECTORS:
        assert getattr(_handler, name) is originals[name]


# --- the whole handler: every kind of span OpenInference makes, stock vs fast path ----------------


class _FailingLLM(_EchoLLM):
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise RuntimeError("the provider said no")


def _lookup(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


class _TwoSteps(Workflow):
    @step
    async def first(self, ev: StartEvent) -> _Middle:
        OfflineLLM().complete(str(ev.get("text", "")))
        return _Middle(text=str(ev.get("text", "")).upper())

    @step
    async def second(self, ev: _Middle) -> StopEvent:
        return StopEvent(result=ev.text[::-1])


async def _broad_workload() -> None:
    """Streams, async streams, an error, tools, images (one over the base64 limit), a workflow."""
    echo = _EchoLLM()
    for _ in echo.stream_complete("stream me"):
        pass
    mock = MockLLM(max_tokens=3)
    messages = [ChatMessage(role=MessageRole.USER, content="hello there")]
    for _ in mock.stream_chat(messages):
        pass
    async for _ in await mock.astream_chat(messages):
        pass
    with pytest.raises(RuntimeError):
        _FailingLLM().complete("fail please")
    tool = FunctionTool.from_defaults(fn=_lookup)
    caller = MockFunctionCallingLLM(max_tokens=5)
    caller.chat_with_tools([tool], user_msg="weather in Paris?")
    tool.call(city="Paris")
    big = "data:image/png;base64," + "A" * 40_000
    images = [
        ChatMessage(
            role=MessageRole.USER,
            blocks=[TextBlock(text="what is this?"), ImageBlock(url=big), ImageBlock(url="https://example.com/a.png")],
        )
    ]
    mock.chat(images)
    await _TwoSteps(timeout=10).run(text="step by step")


def _collect_all(memory: InMemorySpanExporter) -> list[tuple[Any, ...]]:
    spans = memory.get_finished_spans()
    memory.clear()
    names = {s.context.span_id: s.name for s in spans}
    return sorted(
        (
            (
                s.name,
                names.get(s.parent.span_id) if s.parent else None,
                s.status.status_code.name,
                s.status.description,
                sorted((k, _steady(v)) for k, v in (s.attributes or {}).items()),
                [(e.name, sorted(k for k in (e.attributes or {}))) for e in s.events],
            )
            for s in spans
        ),
        key=repr,  # rows may differ only where one holds None (no parent, no description)
    )


_RANDOM = re.compile(
    r"0x[0-9a-f]+|run_id\": \"\w+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}"
)


def _steady(value: Any) -> str:
    """The value with what differs between any two runs (addresses, uuids, random ids) blanked."""
    return _RANDOM.sub("<random>", repr(value))


@contextmanager
def _instrumented(config: TraceConfig) -> Iterator[InMemorySpanExporter]:
    """OpenInference with ``config`` on a private provider, stock to start with; undone after."""
    disable_fast_path()  # another test's configure() may have left it on
    instrumentor = LlamaIndexInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor.instrument(tracer_provider=provider, config=config)
    try:
        yield memory
    finally:
        instrumentor.uninstrument()
        disable_fast_path()
        provider.shutdown()


@pytest.mark.parametrize("hiding", [False, True], ids=["default-config", "hide-inputs-and-output-messages"])
async def test_every_span_kind_identical_with_and_without_fast_path(hiding: bool) -> None:
    with _instrumented(TraceConfig(hide_inputs=hiding, hide_output_messages=hiding)) as memory:
        await _broad_workload()
        stock = _collect_all(memory)
        assert enable_fast_path()
        await _broad_workload()
        fast = _collect_all(memory)
    assert len(stock) >= 12
    assert fast == stock
    flat = {k: v for row in stock for k, v in row[4]}
    assert any(k.startswith("llm.tools.") for k in flat) != hiding  # hidden with hide_inputs
    assert any(row[2] == "ERROR" and row[5] and row[5][0][0] == "exception" for row in stock)
    if not hiding:
        urls = [v for k, v in flat.items() if k.endswith("image.url")]
        assert urls and all(len(u) < 1000 for u in urls)  # the big one was redacted by OpenInference's limit


def test_spans_are_not_pydantic_models_on_the_fast_path(exporter: InMemorySpanExporter) -> None:
    """The light span is what OpenInference keeps while a call runs (the point of the fast path)."""
    seen: list[Any] = []

    class Peek(_EchoLLM):
        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            from llama_index_instrumentation import get_dispatcher

            handlers = [h for h in get_dispatcher().span_handlers if isinstance(h, _handler._SpanHandler)]
            seen.extend(span for h in handlers for span in h.open_spans.values())
            return CompletionResponse(text="ok")

    assert enable_fast_path()
    Peek().complete("look")
    assert seen and not any(isinstance(span, BaseModel) for span in seen)
    disable_fast_path()
    seen.clear()
    Peek().complete("look")
    assert seen and all(isinstance(span, _handler._Span) for span in seen)


def test_span_ids_ignore_the_apps_random_seed_and_differ_after_fork(exporter: InMemorySpanExporter) -> None:
    """What OpenInference's own id generator promises, kept without a system call per id."""
    import os
    import random

    assert enable_fast_path()
    ids = []
    for _ in range(2):
        random.seed(1234)  # an app that seeds the global generator must not repeat trace ids
        OfflineLLM().complete("ids please")
        span = exporter.get_finished_spans()[-1]
        ids.append((span.context.trace_id, span.context.span_id))
    assert ids[0] != ids[1]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids must not be the parent's next ids
        from openinference.instrumentation import _tracers

        os.write(write, str(_tracers.randbits(64)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    from openinference.instrumentation import _tracers

    child = int(os.read(read, 64))
    os.close(read)
    assert child != _tracers.randbits(64)


def test_no_system_call_for_ids_per_llm_call(exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each ``os.urandom`` on the app's thread hands the GIL to a waiting export thread (~15 µs of CPU
    each): LlamaIndex's span and event ids and OpenInference's trace ids come from the private
    generator on the fast path; UUIDs stay version-4 and distinct."""
    import os
    import uuid as uuid_module

    from llama_index_instrumentation import dispatcher

    calls = []
    real = os.urandom

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(os, "urandom", counting)
    llm = OfflineLLM()
    llm.complete("warm up")
    calls.clear()
    llm.complete("stock ids")
    assert len(calls) >= 4  # stock: dispatcher span id, two event ids, OpenInference's ids

    assert enable_fast_path()
    calls.clear()
    for _ in range(5):
        llm.complete("fast ids")
    assert calls == []
    made = [dispatcher.uuid.uuid4() for _ in range(1000)]
    assert len(set(made)) == 1000 and all(u.version == 4 and u.variant == uuid_module.RFC_4122 for u in made)
    assert len({span.context.span_id for span in exporter.get_finished_spans()}) == len(exporter.get_finished_spans())

    disable_fast_path()
    assert dispatcher.uuid is uuid_module
    calls.clear()
    llm.complete("stock again")
    assert len(calls) >= 4


async def test_workflow_run_ids_without_a_system_call_per_character(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workflow run id is ten ``secrets.choice`` characters, ten ``os.urandom`` calls (ten GIL hand-offs)
    stock. On the fast path they come from 1 KB kernel reads: same length and alphabet, uniform,
    distinct, and a forked child does not reuse the parent's bytes. ``disable`` restores ``secrets``;
    an app's own replacement is left alone."""
    import os
    import random
    import secrets
    import string

    from workflows import utils

    reads: list[int] = []
    real_os, real_random = os.urandom, random._urandom  # type: ignore[attr-defined]

    def counting(real: Callable[[int], bytes]) -> Callable[[int], bytes]:
        def read(n: int) -> bytes:
            reads.append(n)
            return real(n)

        return read

    monkeypatch.setattr(os, "urandom", counting(real_os))
    monkeypatch.setattr(random, "_urandom", counting(real_random))  # what ``secrets`` reads
    utils._nanoid()
    assert len(reads) >= 10

    assert enable_fast_path()
    reads.clear()
    made = [utils._nanoid() for _ in range(4000)]
    # 40,000 characters; 62 letters accept 248 of 256 byte values: about 41,300 bytes, 41 reads of 1 KB
    assert len(reads) <= 42 and set(reads) == {1024}
    alphabet = string.ascii_letters + string.digits
    assert len(set(made)) == 4000 and all(len(i) == 10 and set(i) <= set(alphabet) for i in made)
    counts = [sum(i.count(c) for i in made) for c in alphabet]
    expected = 40_000 / 62
    assert sum((n - expected) ** 2 / expected for n in counts) < 150  # chi-square, 61 dof: p < 1e-8 if uniform

    await _TwoSteps().run(text="warm")  # first-use setup elsewhere may read a seed once
    reads.clear()
    await _TwoSteps().run(text="x")  # whole runs: their ids, spans, events, an LLM call
    await _TwoSteps().run(text="y")
    assert reads in ([], [1024])
    assert len(exporter.get_finished_spans()) >= 6

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must not hand out the parent's next bytes
        os.write(write, utils._nanoid().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert child != utils._nanoid()

    disable_fast_path()
    assert utils.secrets is secrets
    pinned = type("Pinned", (), {"choice": staticmethod(lambda seq: seq[0])})()
    monkeypatch.setattr(utils, "secrets", pinned)  # an app's deterministic ids stay its own
    assert enable_fast_path()
    assert utils._nanoid() == "a" * 10
    disable_fast_path()
    assert utils.secrets is pinned


# --- what a hostile review found (each failed before its fix) -------------------------------------


class _AtRedacting(TraceConfig):
    """A config that masks in its own ``mask`` (OpenInference supports such subclasses)."""

    def mask(self, key: str, value: Any, *, externalize: bool = True) -> Any:
        value = super().mask(key, value, externalize=externalize)
        return value.replace("@", "[at]") if isinstance(value, str) else value


def _unnamed_tool_call_and_email() -> None:
    call = {"id": "c1", "function": {"arguments": "{}"}}  # no name: OpenInference yields a None value
    history = [
        ChatMessage(role=MessageRole.USER, content="write to bob@example.com"),
        ChatMessage(role=MessageRole.ASSISTANT, content="", additional_kwargs={"tool_calls": [call]}),
    ]
    MockLLM(max_tokens=2).chat(history)


@pytest.mark.parametrize("config", [TraceConfig(), _AtRedacting()], ids=["stock-config", "config-subclass"])
def test_config_subclass_masks_and_none_values_stay_unset(config: TraceConfig) -> None:
    with _instrumented(config) as memory:
        _unnamed_tool_call_and_email()
        stock = _collect_all(memory)
        assert enable_fast_path()
        _unnamed_tool_call_and_email()
        fast = _collect_all(memory)
    assert fast == stock
    values = {k: v for row in fast for k, v in row[4]}
    assert "None" not in values.values()
    if isinstance(config, _AtRedacting):  # its mask ran on the string values (llm.prompts is a tuple)
        assert "[at]example.com" in values["llm.input_messages.0.message.content"]
        assert not any("@example.com" in v for k, v in values.items() if k != "llm.prompts")


def test_a_later_patch_of_a_span_method_applies_to_light_spans(exporter: InMemorySpanExporter) -> None:
    """Like fast_io's patch of ``process_input``: installed after the fast path, it must still run."""
    assert enable_fast_path()
    original = vars(_handler._Span)["process_instance"]

    def process_instance(self: Any, instance: Any) -> None:
        self["patched.by"] = "later-patch"
        original.__get__(self, type(self))(instance)

    _handler._Span.process_instance = process_instance  # type: ignore[method-assign]
    try:
        MockLLM(max_tokens=2).complete("hi")
    finally:
        _handler._Span.process_instance = original  # type: ignore[method-assign]
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["patched.by"] == "later-patch"
    assert span.attributes["llm.model_name"]  # the original ran too
