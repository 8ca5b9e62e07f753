"""LlamaIndex Workflows: per-step flushing, clean run input/output, session/user, run-and-flush.

* Every workflow step's spans are sent as the step ends (:mod:`otel_basic.step_flush`), with no
  decorator. :func:`flush_after_step` (under ``@step``) stays for explicit use: with
  ``OTEL_BASIC_STEP_FLUSH=wait`` it also awaits delivery of the step's child spans before the step
  returns (off the loop); in ``background`` (default) the automatic kick is the only one;
  ``off`` leaves it to the batch timer and the final flush.
* :class:`WorkflowIOSpanHandler`: OpenInference puts the workflow's internal state dump on the
  run span's ``input.value`` and a ``StopEvent(...)`` repr on its ``output.value``; Langfuse shows
  those as the trace's input and output. This handler replaces them with the start event's fields
  and the result, as JSON, before the span ends, and names the trace after the workflow.
* :class:`TracedWorkflow`: a Workflow whose ``run()`` puts ``session.id`` / ``user.id`` (from
  :meth:`TracedWorkflow.trace_attributes`) on every span of the run.
* :func:`run_with_flush`: run any workflow with session/user/tags/metadata on every span (trace
  fields, never run input), then flush in ``finally`` (awaiting delivery off the event loop).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from opentelemetry import trace
from pydantic import BaseModel

from otel_basic import active, step_flush
from otel_basic.span_hooks import ObservingSpanHandler

_log = logging.getLogger("otel_basic")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

try:  # llama-index-workflows is a dependency, but keep otel_basic importable without it
    from workflows import Workflow as _Workflow
except ImportError:  # pragma: no cover
    _Workflow = object  # type: ignore[assignment,misc]


# --- per-step flush ------------------------------------------------------------------------


async def _step_finished(span: trace.Span) -> None:
    telemetry = active.telemetry()
    if telemetry is None or not telemetry.enabled or telemetry.processor is None:
        return
    mode = telemetry.settings.step_flush
    if mode == "off":
        return
    if not step_flush.installed():  # no automatic per-step kick: kick when this step's span ends
        ctx = span.get_span_context()
        kick_when_ended = getattr(telemetry.processor, "kick_when_ended", None)
        if kick_when_ended is not None and span.is_recording() and ctx.is_valid:
            kick_when_ended(ctx.span_id)
        else:
            telemetry.kick()
    if mode == "wait":
        report = await telemetry.aflush()
        if not report:
            _log.debug("step flush: %s", report.summary())


def flush_after_step(func: F) -> F:
    """Decorate a workflow step (below ``@step``) so its spans are sent when it ends."""

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        span = trace.get_current_span()
        try:
            return await func(*args, **kwargs)
        finally:
            try:
                await _step_finished(span)
            except Exception:  # telemetry must never fail a step
                _log.debug("per-step flush failed", exc_info=True)

    return wrapper  # type: ignore[return-value]


# --- nesting -------------------------------------------------------------------------------


@contextmanager
def under_current_span() -> Iterator[None]:
    """LlamaIndex calls inside this block become children of the current OpenTelemetry span.

    LlamaIndex parents its spans from its own record of open spans (the workflow step), not from
    the OpenTelemetry context, so an LLM call made inside your own span (a tool, say) would show up
    next to it instead of under it. Clearing LlamaIndex's active span id for the block lets
    OpenInference fall back to the OpenTelemetry context.
    """
    try:
        from llama_index_instrumentation.span import active_span_id
    except ImportError:  # pragma: no cover - llama-index is a dependency
        yield
        return
    token = active_span_id.set(None)
    try:
        yield
    finally:
        active_span_id.reset(token)


# --- session / user ------------------------------------------------------------------------


@contextmanager
def trace_attributes(
    session_id: str | None = None,
    user_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    tags: list[str] | None = None,
) -> Iterator[None]:
    """Put session/user/metadata/tags on every span started inside (and in tasks created inside)."""
    from openinference.instrumentation import using_attributes

    kwargs: dict[str, Any] = {}
    if session_id:
        kwargs["session_id"] = str(session_id)
    if user_id:
        kwargs["user_id"] = str(user_id)
    if metadata:
        kwargs["metadata"] = metadata
    if tags:
        kwargs["tags"] = tags
    with using_attributes(**kwargs):
        yield


class TracedWorkflow(_Workflow):
    """A Workflow whose runs carry ``session.id`` / ``user.id`` on every span.

    Override :meth:`trace_attributes` to derive them from the run's arguments (the email
    workflow uses the thread id and the sender). By default ``session_id`` / ``user_id`` run
    arguments are used when given.
    """

    def trace_attributes(self, **run_kwargs: Any) -> dict[str, Any]:
        return {"session_id": run_kwargs.get("session_id"), "user_id": run_kwargs.get("user_id")}

    def run(self, *args: Any, **kwargs: Any) -> Any:
        try:
            run_kwargs = dict(kwargs)
            if "start_event" in kwargs:  # WorkflowServer passes a built start event
                run_kwargs = {**event_fields(kwargs["start_event"]), **run_kwargs}
            attrs = self.trace_attributes(**run_kwargs)
        except Exception:  # bad input is the workflow's to report, not ours
            _log.debug("trace_attributes() failed; the run starts without trace fields", exc_info=True)
            attrs = {}
        kwargs = self._without_trace_fields(kwargs)
        with trace_attributes(**{k: v for k, v in attrs.items() if k in _ATTR_KEYS and v}):
            return super().run(*args, **kwargs)

    def _without_trace_fields(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Drop ``session_id``/``user_id`` run arguments the default mapping made trace fields.

        They are not input (issue 11): unless the start event declares such a field, or a subclass
        maps its own arguments, they do not reach the start event and the trace input.
        """
        if type(self).trace_attributes is not TracedWorkflow.trace_attributes:
            return kwargs
        try:
            declared = set(getattr(self.start_event_class, "model_fields", {}))
        except Exception:
            _log.debug("could not read the start event's fields; run arguments kept", exc_info=True)
            return kwargs
        return {k: v for k, v in kwargs.items() if k not in _DEFAULT_KEYS or k in declared}


