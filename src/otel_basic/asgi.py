"""ASGI middleware: a workflow run started by a request continues the caller's trace and says which.

* In: the request's ``traceparent`` (read through OpenTelemetry's global propagator) becomes the
  parent of what the app runs while it handles the request, so the run span is a child of the
  caller's span; without a valid ``traceparent`` the run starts a new trace. Nothing else of the
  caller's context is attached: not its baggage (the Langfuse SDK's span processor would stamp
  ``langfuse_*`` entries, e.g. environment, tags, metadata, trace name, on every span), not its
  ``tracestate``. Session and user named in the baggage (``session.id``/``user.id``,
  ``langfuse_session_id``/``langfuse_user_id``, validated) become run attributes; a value the
  workflow derives itself (the email workflow's thread and sender) wins over them.
  ``trust_traceparent=False`` ignores the caller's ``traceparent`` too: every run starts its own
  trace (for callers that must not attach runs to, and rename, traces of their choosing).
* Out: when the request started a recorded (sampled) run, the response carries ``traceresponse``
  (W3C Trace Context Level 2: the run span's trace id and span id), ``X-Trace-Id``, and, on the
  Langfuse route, ``X-Langfuse-Trace-Url`` (``{LANGFUSE_BASE_URL}/trace/{id}``, which Langfuse
  redirects to the trace page of the project that holds it; no API call is made on the request
  path). A run that is not recorded (the caller's sampled flag was off) gets only ``traceresponse``,
  whose flags say so: no id or link of a trace that will never exist.

There is no span for the HTTP request itself: the run span stays the first span of this service
in the trace, so Langfuse's trace name, input and output are the run's (see
``otel_basic.workflows``: a run span with a remote parent carries ``langfuse.trace.*``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext

from otel_basic import runtime
from otel_basic.propagation import CallerContext, extract_headers, traceresponse
from otel_basic.run_span import observe_run_spans
from otel_basic.workflows import trace_attributes

__all__ = ["TRACE_ID_HEADER", "TRACE_URL_HEADER", "TraceContextMiddleware", "langfuse_trace_url"]

_log = logging.getLogger("otel_basic")

# The ASGI types (as in starlette.types), spelled out: otel_basic does not depend on a web framework.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRACE_ID_HEADER = "x-trace-id"
TRACE_URL_HEADER = "x-langfuse-trace-url"
TRACERESPONSE_HEADER = "traceresponse"


def langfuse_trace_url(trace_id: str) -> str | None:
    """``{LANGFUSE_BASE_URL}/trace/{trace_id}`` when spans go straight to Langfuse, else None.

    Langfuse answers this path with a redirect to ``/project/{project}/traces/{trace_id}``; the
    trace is there once Langfuse has processed it (asynchronously, usually within seconds).
    """
    telemetry = runtime.current()
    if telemetry is None or not telemetry.enabled or telemetry.settings.route != "langfuse":
        return None
    return f"{telemetry.settings.langfuse_base_url.rstrip('/')}/trace/{trace_id}"


RUN_SPAN_WAIT = 0.25
"""Longest a ``/run-nowait`` response waits for its run's span, in seconds (normally a few loop turns)."""


async def _wait_for_run_span(runs: list[SpanContext]) -> None:
    deadline = time.monotonic() + RUN_SPAN_WAIT
    turns = 0
    while not runs and time.monotonic() < deadline:
        await asyncio.sleep(0 if turns < 20 else 0.002)  # the run task starts within a few loop turns
        turns += 1


class TraceContextMiddleware:
    """Continue the caller's trace for every HTTP request; report the run's trace in the response."""

    def __init__(
        self,
        app: ASGIApp,
        trace_url: Callable[[str], str | None] = langfuse_trace_url,
        starts_run: Callable[[Scope], bool] = lambda scope: scope["path"].rstrip("/").endswith("/run-nowait"),
        *,
        trust_traceparent: bool = True,
    ) -> None:
        """``starts_run(scope)``: requests that answer before their run's first span exists (the run
        task has not been scheduled yet); their response waits up to :data:`RUN_SPAN_WAIT` seconds
        for it. Default: WorkflowServer's ``/run-nowait``.

        ``trust_traceparent``: continue the caller's trace (default). False: every run starts a new
        trace, whatever ``traceparent`` the request carries."""
        self.app = app
        self.trace_url = trace_url
        self.starts_run = starts_run
        self.trust_traceparent = trust_traceparent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            caller = extract_headers(scope.get("headers") or [], trust_traceparent=self.trust_traceparent)
        except Exception:  # a header we cannot read is a request without a trace, never an error
            _log.debug("could not read the request's trace headers", exc_info=True)
            caller = CallerContext(Context())
        token = context_api.attach(caller.context)
        try:
            with (
                trace_attributes(session_id=caller.session_id, user_id=caller.user_id),
                observe_run_spans() as runs,
            ):

                async def send_with_trace(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        if not runs and message.get("status", 500) < 300 and self.starts_run(scope):
                            await _wait_for_run_span(runs)
                        if runs:
                            message = {**message, "headers": [*message.get("headers", []), *self._headers(runs[0])]}
                    await send(message)

                await self.app(scope, receive, send_with_trace)
        finally:
            context_api.detach(token)

    def _headers(self, run: SpanContext) -> list[tuple[bytes, bytes]]:
        headers = [(TRACERESPONSE_HEADER.encode(), traceresponse(run).encode())]
        if not run.trace_flags.sampled:  # not recorded: no trace to name or link to
            return headers
        trace_id = f"{run.trace_id:032x}"
        headers.append((TRACE_ID_HEADER.encode(), trace_id.encode()))
        try:
            url = self.trace_url(trace_id)
        except Exception:  # a link is a convenience: never fail the response for it
            _log.debug("trace URL failed", exc_info=True)
            url = None
        if url:
            headers.append((TRACE_URL_HEADER.encode(), url.encode("latin-1", "replace")))
        return headers
