"""Skip OpenInference's JSON of span inputs that we replace anyway (issue 14).

OpenInference serializes every span's bound arguments to ``input.value`` when the span starts
(``_Span.process_input``). For two kinds of span that value is overwritten before the span ends, so
the first serialization is thrown away; this module owns the one wrapper of ``process_input`` that
avoids it, with one rule per kind:

* **Workflow runs and steps** (:func:`install`): the bound arguments are the ``Context``, the step's
  ``self`` and the event, walked by OpenInference's generic encoder (12-17% of the telemetry CPU of
  the email workflow), and :class:`otel_basic.workflows.WorkflowIOSpanHandler` rewrites
  ``input.value`` anyway. Skipped for the spans that handler rewrites (its own test); applies only
  while the handler is installed.
* **LLM calls** (:func:`defer_llm_inputs`, switched on by :mod:`otel_basic.genai`): for
  ``complete``/``chat`` and their async and streaming forms, LlamaIndex's LLM callback hands
  OpenInference the prompt or the messages before the method's body runs, and genai's fix makes
  ``input.value`` from them when the span ends (the JSON of ``self`` and the prompt was ~2% of the
  instructions we add per ``complete()``). The serialization is deferred, not dropped: the span's
  ``(instance, bound_args)`` wait here until :func:`settle` (genai's wrapper of ``_Span.end``), and
  only a span that genai gave no ``input.value`` (its call failed before the callback's start event)
  is serialized then, with OpenInference's own code. Placeholders hold ``input.value`` and
  ``input.mime_type`` in their stock places among the span's attributes (the SDK's attribute-count
  limit drops the oldest keys, so the place decides what survives on a long chat). Deferred only where
  the result is the stock one: a recorded span (a sampled-out stream is never ended by OpenInference);
  a method whose LlamaIndex callback wrapper is positively identified, looked up each call (a custom
  ``complete`` without it, or one replaced at run time, keeps the stock path: its body could change
  its arguments before the end); not a call of the same ``Class.method`` inside itself
  (``super().complete(...)``: the span names the instance's class but may wrap a parent's function
  without the callback); a chat only while ``OPENINFERENCE_HIDE_*`` leaves the input messages
  visible; a function-calling LLM's call given ``tools=`` keeps the stock path (OpenInference reads
  the tools here). At most :data:`_MAX_DEFERRED` spans wait; beyond that the oldest is serialized at once. The
  one window left: a span ending while deferral is switched off (``genai.uninstall``, at shutdown)
  may show the JSON of its arguments instead of genai's prompt: stock OpenInference's value, not a loss.

``otel_basic.configure`` installs both; ``tests/test_fast_io.py`` checks the endpoint sees the same
attributes with and without each rule.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from openinference.instrumentation import TraceConfig
from openinference.semconv.trace import SpanAttributes

from otel_basic.workflows import _is_event

try:  # the same class otel_basic.workflows tests against
    from workflows import Workflow as _Workflow
except ImportError:  # pragma: no cover
    _Workflow = object  # type: ignore[assignment,misc]

try:
    from llama_index.core.base.llms.base import BaseLLM as _BaseLLM
    from llama_index.core.llms.function_calling import FunctionCallingLLM as _FunctionCallingLLM
except ImportError:  # pragma: no cover - llama-index-core is a dependency
    _BaseLLM = _FunctionCallingLLM = ()  # type: ignore[assignment,misc]

_log = logging.getLogger("otel_basic")

_INPUT_VALUE = SpanAttributes.INPUT_VALUE
_INPUT_MIME_TYPE = SpanAttributes.INPUT_MIME_TYPE
_COMPLETIONS = frozenset(("complete", "acomplete", "stream_complete", "astream_complete"))
_CHATS = frozenset(("chat", "achat", "stream_chat", "astream_chat"))
# LlamaIndex's llm_completion_callback / llm_chat_callback wrappers: their start event, sent before the
# method's body runs, hands OpenInference the prompt or the messages.
_CALLBACK_WRAPPERS = frozenset(
    ("wrapped_llm_predict", "wrapped_async_llm_predict", "wrapped_llm_chat", "wrapped_async_llm_chat")
)
_MAX_DEFERRED = 4096
_STOCK, _DEFER, _DEFER_UNLESS_TOOLS = 0, 1, 2
# Keeps each key's place in the span's attributes until the end (the SDK's attribute-count limit drops
# the oldest keys, so the place matters). Not a valid attribute value: never exported (settle removes it).
_PENDING: Any = object()

_lock = threading.RLock()
_original: Callable[..., None] | None = None
_skip_workflows = False
_defer_llm = False
_defer_chats = False
# (class, method) -> (the function it resolved to, _STOCK / _DEFER / _DEFER_UNLESS_TOOLS)
_kinds: dict[tuple[type, str], tuple[Any, int]] = {}
# span id -> (span, instance, bound_args) of an LLM call whose input waits for the span's end.
_deferred: dict[str, tuple[Any, Any, Any]] = {}


def replaced_by_io_handler(instance: Any, arguments: dict[str, Any]) -> bool:
    """Whether the IO handler rewrites this span's input (its own test: run span or step span)."""
    if isinstance(instance, _Workflow) and "start_event" in arguments:
        return True
    return "ctx" in arguments and _is_event(arguments.get("ev"))


