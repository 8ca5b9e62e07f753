"""Prototype (bench only, issue 14 lever c): an LLM-span handler that replaces OpenInference's for LLM calls.

What it keeps from OpenInference (imported, so the attribute values are computed by the same code):
``safe_json_dumps``/``_Encoder`` for ``input.value``, ``_extract_token_counts`` (called with a dict
as ``self``), ``_extract_finish_reason``, the provider/system detection, ``get_attributes_from_context``.
What it drops: the pydantic ``_Span`` model per span (private-attribute reads, ``_CurrentSpan``
proxy, the export queue), the ``singledispatchmethod`` event routing, the generic
``BaseSpanHandler.span_enter`` path with its lock; attributes go into one dict that is set once.

Scope: ``BaseLLM`` completion/chat spans only (``complete``/``acomplete``/``chat``/``achat``, not
streaming); anything else is ignored, so it is a measurement of what a lean LLM path would cost, not
a replacement of the instrumentor. ``bench/llm_span.py --variant lean`` measures it and checks that
its attributes equal OpenInference's for the same call.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index_instrumentation.span_handlers.base import BaseSpanHandler
from openinference.instrumentation import get_attributes_from_context, safe_json_dumps
from openinference.instrumentation.llama_index import _handler as oi
from openinference.instrumentation.llama_index._finish_reason import _extract_finish_reason
from opentelemetry import context as context_api
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import Status, StatusCode, Tracer, set_span_in_context
from pydantic import PrivateAttr

_OPEN: dict[str, tuple[Any, dict[str, Any], Any]] = {}  # span id -> (otel span, attributes, context token)
_LOCK = threading.Lock()


class LeanSpanHandler(BaseSpanHandler[Any]):
    """Dispatcher span handler: LLM spans only, attributes in one dict."""

    _tracer: Tracer = PrivateAttr()

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self._tracer = tracer

    @classmethod
    def class_name(cls) -> str:
        return "LeanSpanHandler"

    def span_enter(self, id_: str, bound_args: Any, instance: Any = None, parent_id: Any = None, **kw: Any) -> None:
        if not isinstance(instance, BaseLLM) or context_api.get_value(_SUPPRESS_INSTRUMENTATION_KEY):
            return
        span = self._tracer.start_span(id_.partition("-")[0], attributes=dict(get_attributes_from_context()))
        attrs: dict[str, Any] = {}
        if metadata := instance.metadata:
            attrs[oi.LLM_MODEL_NAME] = metadata.model_name
            attrs[oi.LLM_INVOCATION_PARAMETERS] = metadata.model_dump_json(exclude_unset=True)
        if provider := oi._detect_llm_provider(instance):
            attrs[oi.LLM_PROVIDER] = provider
        if system := oi._detect_llm_system(instance):
            attrs[oi.LLM_SYSTEM] = system
        attrs[oi.INPUT_VALUE] = safe_json_dumps(bound_args.arguments, cls=oi._Encoder)
        attrs[oi.INPUT_MIME_TYPE] = oi.JSON
        token = context_api.attach(set_span_in_context(span))
        with _LOCK:
            _OPEN[id_] = (span, attrs, token)

    def _finish(self, id_: str, err: BaseException | None) -> None:
        with _LOCK:
            item = _OPEN.pop(id_, None)
        if item is None:
            return
        span, attrs, token = item
        with contextlib.suppress(ValueError):
            token.var.reset(token)
        attrs[oi.OPENINFERENCE_SPAN_KIND] = oi.LLM
        if err is None:
            span.set_status(Status(StatusCode.OK))
        else:
            span.record_exception(err)
            span.set_status(Status(StatusCode.ERROR, f"{type(err).__name__}: {err}"))
        span.set_attributes(attrs)
        span.end()

    def span_exit(self, id_: str, bound_args: Any, instance: Any = None, result: Any = None, **kw: Any) -> None:
        self._finish(id_, None)

    def span_drop(self, id_: str, bound_args: Any, instance: Any = None, err: Any = None, **kw: Any) -> None:
        self._finish(id_, err)

    def new_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> None:
        return None

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> None:
        return None


class LeanEventHandler(BaseEventHandler):
    """Completion/chat start and end events of the LLM spans above."""

    def handle(self, event: BaseEvent, **kwargs: Any) -> Any:
        item = _OPEN.get(event.span_id) if event.span_id else None
        if item is None:
            return event
        attrs = item[1]
        if isinstance(event, LLMCompletionStartEvent):
            attrs[oi.LLM_PROMPTS] = [event.prompt]
        elif isinstance(event, LLMCompletionEndEvent):
            attrs[oi.OUTPUT_VALUE] = event.response.text
            if finish_reason := _extract_finish_reason(event.response):
                attrs[oi.LLM_FINISH_REASON] = finish_reason
            oi._Span._extract_token_counts(attrs, event.response)  # only does self[k] = v
        elif isinstance(event, LLMChatStartEvent):
            oi._Span._process_messages(attrs, oi.LLM_INPUT_MESSAGES, *event.messages)
        elif isinstance(event, LLMChatEndEvent) and event.response is not None:
            attrs[oi.OUTPUT_VALUE] = str(event.response)
            if finish_reason := _extract_finish_reason(event.response):
                attrs[oi.LLM_FINISH_REASON] = finish_reason
            oi._Span._process_messages(attrs, oi.LLM_OUTPUT_MESSAGES, event.response.message)
            oi._Span._extract_token_counts(attrs, event.response)
        return event

    @classmethod
    def class_name(cls) -> str:
        return "LeanEventHandler"


def install(tracer: Tracer) -> None:
    """Add the lean handlers to LlamaIndex's root dispatcher (OpenInference not instrumented)."""
    from llama_index_instrumentation import get_dispatcher

    dispatcher = get_dispatcher()
    dispatcher.add_span_handler(LeanSpanHandler(tracer))
    dispatcher.add_event_handler(LeanEventHandler())
