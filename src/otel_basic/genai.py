"""One right generation per LLM call, fixed on OpenInference's span just before it ends.

OpenInference's LlamaIndex handler types every span of an LLM object as LLM, which Langfuse shows
as a generation. For an agent on a chat model that is wrong in four ways (issue 16); each is
fixed here, at the source, so every exporter (Langfuse, a collector, the file) gets the same span:

* **Helper spans are not generations.** ``OpenAI._prepare_chat_with_tools``,
  ``get_tool_calls_from_response``, ``predict``/``structured_predict`` wrappers and the outer
  span of a call that delegates to another LLM call (``achat`` → ``chat`` → ``complete``) send no
  request of their own. Langfuse would estimate usage for them and multiply the cost. A span of an
  LLM object is a generation only when LlamaIndex's LLM callback ran on it (it has the call's
  messages or prompt) and no LLM call ran inside it; every other one becomes a CHAIN without
  model or usage.
* **A streamed call ends when its stream is consumed**, not when the generator is created, and
  its first chunk sets ``langfuse.observation.completion_start_time`` (time to first token).
* **Readable input and output**: ``input.value`` becomes the chat messages as JSON (roles,
  contents, tool calls, tool results) or the prompt of a ``complete`` call, stored once (no
  ``llm.prompts`` copy); ``output.value`` becomes the assistant message with its tool calls.
  What ``OPENINFERENCE_HIDE_*`` hides in the message attributes stays hidden here too.
* **Streamed usage**: llama-index's ``OpenAI`` (and ``OpenAILike``, ``AzureOpenAI``, its
  subclasses) never asks for ``stream_options.include_usage``, so streams carry no token counts.
  While telemetry is enabled and ``OTEL_BASIC_STREAM_USAGE`` is true (default), a streaming
  request asks for them unless the app set ``stream_options`` itself. ``OpenAIResponses`` streams
  its usage where OpenInference does not look (``additional_kwargs["usage"]``); it is read from
  there (:class:`NestedUsageEventHandler`).

All of it is one wrapper around ``_Span.end`` (every way a span ends goes through it), one
around ``OpenAI._get_model_kwargs`` and one event handler; :func:`install` is idempotent and
:func:`uninstall` restores all three. Since ``input.value`` of an LLM call is made here, OpenInference's
JSON of the call's arguments at its start is deferred to this end (:func:`otel_basic.fast_io.settle`)
and only made when nothing here replaced it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMCompletionEndEvent
from llama_index_instrumentation import get_dispatcher
from llama_index_instrumentation.event_handlers.base import BaseEventHandler
from openinference.instrumentation import TraceConfig
from openinference.instrumentation.config import mask_without_externalization
from openinference.instrumentation.llama_index import _handler
from openinference.semconv.trace import (
    ImageAttributes,
    MessageAttributes,
    MessageContentAttributes,
    OpenInferenceMimeTypeValues,
    OpenInferenceSpanKindValues,
    SpanAttributes,
    ToolCallAttributes,
)

from otel_basic import active, fast_io

_log = logging.getLogger("otel_basic")

COMPLETION_START_TIME = "langfuse.observation.completion_start_time"
LLM = OpenInferenceSpanKindValues.LLM.value
CHAIN = OpenInferenceSpanKindValues.CHAIN.value
JSON = OpenInferenceMimeTypeValues.JSON.value
TEXT = OpenInferenceMimeTypeValues.TEXT.value
INPUT_VALUE = SpanAttributes.INPUT_VALUE
INPUT_MIME_TYPE = SpanAttributes.INPUT_MIME_TYPE
OUTPUT_VALUE = SpanAttributes.OUTPUT_VALUE
OUTPUT_MIME_TYPE = SpanAttributes.OUTPUT_MIME_TYPE
INPUT_MESSAGES = SpanAttributes.LLM_INPUT_MESSAGES
OUTPUT_MESSAGES = SpanAttributes.LLM_OUTPUT_MESSAGES
PROMPTS = SpanAttributes.LLM_PROMPTS
# What makes a span a generation in Langfuse's eyes (model, usage, cost); a helper span loses them.
_GENERATION_KEYS = (
    SpanAttributes.LLM_MODEL_NAME,
    SpanAttributes.LLM_INVOCATION_PARAMETERS,
    SpanAttributes.LLM_PROVIDER,
    SpanAttributes.LLM_SYSTEM,
)
_GENERATION_PREFIXES = ("llm.token_count.", SpanAttributes.LLM_TOOLS + ".", COMPLETION_START_TIME)
_STALE_STREAM_SECONDS = 60.0  # OpenInference's sweeper ends a stream idle this long

_lock = threading.RLock()
_originals: dict[str, Any] = {}
_config: TraceConfig | None = None
_wrappers: set[str] = set()  # ids of LLM spans an LLM call ran inside (cleared as each ends)


# --- the messages, as Langfuse shows chat input/output ----------------------------------------


def _indexed(attrs: Mapping[str, Any], prefix: str) -> dict[int, dict[str, Any]]:
    """``{i: {rest: value}}`` for the keys ``<prefix>.<i>.<rest>``."""
    head = prefix + "."
    found: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if key.startswith(head):
            index, _, rest = key[len(head) :].partition(".")
            if index.isdigit() and rest:
                found.setdefault(int(index), {})[rest] = value
    return found


def _message(flat: Mapping[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": flat.get(MessageAttributes.MESSAGE_ROLE, "user")}
    content: Any = flat.get(MessageAttributes.MESSAGE_CONTENT)
    if content is None:
        parts = []
        for part in (v for _, v in sorted(_indexed(flat, MessageAttributes.MESSAGE_CONTENTS).items())):
            kind = part.get(MessageContentAttributes.MESSAGE_CONTENT_TYPE)
            url = part.get(f"{MessageContentAttributes.MESSAGE_CONTENT_IMAGE}.{ImageAttributes.IMAGE_URL}")
            if url is not None:
                parts.append({"type": "image_url", "image_url": {"url": url}})
            elif kind in (None, "text"):
                parts.append({"type": "text", "text": part.get(MessageContentAttributes.MESSAGE_CONTENT_TEXT, "")})
        content = "".join(str(p["text"]) for p in parts) if all(p["type"] == "text" for p in parts) else parts
    message["content"] = content
    calls = []
    for call in (v for _, v in sorted(_indexed(flat, MessageAttributes.MESSAGE_TOOL_CALLS).items())):
        arguments = call.get(ToolCallAttributes.TOOL_CALL_FUNCTION_ARGUMENTS_JSON)
        calls.append(
            {
                "id": call.get(ToolCallAttributes.TOOL_CALL_ID),
                "type": "function",
                "function": {
                    "name": call.get(ToolCallAttributes.TOOL_CALL_FUNCTION_NAME),
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                },
            }
        )
    if calls:
        message["tool_calls"] = calls
    if tool_call_id := flat.get(MessageAttributes.MESSAGE_TOOL_CALL_ID):
        message["tool_call_id"] = tool_call_id
    if name := flat.get(MessageAttributes.MESSAGE_NAME):
        message["name"] = name
    return message


def messages(attrs: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """OpenInference's flattened ``<prefix>.<i>.message.*`` attributes as OpenAI-style messages."""
    return [_message(flat) for _, flat in sorted(_indexed(attrs, prefix).items())]