def _kind(cls: type, method: str, function: Any) -> int:
    """How a call of ``function`` (``cls.method``) is handled; deferred only where LlamaIndex's callback is
    positively identified (its wrapper is what the dispatcher's span wraps), so genai will have the prompt
    or the messages. Anything else (a custom ``complete`` without the callback, another llama-index
    version) keeps the stock path."""
    if method in _CHATS and not _defer_chats:
        return _STOCK
    if not issubclass(cls, _BaseLLM):
        return _STOCK
    code = getattr(getattr(function, "__wrapped__", None), "__code__", None)
    if code is None or code.co_name not in _CALLBACK_WRAPPERS:
        return _STOCK
    # OpenInference reads ``tools`` of a function-calling LLM's call at the start: such a call keeps its path.
    return _DEFER_UNLESS_TOOLS if issubclass(cls, _FunctionCallingLLM) else _DEFER


def _defined(cls: type, method: str) -> Any:
    """The function ``cls.method`` resolves to (looked up each call: a class may replace it at run time)."""
    for klass in cls.__mro__:
        found = klass.__dict__.get(method)
        if found is not None:
            return found
    return None


def _deferrable(span: Any, instance: Any, bound_args: Any) -> bool:
    """An LLM call whose ``input.value`` genai makes (the span id is ``InstanceClass.method-<uuid>``)."""
    name = span.id_.partition("-")[0]
    method = name.rpartition(".")[2]
    if (method not in _COMPLETIONS and method not in _CHATS) or not span._active:
        return False  # not an LLM call, or a span that is not recorded (sampled out: nothing to defer)
    cls = instance.__class__
    function = _defined(cls, method)
    cached = _kinds.get((cls, method))
    if cached is None or cached[0] is not function:
        if len(_kinds) >= 1024:  # classes made at run time: bounded
            _kinds.clear()
        cached = _kinds[cls, method] = (function, _kind(cls, method, function))
    kind = cached[1]
    if kind == _STOCK:
        return False
    parent = span._parent
    if parent is not None and parent.id_.partition("-")[0] == name:
        # ``super().complete(...)`` inside the call: the span's id names the instance's class, so this inner
        # span may wrap a parent class's function without the callback. The stock path, to be sure.
        return False
    return kind == _DEFER or "tools" not in bound_args.kwargs


def _io_handler_installed() -> bool:
    from llama_index_instrumentation import get_dispatcher

    return any(type(h).__name__ == "WorkflowIOSpanHandler" for h in get_dispatcher().span_handlers)


def _process_input(self: Any, instance: Any, bound_args: Any) -> None:
    original = _original
    if original is None:  # pragma: no cover - uninstalled while a span started
        return
    if _skip_workflows and replaced_by_io_handler(instance, bound_args.arguments):
        return
    if _defer_llm and _deferrable(self, instance, bound_args):
        with _lock:  # checked again: switching deferral off must not miss an entry made meanwhile
            if _defer_llm:
                if len(_deferred) >= _MAX_DEFERRED and (oldest := _pop_oldest()) is not None:
                    _serialize_locked(oldest)
                attributes = self._attributes
                attributes[_INPUT_VALUE] = attributes[_INPUT_MIME_TYPE] = _PENDING
                _deferred[self.id_] = (self, instance, bound_args)
                return
    original(self, instance, bound_args)


