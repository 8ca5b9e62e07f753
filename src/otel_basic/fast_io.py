"""Skip OpenInference's JSON of workflow inputs that we replace anyway (issue 14).

OpenInference serializes every span's bound arguments to ``input.value`` when the span starts; for
a workflow run or step that is the ``Context`` object, the step's ``self`` and the event, walked by
its generic encoder (12-17% of the telemetry CPU of the email workflow). For exactly those spans
:class:`otel_basic.workflows.WorkflowIOSpanHandler` overwrites ``input.value`` before the span ends,
so the first serialization is thrown away. :func:`install` skips it for the spans the handler will
rewrite (the same test the handler uses) and leaves every other span (LLM calls, tools, retrievers)
alone. It installs only when the handler is in place; :func:`uninstall` restores the original.

``otel_basic.configure`` installs it right after the IO handler; ``tests/test_fast_io.py`` checks
the endpoint sees the same attributes with and without it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from otel_basic.workflows import _is_event

try:  # the same class otel_basic.workflows tests against
    from workflows import Workflow as _Workflow
except ImportError:  # pragma: no cover
    _Workflow = object  # type: ignore[assignment,misc]

_lock = threading.RLock()
_original: Callable[..., None] | None = None


def replaced_by_io_handler(instance: Any, arguments: dict[str, Any]) -> bool:
    """Whether the IO handler rewrites this span's input (its own test: run span or step span)."""
    if isinstance(instance, _Workflow) and "start_event" in arguments:
        return True
    return "ctx" in arguments and _is_event(arguments.get("ev"))


def _io_handler_installed() -> bool:
    from llama_index_instrumentation import get_dispatcher

    return any(type(h).__name__ == "WorkflowIOSpanHandler" for h in get_dispatcher().span_handlers)


def install() -> bool:
    """Patch OpenInference's ``_Span.process_input`` (idempotent); False when it cannot apply."""
    global _original
    try:
        from openinference.instrumentation.llama_index import _handler
    except ImportError:  # pragma: no cover - openinference is a dependency
        return False
    span_cls = getattr(_handler, "_Span", None)
    original = getattr(span_cls, "process_input", None)
    if span_cls is None or original is None or not _io_handler_installed():
        return False
    with _lock:
        if _original is not None:
            return True
        _original = original

        def process_input(self: Any, instance: Any, bound_args: Any) -> None:
            if replaced_by_io_handler(instance, bound_args.arguments):
                return
            original(self, instance, bound_args)

        process_input.__wrapped__ = original  # type: ignore[attr-defined]
        span_cls.process_input = process_input
    return True


def uninstall() -> None:
    global _original
    from openinference.instrumentation.llama_index import _handler

    with _lock:
        if _original is not None:
            _handler._Span.process_input = _original  # type: ignore[method-assign]
            _original = None