_ATTR_KEYS = {"session_id", "user_id", "metadata", "tags"}
_DEFAULT_KEYS = {"session_id", "user_id"}


# --- run input / output on the run span ------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def event_fields(event: Any) -> dict[str, Any]:
    """The fields a start event was created with (typed fields and dynamic kwargs)."""
    fields: dict[str, Any] = {}
    if isinstance(event, BaseModel):
        try:
            fields.update(event.model_dump(mode="json"))
        except Exception:  # a field that is not JSON (a callback function): its repr will do
            _log.debug("%s is not all JSON: its fields are kept as reprs", type(event).__name__, exc_info=True)
            fields.update({k: _json_or_repr(v) for k, v in event.model_dump().items()})
        fields.pop("_data", None)
    data = getattr(event, "_data", None)
    if isinstance(data, dict):
        fields.update(data)
    return fields


def _json_or_repr(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _is_event(value: Any) -> bool:
    return isinstance(value, BaseModel) and type(value).__module__ != "builtins" and hasattr(value, "_data")


def _dumps(value: Any) -> str:
    def default(o: Any) -> Any:
        return _jsonable(o) if isinstance(o, BaseModel) else str(o)

    return json.dumps(_jsonable(value), default=default, ensure_ascii=False)


_AGENT_CLASSES = frozenset({"BaseWorkflowAgent", "AgentWorkflow"})


def _is_agent(instance: Any) -> bool:
    """A LlamaIndex agent workflow (``FunctionAgent``, ``ReActAgent``, ``AgentWorkflow``...)."""
    return any(
        c.__name__ in _AGENT_CLASSES and c.__module__.startswith("llama_index.core.agent")
        for c in type(instance).__mro__
    )


def _agent_answer(value: Any) -> Any:
    """An agent's result (``AgentOutput``) as its answer: the final assistant message's text.

    The whole ``AgentOutput`` dump (message blocks, tool calls, retry messages) is what the
    generations and tool spans already show; the trace's output is the answer a user got.
    """
    response = getattr(value, "response", None)
    if isinstance(value, BaseModel) and hasattr(value, "tool_calls") and isinstance(response, BaseModel):
        content = getattr(response, "content", None)
        if isinstance(content, str):
            return content
    return value


def _io_handler_class() -> type:
    class WorkflowIOSpanHandler(ObservingSpanHandler):
        """Sets clean input/output on OpenInference's run span just before it ends."""

        def _oi_span(self, id_: str) -> Any:
            from llama_index_instrumentation import get_dispatcher
            from openinference.instrumentation.llama_index._handler import _SpanHandler

            for handler in get_dispatcher().span_handlers:
                if isinstance(handler, _SpanHandler):
                    return handler.open_spans.get(id_)
            return None

        def _apply(self, id_: str, bound_args: Any, instance: Any, result: Any, has_result: bool) -> None:
            args = bound_args.arguments
            if isinstance(instance, _Workflow) and "start_event" in args:  # the run span
                event = args["start_event"]
            elif _is_event(args.get("ev")) and "ctx" in args:  # a step span: its event, not a Context repr
                event = args["ev"]
                if has_result and _is_event(result):
                    result = {"event": type(result).__name__, **event_fields(result)}
            else:
                return
            span = self._oi_span(id_)
            if span is None:
                return
            fields = event_fields(event)
            span["input.value"] = _dumps(fields)
            span["input.mime_type"] = "application/json"
            output: str | None = None
            if has_result:
                value = _agent_answer(getattr(result, "result", result))
                output = value if isinstance(value, str) else _dumps(value)
                span["output.value"] = output
                span["output.mime_type"] = "text/plain" if isinstance(value, str) else "application/json"
            if "start_event" in args and _is_agent(instance):
                span._span_kind = "AGENT"  # Langfuse shows the run as an agent (its agent graph)
            otel_span = getattr(span, "_otel_span", None)
            parent = getattr(otel_span, "parent", 1) if otel_span is not None else 1
            if "start_event" in args and parent is None:
                span["langfuse.trace.name"] = type(instance).__name__
            elif "start_event" in args and getattr(parent, "is_remote", False):
                # First span of this process in a trace begun elsewhere (an HTTP caller, a resumed
                # run): Langfuse takes the trace's name/input/output from trace-level attributes.
                span["langfuse.trace.name"] = type(instance).__name__
                if fields:  # a resumed run has no start event: keep the trace's original input
                    span["langfuse.trace.input"] = _dumps(fields)
                if output is not None:
                    span["langfuse.trace.output"] = output

        def span_enter(
            self,
            id_: str,
            bound_args: Any,
            instance: Any = None,
            parent_id: str | None = None,
            tags: Any = None,
            **kwargs: Any,
        ) -> None:
            return None

        def span_exit(self, id_: str, bound_args: Any, instance: Any = None, result: Any = None, **kwargs: Any) -> None:
            try:
                self._apply(id_, bound_args, instance, result, True)
            except Exception:
                _log.debug("run span input/output rewrite failed", exc_info=True)

        def span_drop(
            self,
            id_: str,
            bound_args: Any,
            instance: Any = None,
            err: BaseException | None = None,
            **kwargs: Any,
        ) -> None:
            try:
                self._apply(id_, bound_args, instance, None, False)
            except Exception:
                _log.debug("run span input rewrite failed", exc_info=True)

    return WorkflowIOSpanHandler


def install_io_handler() -> None:
    """Put the IO handler first among the root dispatcher's span handlers (idempotent).

    First, because handlers run in order and OpenInference's ends the span in its exit hook.
    """
    from llama_index_instrumentation import get_dispatcher

    dispatcher = get_dispatcher()
    if any(type(h).__name__ == "WorkflowIOSpanHandler" for h in dispatcher.span_handlers):
        return
    dispatcher.span_handlers.insert(0, _io_handler_class()())


# --- run and flush -------------------------------------------------------------------------


async def run_with_flush(
    workflow: Any,
    *args: Any,
    flush_timeout: float | None = None,
    session_id: str | None = None,
    user_id: str | None = None,
    tags: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``workflow`` with ``args``/``kwargs``, return its result; flush in ``finally``.

    ``session_id``, ``user_id``, ``tags`` and ``metadata`` are trace fields: they go on every span
    of the run, for any workflow (an agent too), and are not passed to the workflow, so they are
    not part of its input. (A workflow whose start event needs them gets them as fields of an
    explicit ``start_event``.) The workflow's exception is re-raised unchanged; a flush problem is
    one warning, never an exception. The flush awaits delivery without blocking the event loop.
    """
    try:
        # The run's task is created inside the block, so every span of the run carries the fields.
        with trace_attributes(session_id=session_id, user_id=user_id, metadata=metadata, tags=tags):
            handler = workflow.run(*args, **kwargs)
        return await handler
    finally:
        telemetry = active.telemetry()
        if telemetry is not None and telemetry.enabled:
            report = await telemetry.aflush(flush_timeout)
            if not report:
                _log.warning("otel-basic: flush after %s: %s", type(workflow).__name__, report.summary())