def _pop_oldest() -> tuple[Any, Any, Any] | None:
    """The oldest waiting entry (lock held), or None. A span's end settles without the lock when genai made
    its input (the common case), so an entry may go between looking and taking: then the next one."""
    while _deferred:
        try:
            return _deferred.pop(next(iter(_deferred)))
        except (KeyError, RuntimeError, StopIteration):
            continue
    return None


def _serialize_locked(entry: tuple[Any, Any, Any]) -> None:
    """OpenInference's own serialization of a deferred input, where nothing replaced it (lock held)."""
    span, instance, bound_args = entry
    if _original is not None and span._attributes.get(_INPUT_VALUE) is _PENDING:
        try:
            _original(span, instance, bound_args)
        except Exception:  # OpenInference's own code; telemetry must never break the app's LLM call
            _log.debug("fast_io: deferred input not serialized", exc_info=True)
    _drop_placeholders(span._attributes)


def _drop_placeholders(attributes: dict[str, Any]) -> None:
    for key in (_INPUT_VALUE, _INPUT_MIME_TYPE):
        if attributes.get(key) is _PENDING:
            del attributes[key]


def settle(span: Any) -> None:
    """At an LLM span's end, after genai's fix: serialize the deferred input if nothing replaced it."""
    attributes = span._attributes
    if attributes.get(_INPUT_VALUE) is not _PENDING:  # genai (or an event) made it: the common case
        _deferred.pop(span.id_, None)
        _drop_placeholders(attributes)
        return
    with _lock:
        entry = _deferred.pop(span.id_, None)
        if entry is not None:
            _serialize_locked(entry)
        _drop_placeholders(attributes)


def _patch() -> bool:
    """Put the wrapper in place (idempotent); False when OpenInference has no ``_Span.process_input``."""
    global _original
    try:
        from openinference.instrumentation.llama_index import _handler
    except ImportError:  # pragma: no cover - openinference is a dependency
        return False
    span_cls = getattr(_handler, "_Span", None)
    original = getattr(span_cls, "process_input", None)
    if span_cls is None or original is None:
        return False
    if _original is None:
        _original = original
        _process_input.__wrapped__ = original  # type: ignore[attr-defined]
        span_cls.process_input = _process_input
    return True


def _unpatch_if_unused() -> None:
    global _original
    if _skip_workflows or _defer_llm or _original is None:
        return
    from openinference.instrumentation.llama_index import _handler

    _handler._Span.process_input = _original  # type: ignore[method-assign]
    _original = None


def install() -> bool:
    """Skip the workflow-input JSON the IO handler replaces (idempotent); False when it cannot apply."""
    global _skip_workflows
    with _lock:
        if not _io_handler_installed() or not _patch():
            return False
        _skip_workflows = True
    return True


def uninstall() -> None:
    """OpenInference serializes workflow inputs again (the LLM rule, if on, stays)."""
    global _skip_workflows
    with _lock:
        _skip_workflows = False
        _unpatch_if_unused()


def defer_llm_inputs(on: bool) -> bool:
    """Switch the LLM rule (genai's install and uninstall do); False when it cannot apply. Chat calls
    are deferred only while ``OPENINFERENCE_HIDE_INPUTS`` / ``OPENINFERENCE_HIDE_INPUT_MESSAGES`` leave
    the input messages visible (read now, as genai and OpenInference read them): hidden, genai makes no
    ``input.value`` for a chat, and OpenInference's own, made at the start, stays.

    Switching it off serializes every input still waiting (as it is now), so no span loses its
    ``input.value``; no call started afterwards is deferred."""
    global _defer_llm, _defer_chats
    with _lock:
        _kinds.clear()
        if on:
            if not _patch():
                return False
            config = TraceConfig()
            _defer_llm, _defer_chats = True, not (config.hide_inputs or config.hide_input_messages)
            return True
        _defer_llm = False
        while (oldest := _pop_oldest()) is not None:
            _serialize_locked(oldest)
        _unpatch_if_unused()
    return True
