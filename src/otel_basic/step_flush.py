"""Per-step flushing for any LlamaIndex workflow, agents included, without decorating its steps.

A crash mid-run must not lose the steps that already finished. ``@flush_after_step`` only works on
steps written for this project; an agent's steps (``FunctionAgent``, ``AgentWorkflow``) or any
user workflow would otherwise send everything at the end. This span handler sits on LlamaIndex's
root dispatcher, after OpenInference's handler: when a workflow step's span ends (normally or by
an exception), OpenInference has just ended the OpenTelemetry span, and the handler asks the
export worker to send, without waiting (``OTEL_BASIC_STEP_FLUSH=background`` and ``wait``;
``off`` turns it off). A step's kick lingers (``OTEL_BASIC_EXPORT_LINGER_MS``) so the steps ending
meanwhile share one request; the run's own end (normally nothing more of the run will come) sends at
once, or, if an export started less than a linger ago, when that linger has passed: its last step and run
span are at the endpoint a round trip later, and back-to-back runs still share requests. ``wait``
additionally awaits delivery only in steps decorated with ``@flush_after_step``, the one place
that can await.

A step span is recognised by its parent: a span whose parent is a workflow's run span (the span
of a ``Workflow`` instance with a ``start_event`` argument). That needs no step parameter names
and holds for steps run in an executor too.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from llama_index_instrumentation import get_dispatcher

from otel_basic import active
from otel_basic.span_hooks import ObservingSpanHandler

_log = logging.getLogger("otel_basic")

try:  # llama-index-workflows is a dependency, but keep otel_basic importable without it
    from workflows import Workflow as _Workflow
except ImportError:  # pragma: no cover
    _Workflow = None  # type: ignore[assignment,misc]


def _is_run(bound_args: Any, instance: Any) -> bool:
    return _Workflow is not None and isinstance(instance, _Workflow) and "start_event" in bound_args.arguments


class StepFlushSpanHandler(ObservingSpanHandler):
    """Kicks the export worker when a workflow step's span ends (lingering) and when a run's span ends (sooner)."""

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.RLock()
        self._runs: set[str] = set()
        self._steps: set[str] = set()

    @property
    def open_step_count(self) -> int:
        return len(self._steps)

    def span_enter(
        self,
        id_: str,
        bound_args: Any,
        instance: Any = None,
        parent_id: str | None = None,
        tags: Any = None,
        **kwargs: Any,
    ) -> None:
        try:
            with self._guard:
                if _is_run(bound_args, instance):
                    self._runs.add(id_)
                elif parent_id is not None and parent_id in self._runs:
                    self._steps.add(id_)
        except Exception:
            _log.debug("step flush: span_enter failed", exc_info=True)

    def _ended(self, id_: str) -> None:
        with self._guard:
            if id_ in self._runs:
                self._runs.discard(id_)
                run = True
            elif id_ in self._steps:
                self._steps.discard(id_)
                run = False
            else:
                return
        telemetry = active.telemetry()
        if telemetry is not None and telemetry.enabled and telemetry.settings.step_flush != "off":
            telemetry.kick(at_once=run)

    def span_exit(self, id_: str, bound_args: Any, instance: Any = None, result: Any = None, **kwargs: Any) -> None:
        try:
            self._ended(id_)
        except Exception:  # telemetry must never fail a step
            _log.debug("step flush: span_exit failed", exc_info=True)

    def span_drop(
        self, id_: str, bound_args: Any, instance: Any = None, err: BaseException | None = None, **kwargs: Any
    ) -> None:
        try:
            self._ended(id_)
        except Exception:
            _log.debug("step flush: span_drop failed", exc_info=True)


def install() -> StepFlushSpanHandler:
    """Put the handler last among the root dispatcher's span handlers (idempotent).

    Last, so OpenInference (which ends the OpenTelemetry span in its own exit hook) runs first
    and the kick finds the step's span already queued. Called after every (re-)instrumentation.
    """
    dispatcher = get_dispatcher()
    existing = [h for h in dispatcher.span_handlers if isinstance(h, StepFlushSpanHandler)]
    handler = existing[0] if existing else StepFlushSpanHandler()
    for h in existing:
        dispatcher.span_handlers.remove(h)
    dispatcher.span_handlers.append(handler)
    return handler


def installed() -> bool:
    """True when step spans are flushed automatically (``@flush_after_step`` then only waits)."""
    return any(isinstance(h, StepFlushSpanHandler) for h in get_dispatcher().span_handlers)


def uninstall() -> None:
    dispatcher = get_dispatcher()
    for h in [h for h in dispatcher.span_handlers if isinstance(h, StepFlushSpanHandler)]:
        dispatcher.span_handlers.remove(h)
