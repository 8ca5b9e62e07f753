"""The LLM-span fast path must change nothing but speed.

``otel_basic.instrumentation.enable_fast_path()`` caches OpenInference's ``_detect_llm_provider`` /
``_detect_llm_system`` per LLM class. These tests run the same LLM calls with the stock functions and
with the cache and require the exported attributes to be identical, key for key and value for value,
including the class-name fallback (``...OpenAI...``, ``Azure``, ``Anthropic``, ``Gemini``). They also
check that the stock function really runs once per class and that ``disable_fast_path()`` puts the
originals back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from openinference.instrumentation.llama_index import LlamaIndexInstrumentor, _handler
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from basic.llm import OfflineLLM, format_email, triage_prompt
from basic.samples import sample_email
from otel_basic.instrumentation import disable_fast_path, enable_fast_path

DETECTORS = ("_detect_llm_provider", "_detect_llm_system")


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
    """OpenInference on a private provider, stock detectors to start with; everything undone after."""
    disable_fast_path()  # another test's configure() may have left it on
    instrumentor = LlamaIndexInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield memory
    finally:
        instrumentor.uninstrument()
        disable_fast_path()
        provider.shutdown()


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
