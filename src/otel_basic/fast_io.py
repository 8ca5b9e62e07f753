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
  OpenInference the prompt or the messages, and genai's fix makes ``input.value`` from them when the
  span ends (the JSON of ``self`` and the prompt was ~10% of the CPU we add per ``complete()``). The
  serialization is deferred, not dropped: the span's ``(instance, bound_args)`` wait here until
  :func:`settle` (genai's wrapper of ``_Span.end``) runs, and only a span that genai gave no
  ``input.value`` (no callback ran: a custom ``complete`` without LlamaIndex's decorator, a call that
  failed before it; or ``OPENINFERENCE_HIDE_INPUT_MESSAGES`` hid the messages) is serialized then,
  with OpenInference's own code. What differs from stock in that case: arguments the call mutated
  are shown as they are at its end. A call passing ``tools=`` keeps the stock path (OpenInference
  reads the tools here). At most :data:`_MAX_DEFERRED` spans wait; beyond that the oldest is
  serialized at once, as stock would have.

``otel_basic.configure`` installs both; ``tests/test_fast_io.py`` checks the endpoint sees the same
attributes with and without each rule.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

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
# The LLM methods LlamaIndex's callbacks wrap (their start event carries the prompt or the messages).
_LLM_CALLS = frozenset(
    ("complete", "acomplete", "stream_complete", "astream_complete", "chat", "achat", "stream_chat", "astream_chat")
)
_MAX_DEFERRED = 4096
_OTHER, _LLM, _FUNCTION_CALLING = 0, 1, 2
_kinds: dict[type, int] = {}  # an instance's class -> which of the three (isinstance on ABCs is slow)

_lock = threading.RLock()
_original: Callable[..., None] | None = None
_skip_workflows = False
_defer_llm = False
# span id -> (span, instance, bound_args) of an LLM call whose input waits for the span's end.
_deferred: dict[str, tuple[Any, Any, Any]] = {}


def replaced_by_io_handler(instance: Any, arguments: dict[str, Any]) -> bool:
    """Whether the IO handler rewrites this span's input (its own test: run span or step span)."""
    if isinstance(instance, _Workflow) and "start_event" in arguments:
        return True
    return "ctx" in arguments and _is_event(arguments.get("ev"))


def _llm_call(instance: Any, span_id: str, bound_args: Any) -> bool:
    """A LlamaIndex LLM call method (the span id is ``Class.method-<uuid>``) without ``tools=``."""
    if span_id.partition("-")[0].rpartition(".")[2] not in _LLM_CALLS:
        return False
    cls = instance.__class__
    kind = _kinds.get(cls)
    if kind is None:
        if len(_kinds) >= 1024:  # classes made at run time: bounded
            _kinds.clear()
        kind = _kinds[cls] = (
            _FUNCTION_CALLING
            if isinstance(instance, _FunctionCallingLLM)
            else (_LLM if isinstance(instance, _BaseLLM) else _OTHER)
        )
    # OpenInference reads ``tools`` of a function-calling LLM's call at the start: that call keeps its path.
    return kind == _LLM or (kind == _FUNCTION_CALLING and "tools" not in bound_args.kwargs)


def _io_handler_installed() -> bool:
    from llama_index_instrumentation import get_dispatcher

    return any(type(h).__name__ == "WorkflowIOSpanHandler" for h in get_dispatcher().span_handlers)


def _process_input(self: Any, instance: Any, bound_args: Any) -> None:
    original = _original
    if original is None:  # pragma: no cover - uninstalled while a span started
        return
    if _skip_workflows and replaced_by_io_handler(instance, bound_args.arguments):
        return
    if _defer_llm and _llm_call(instance, self.id_, bound_args):
        if len(_deferred) >= _MAX_DEFERRED:
            _serialize_oldest(original)
        _deferred[self.id_] = (self, instance, bound_args)
        return
    original(self, instance, bound_args)


def _serialize_oldest(original: Callable[..., None]) -> None:
    try:
        with _lock:
            oldest = next(iter(_deferred))
            span, instance, bound_args = _deferred.pop(oldest)
        original(span, instance, bound_args)
    except (StopIteration, KeyError, RuntimeError):  # emptied or changed by another thread meanwhile
        _log.debug("fast_io: the oldest deferred input was settled meanwhile")


def settle(span: Any) -> None:
    """At an LLM span's end, after genai's fix: serialize the deferred input if nothing replaced it."""
    entry = _deferred.pop(span.id_, None)
    if entry is None or _INPUT_VALUE in span._attributes or _original is None:
        return
    try:
        _original(span, entry[1], entry[2])
    except Exception:  # OpenInference's own code; telemetry must never break the app's LLM call
        _log.debug("fast_io: deferred input not serialized", exc_info=True)


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
    """Switch the LLM rule (genai's install and uninstall do); False when it cannot apply.

    Switching it off serializes every input still waiting, so no span loses its ``input.value``."""
    global _defer_llm
    with _lock:
        if on:
            if not _patch():
                return False
            _defer_llm = True
            return True
        _defer_llm = False
        waiting = list(_deferred.values())
        _deferred.clear()
        original = _original
        _unpatch_if_unused()
    if original is not None:
        for span, instance, bound_args in waiting:
            try:
                original(span, instance, bound_args)
            except Exception:  # OpenInference's own code; never the app's problem
                _log.debug("fast_io: deferred input not serialized", exc_info=True)
    return True
