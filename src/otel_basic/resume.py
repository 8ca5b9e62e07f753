"""A paused run's trace travels with its saved ``Context``: the resumed run joins it, the wait shows.

A LlamaIndex workflow can wait for an external event (``ctx.wait_for_event``: human in the loop),
be saved (``ctx.to_dict()``) and be continued later from ``Context.from_dict`` — in another process,
after a restart, or by WorkflowServer reloading an idle run from its store. The continued run's
spans would start a new trace. Here the run span's ``traceparent`` is kept in the context's own
state store, so it is saved and restored with everything else:

* :func:`remember_trace` (in a step, before the wait) stores the run span's trace context once per
  trace; a new run that reuses an old context's state stores its own.
* :func:`continued_trace` (around ``workflow.run(ctx=restored)``) makes the restored run's span a
  child of the original run span. Only a snapshot of a run that was still running is continued: a
  finished run's state carried into a new run starts a new trace.
* :func:`wait_started` / :func:`wait_ended` (around ``ctx.wait_for_event``) record when the wait
  began and, once the event arrived, add a span covering the wait (Langfuse ignores span events,
  so the wait is a span: start = when the wait began, end = when the run went on).

* :func:`waiter_id` (as ``ctx.wait_for_event(..., waiter_id=...)``) also carries the trace in the
  pending waiter, which is in the context's snapshot even when the state is not: WorkflowServer
  with a Sqlite or Postgres store keeps state outside the context it hands to ``Workflow.run()``
  when it reloads an idle run (after an idle timeout or a restart).

The state lives under the key :data:`STATE_KEY` of the default ``DictState`` store.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from openinference.instrumentation import get_attributes_from_context
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.trace import SpanContext, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from otel_basic import active
from otel_basic.propagation import context_from_carrier, span_context_of, traceparent_of
from otel_basic.workflows import trace_attributes

__all__ = [
    "STATE_KEY",
    "continued_trace",
    "remember_trace",
    "saved_trace",
    "wait_ended",
    "wait_started",
    "waiter_id",
]

_log = logging.getLogger("otel_basic")

STATE_KEY = "otel_basic_trace"
"""Key in the workflow context's store: ``{"traceparent", "tracestate"?, "attributes": {session.id,
user.id}, "waits": {name: start_ns}}``."""
TRACER_NAME = "otel_basic.resume"
WAITER_MARK = "@otel:"


def _run_span_context() -> SpanContext | None:
    """The run span, seen from inside a step: the parent of the step span that is current there."""
    current = trace.get_current_span()
    parent = getattr(current, "parent", None)  # SDK spans know their parent's span context
    if isinstance(parent, SpanContext) and parent.is_valid:
        return parent
    return span_context_of()


async def _state(ctx: Any) -> dict[str, Any]:
    value = await ctx.store.get(STATE_KEY, default=None)
    return dict(value) if isinstance(value, Mapping) else {}


async def remember_trace(ctx: Any) -> None:
    """Store the current run's trace context in ``ctx.store`` (call it from a step, before a wait).

    Idempotent within a trace: a resumed run (same trace) keeps the original run span as the parent
    of everything that follows. Never raises: a run is not failed for its telemetry.
    """
    try:
        run = _run_span_context()
        if run is None:
            return
        state = await _state(ctx)
        saved = context_from_carrier(state) if "traceparent" in state else None
        saved_span = span_context_of(saved) if saved is not None else None
        if saved_span is not None and saved_span.trace_id == run.trace_id:
            return
        await ctx.store.set(STATE_KEY, {**traceparent_of(run), "attributes": _run_attributes(), "waits": {}})
    except Exception:
        _log.debug("could not remember the run's trace", exc_info=True)


def _run_attributes() -> dict[str, str]:
    """session.id / user.id of the run (OpenInference's context attributes), kept for the resumed run."""
    try:
        found = dict(get_attributes_from_context())
    except Exception:  # a resumed run without session/user beats a failed step
        _log.debug("could not read the run's session/user for its resumed run", exc_info=True)
        return {}
    return {k: str(found[k]) for k in ("session.id", "user.id") if found.get(k)}


def _saved_state(ctx_or_data: Any) -> dict[str, Any] | None:
    """Our state from a ``Context`` or its ``to_dict()`` payload, if it is a snapshot of a run that
    was still running (a finished run's state reused by a new run belongs to a new trace).

    First the state store's copy; else (a WorkflowServer state store kept outside the snapshot)
    the ``traceparent`` carried by the id of a pending waiter (:func:`waiter_id`)."""
    data = ctx_or_data if isinstance(ctx_or_data, Mapping) else ctx_or_data.to_dict()
    if not data.get("is_running"):
        return None
    state = data.get("state") or {}
    values = state.get("state_data") or {}
    values = values.get("_data", values) if isinstance(values, Mapping) else {}
    value = values.get(STATE_KEY) if isinstance(values, Mapping) else None
    if isinstance(value, str):  # the JSON serializer stores each value as a JSON string
        value = json.loads(value)
    if isinstance(value, Mapping) and "traceparent" in value:
        return dict(value)
    for worker in (data.get("workers") or {}).values():
        for waiter in (worker.get("collected_waiters") or []) if isinstance(worker, Mapping) else []:
            marked = str(waiter.get("waiter_id") or "") if isinstance(waiter, Mapping) else ""
            if WAITER_MARK in marked:
                return {"traceparent": marked.rsplit(WAITER_MARK, 1)[1]}
    return None


def saved_trace(ctx_or_data: Any) -> OtelContext | None:
    """The saved run span (as a context to attach), from a ``Context`` or its ``to_dict()`` payload,
    when it is the snapshot of a run that was still running; else None. Synchronous: it is called
    where ``Workflow.run()`` is (which is not async)."""
    try:
        state = _saved_state(ctx_or_data)
        return context_from_carrier(state) if state and "traceparent" in state else None
    except Exception:
        _log.debug("could not read the saved trace context", exc_info=True)
        return None


@contextmanager
def continued_trace(ctx: Any) -> Iterator[None]:
    """Inside the block, the saved run span of ``ctx`` (a restored ``Context``) is the current
    parent: wrap ``workflow.run(ctx=ctx)`` so the continued run joins the original trace.
    Without a saved trace (or with ``ctx=None``) the block changes nothing."""
    try:
        state = _saved_state(ctx) if ctx is not None else None
    except Exception:
        _log.debug("could not read the saved trace context", exc_info=True)
        state = None
    saved = context_from_carrier(state) if state and "traceparent" in state else None
    if state is None or saved is None:
        yield
        return
    found = state.get("attributes")
    attributes: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    token = context_api.attach(saved)
    try:
        with trace_attributes(session_id=attributes.get("session.id"), user_id=attributes.get("user.id")):
            yield
    finally:
        context_api.detach(token)


async def waiter_id(ctx: Any, name: str) -> str:
    """A ``waiter_id`` for ``ctx.wait_for_event`` that carries the run's ``traceparent``.

    Remembers the trace (:func:`remember_trace`) and returns ``name@otel:<traceparent>``. Pending
    waiters are part of the context's snapshot even where the state store is not (WorkflowServer
    with a Sqlite or Postgres store reloading an idle run), so :func:`continued_trace` finds the
    trace there too. Stable across the step's replay (the remembered traceparent does not change
    within a trace). Without a trace, ``name`` itself."""
    await remember_trace(ctx)
    try:
        traceparent = (await _state(ctx)).get("traceparent")
    except Exception:
        _log.debug("could not read the remembered trace", exc_info=True)
        traceparent = None
    return f"{name}{WAITER_MARK}{traceparent}" if isinstance(traceparent, str) else name


async def wait_started(ctx: Any, name: str) -> None:
    """Record (once) that the run starts waiting for ``name``; call it right before the wait.

    The step is replayed when the awaited event arrives: the first call's time is kept."""
    try:
        state = await _state(ctx)
        waits = dict(state.get("waits") or {})
        if name in waits:
            return
        waits[name] = time.time_ns()
        await ctx.store.set(STATE_KEY, {**state, "waits": waits})
    except Exception:
        _log.debug("could not record the start of a wait", exc_info=True)


async def wait_ended(
    ctx: Any, name: str, attributes: Mapping[str, AttributeValue] | None = None, *, error: str | None = None
) -> None:
    """Add the span ``name`` for the wait recorded by :func:`wait_started`, ending now.

    Its parent is the run span saved by :func:`remember_trace` (the original run, when resumed),
    else the current run. ``wait.seconds`` holds the duration; ``attributes`` are added (say, the
    decision). ``error`` (a wait that timed out, say) marks the span as failed with that message,
    which Langfuse shows as an ERROR level. Without a recorded start nothing is added. Never raises."""
    try:
        state = await _state(ctx)
        waits = dict(state.get("waits") or {})
        started = waits.pop(name, None)
        if not isinstance(started, int):
            return
        await ctx.store.set(STATE_KEY, {**state, "waits": waits})
        now = time.time_ns()
        parent = context_from_carrier(state) if "traceparent" in state else None
        if parent is None:
            run = _run_span_context()
            parent = trace.set_span_in_context(trace.NonRecordingSpan(run)) if run is not None else None
        tracer = _tracer()
        span = tracer.start_span(
            name,
            context=parent,
            start_time=started,
            attributes={
                **(state.get("attributes") or {}),
                "wait.seconds": max(0, now - started) / 1e9,
                **(attributes or {}),
            },
        )
        span.set_status(Status(StatusCode.ERROR, error) if error else Status(StatusCode.OK))
        span.end(end_time=max(now, started))
    except Exception:
        _log.debug("could not record a wait span", exc_info=True)


def _tracer() -> trace.Tracer:
    telemetry = active.telemetry()
    if telemetry is not None and telemetry.enabled:
        return telemetry.tracer(TRACER_NAME)
    return trace.get_tracer(TRACER_NAME)