def _visible(attrs: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The ``prefix`` attributes as OpenInference will export them (its ``HIDE_*`` switches applied)."""
    config = _config or TraceConfig()
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if key.startswith(prefix) and (masked := mask_without_externalization(config, key, value)) is not None:
            out[key] = masked
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


# --- the fixes ---------------------------------------------------------------------------------


def _is_call(attrs: Mapping[str, Any]) -> bool:
    """LlamaIndex's LLM callback ran on this span: it carries the call's messages or prompt."""
    head = INPUT_MESSAGES + "."
    return PROMPTS in attrs or any(key.startswith(head) for key in attrs)


def _as_helper(span: Any) -> None:
    """Not an LLM call of its own: a CHAIN without model, usage or tools."""
    span._span_kind = CHAIN
    attrs = span._attributes
    for key in [k for k in attrs if k in _GENERATION_KEYS or k.startswith(_GENERATION_PREFIXES)]:
        del attrs[key]


def _readable_io(span: Any) -> None:
    attrs = span._attributes
    inputs = messages(_visible(attrs, INPUT_MESSAGES), INPUT_MESSAGES)
    if inputs:
        attrs[INPUT_VALUE] = _dumps(inputs)
        attrs[INPUT_MIME_TYPE] = JSON
    elif PROMPTS in attrs:
        prompts = [str(p) for p in attrs.pop(PROMPTS) or ()]
        attrs[INPUT_VALUE] = prompts[0] if len(prompts) == 1 else _dumps(prompts)
        attrs[INPUT_MIME_TYPE] = TEXT if len(prompts) == 1 else JSON
    outputs = messages(_visible(attrs, OUTPUT_MESSAGES), OUTPUT_MESSAGES)
    if outputs:
        attrs[OUTPUT_VALUE] = _dumps(outputs[0] if len(outputs) == 1 else outputs)
        attrs[OUTPUT_MIME_TYPE] = JSON


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def _timing(span: Any) -> None:
    """A streamed span ends now (its stream was consumed); its first chunk is the completion start."""
    if span._end_time is not None:
        idle = time.time() - span._last_updated_at
        # OpenInference set the end when the generator was created; the stream ends now, unless
        # its sweeper is ending an abandoned stream: then at the last chunk.
        span._end_time = int(span._last_updated_at * 1e9) if idle > _STALE_STREAM_SECONDS else None
    first = span._first_token_timestamp
    if first is not None:
        # As the Langfuse SDK writes it (a JSON string); the server reads both this and a bare ISO date.
        span._attributes[COMPLETION_START_TIME] = json.dumps(_iso(first))


def fix(span: Any) -> None:
    """Apply the fixes to an OpenInference ``_Span`` that is about to end (never raises)."""
    try:
        _timing(span)
        if span._span_kind != LLM:
            return
        wraps_call = span.id_ in _wrappers
        _wrappers.discard(span.id_)
        if wraps_call or not _is_call(span._attributes):
            _as_helper(span)
            _readable_io(span)  # a wrapper's messages or prompt read like its call's, stored once
            return
        # The innermost call is the generation; LLM spans around it (achat → chat) are wrappers.
        parent = span._parent
        while parent is not None and parent._span_kind == LLM and parent.active:
            _wrappers.add(parent.id_)
            parent = parent._parent
        _readable_io(span)
    except Exception:  # telemetry must never break the app's LLM call
        _log.debug("generation fix failed", exc_info=True)


# --- streamed usage ------------------------------------------------------------------------------


def _stream_usage_wanted() -> bool:
    telemetry = active.telemetry()
    return telemetry is not None and telemetry.enabled and telemetry.settings.stream_usage


def _with_stream_usage(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    def _get_model_kwargs(self: Any, **kwargs: Any) -> dict[str, Any]:
        out = original(self, **kwargs)
        try:
            if out.get("stream") and "stream_options" not in out and _stream_usage_wanted():
                out["stream_options"] = {"include_usage": True}
        except Exception:
            _log.debug("stream usage option not set", exc_info=True)
        return out

    _get_model_kwargs.__wrapped__ = original  # type: ignore[attr-defined]
    return _get_model_kwargs


# --- usage that OpenInference does not find ----------------------------------------------------


def _oi_span(span_id: str) -> Any:
    for handler in get_dispatcher().span_handlers:
        if isinstance(handler, _handler._SpanHandler):
            return handler.open_spans.get(span_id) or handler._export_queue.find(span_id)
    return None


def _nested_usage(response: Any) -> Any:
    """``additional_kwargs["usage"]``: where ``OpenAIResponses`` puts a streamed call's usage."""
    extra = getattr(response, "additional_kwargs", None)
    return extra.get("usage") if isinstance(extra, Mapping) else None


class NestedUsageEventHandler(BaseEventHandler):
    """Token counts from ``response.additional_kwargs["usage"]`` when nothing else carries them.

    OpenInference reads ``raw.usage`` and top-level ``additional_kwargs`` keys. llama-index's
    ``OpenAIResponses`` (the Responses API) streams usage only in ``additional_kwargs["usage"]``
    (its ``raw`` is the last stream event), so those generations had no usage. Runs before
    OpenInference's handler, which ends a streamed span on this very event; OpenInference's own
    counts, when it finds any, overwrite these.
    """

    @classmethod
    def class_name(cls) -> str:
        return "NestedUsageEventHandler"

    def handle(self, event: Any, **kwargs: Any) -> Any:
        try:
            if isinstance(event, LLMChatEndEvent | LLMCompletionEndEvent) and event.span_id:
                usage = _nested_usage(event.response)
                span = _oi_span(event.span_id) if usage else None
                if span is not None and span.active:
                    for key, value in _handler._get_token_counts(usage):
                        span[key] = value
        except Exception:
            _log.debug("nested usage not read", exc_info=True)
        return event


# --- install -------------------------------------------------------------------------------------


def install() -> None:
    """Wrap ``_Span.end`` and, when llama-index's OpenAI is installed, its request kwargs (idempotent)."""
    global _config
    with _lock:
        _config = TraceConfig()  # reads OPENINFERENCE_HIDE_*, like the instrumentor's own config
        span_cls = _handler._Span
        if "_Span.end" not in _originals:
            original_end = span_cls.end
            _originals["_Span.end"] = original_end

            def end(self: Any, exception: BaseException | None = None) -> None:
                if isinstance(exception, GeneratorExit) and self._active:
                    # The app stopped reading a stream (``aclose()``, ``break``): not an error; what
                    # arrived (output, usage) is kept and the observation says why it is short.
                    self["langfuse.observation.status_message"] = "stream closed by the consumer before its end"
                    exception = None
                if self._active:
                    fix(self)
                fast_io.settle(self)  # the LLM input OpenInference did not serialize at the start
                original_end(self, exception)

            span_cls.end = end  # type: ignore[method-assign]
        fast_io.defer_llm_inputs(True)  # input.value is made here from the prompt or the messages
        dispatcher = get_dispatcher()
        if not any(isinstance(h, NestedUsageEventHandler) for h in dispatcher.event_handlers):
            dispatcher.event_handlers.insert(0, NestedUsageEventHandler())
        if "OpenAI._get_model_kwargs" not in _originals:
            try:  # optional dependency: the [openai] extra
                from llama_index.llms.openai import OpenAI
            except ImportError:
                return
            _originals["OpenAI._get_model_kwargs"] = original = OpenAI._get_model_kwargs
            OpenAI._get_model_kwargs = _with_stream_usage(original)  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore what :func:`install` wrapped."""
    with _lock:
        fast_io.defer_llm_inputs(False)  # before the end wrapper goes: it settles what waits
        dispatcher = get_dispatcher()
        dispatcher.event_handlers[:] = [
            h for h in dispatcher.event_handlers if not isinstance(h, NestedUsageEventHandler)
        ]
        if (end := _originals.pop("_Span.end", None)) is not None:
            _handler._Span.end = end  # type: ignore[method-assign]
        if (kwargs := _originals.pop("OpenAI._get_model_kwargs", None)) is not None:
            from llama_index.llms.openai import OpenAI

            OpenAI._get_model_kwargs = kwargs  # type: ignore[method-assign]
