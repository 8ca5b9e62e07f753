"""Which workflow run a block of code started, as a span context: the trace id a server hands back.

A server that starts a run for a request must tell the caller the run's trace id before (``/run``
returns after the run, ``/run-nowait`` right after it starts) without knowing the run's internals.
OpenInference creates the run span inside ``Workflow.run()``; a LlamaIndex span handler placed
after OpenInference's sees it right after it is created and records its span context in the sink
of the innermost :func:`observe_run_spans` block, found through a context variable (so concurrent
requests never see each other's runs). It also copies WorkflowServer's run and handler ids
(:data:`RUN_ID_TAGS`) onto the run span, which OpenInference does not export.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry.trace import SpanContext

from otel_basic.span_hooks import ObservingSpanHandler

_log = logging.getLogger("otel_basic")
RUN_ID_TAGS = ("llamaindex.run_id", "llamaindex.handler_id")
"""Instrument tags of a run (set by WorkflowServer) copied onto the run span as attributes."""
_sink: ContextVar[list[SpanContext] | None] = ContextVar("otel_basic_run_spans", default=None)

try:  # llama-index-workflows is a dependency, but keep otel_basic importable without it
    from workflows import Workflow as _Workflow
except ImportError:  # pragma: no cover
    _Workflow = None  # type: ignore[assignment,misc]


@contextmanager
def observe_run_spans() -> Iterator[list[SpanContext]]:
    """Yield a list that receives the span context of every workflow run started inside the block
    (in order), including runs whose tasks outlive it."""
    install()
    sink: list[SpanContext] = []
    token = _sink.set(sink)
    try:
        yield sink
    finally:
        _sink.reset(token)


def _openinference_span(id_: str) -> Any:
    from llama_index_instrumentation import get_dispatcher
    from openinference.instrumentation.llama_index._handler import _SpanHandler

    for handler in get_dispatcher().span_handlers:
        if isinstance(handler, _SpanHandler):
            return handler.open_spans.get(id_)
    return None


def _observer_class() -> type:
    class RunSpanObserver(ObservingSpanHandler):
        """Records run spans for :func:`observe_run_spans`; creates no span of its own."""

        def span_enter(
            self,
            id_: str,
            bound_args: Any,
            instance: Any = None,
            parent_id: str | None = None,
            tags: Any = None,
            **kwargs: Any,
        ) -> None:
            if _Workflow is None or not isinstance(instance, _Workflow):
                return
            if "start_event" not in bound_args.signature.parameters:  # not Workflow.run
                return
            try:
                otel_span = getattr(_openinference_span(id_), "_otel_span", None)
                if otel_span is None:
                    return
                tags = (bound_args.arguments.get("tags") or {}).get("instrument_tags") or {}
                for key in RUN_ID_TAGS:  # WorkflowServer's ids: find the trace of a handler or run
                    if isinstance(tags.get(key), str):
                        otel_span.set_attribute(key, tags[key])
                sink = _sink.get()
                if sink is not None and otel_span.get_span_context().is_valid:
                    sink.append(otel_span.get_span_context())
            except Exception:  # telemetry must never fail a run
                _log.debug("could not observe the run span", exc_info=True)

        def span_exit(self, *args: Any, **kwargs: Any) -> None:
            return None

        def span_drop(self, *args: Any, **kwargs: Any) -> None:
            return None

    return RunSpanObserver


def install() -> None:
    """Append the observer to the root dispatcher's span handlers (idempotent). Last, because
    OpenInference's handler must have created the span when the observer looks for it."""
    from llama_index_instrumentation import get_dispatcher

    handlers = get_dispatcher().span_handlers
    if handlers and type(handlers[-1]).__name__ == "RunSpanObserver":
        return  # the usual case: no change to a list other threads may be iterating
    existing = [h for h in handlers if type(h).__name__ == "RunSpanObserver"]
    for handler in existing:
        handlers.remove(handler)
    handlers.append(existing[0] if existing else _observer_class()())
