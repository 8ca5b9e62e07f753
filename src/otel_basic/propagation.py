"""W3C Trace Context and Baggage across a process boundary: read a caller's, hand ours on.

Why this module: a workflow run started by an HTTP request, a callback it POSTs, and a run resumed
in another process are three boundaries where a trace would otherwise start again. Everything here
goes through OpenTelemetry's propagators (``opentelemetry.propagate``, which honours
``OTEL_PROPAGATORS`` and defaults to ``tracecontext,baggage``); nothing parses a header by hand.

Session and user from baggage: a caller may name the session and user of the work it asks for.
Two spellings are read: the semantic-convention keys ``session.id`` / ``user.id``, and Langfuse's
own ``langfuse_session_id`` / ``langfuse_user_id`` (what ``propagate_attributes(as_baggage=True)``
of the Langfuse SDK sends). Values longer than :data:`MAX_BAGGAGE_ID_CHARS`, empty or with
non-printable characters are ignored.

What a caller does *not* get into the run (by construction: :func:`extract_headers` builds the
run's context from the caller's span ids alone): any other baggage entry, and the ``tracestate``.
The Langfuse SDK's span processor stamps every span started under ``langfuse_*`` baggage
(environment, tags, metadata, trace name, version, release, user, session), so a caller's baggage
in the run's context would let any HTTP client set them. Outgoing, :func:`inject_headers` writes
``traceparent`` only, unless baggage is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass

from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "MAX_BAGGAGE_ID_CHARS",
    "CallerContext",
    "context_from_carrier",
    "extract_headers",
    "inject_headers",
    "span_context_of",
    "traceparent_of",
    "traceresponse",
]

MAX_BAGGAGE_ID_CHARS = 200
"""Longest session/user id taken from baggage (Langfuse's own limit for propagated ids)."""

SESSION_KEYS = ("session.id", "langfuse_session_id")
USER_KEYS = ("user.id", "langfuse_user_id")


@dataclass(frozen=True)
class CallerContext:
    """What a request brought: the OpenTelemetry context to run under, and session/user from baggage.

    ``context`` holds the caller's span as the remote parent (when its ``traceparent`` was valid and
    trusted) and nothing else: no baggage, an empty trace state. Session and user named in the
    baggage are returned as ``session_id``/``user_id``, to be applied like any other run attribute.
    """

    context: Context
    session_id: str | None = None
    user_id: str | None = None

    @property
    def parent(self) -> SpanContext | None:
        """The caller's span, or None when the request carried no valid ``traceparent``."""
        return span_context_of(self.context)


def _headers_dict(headers: Mapping[str, str] | Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-cased header names; repeated headers joined with a comma (RFC 9110, as propagators expect)."""
    items: Iterable[tuple[str, str]]
    if isinstance(headers, Mapping):
        items = ((str(k), str(v)) for k, v in headers.items())
    else:
        items = ((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def _baggage_id(entries: Mapping[str, object], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = entries.get(key)
        if not isinstance(value, str):
            continue
        value = value.strip()
        if value and len(value) <= MAX_BAGGAGE_ID_CHARS and value.isprintable():
            return value
    return None


def extract_headers(
    headers: Mapping[str, str] | Iterable[tuple[bytes, bytes]], *, trust_traceparent: bool = True
) -> CallerContext:
    """The caller's context from HTTP headers (a mapping, or ASGI's list of byte pairs).

    The headers are read with the global propagator (``OTEL_PROPAGATORS``), but the returned
    context is built anew from the caller's trace id, span id and sampled flag: the caller's
    baggage and ``tracestate`` are not in it. Only session and user ids are taken from the
    baggage (:data:`SESSION_KEYS`, :data:`USER_KEYS`), validated.

    A missing or malformed ``traceparent`` gives a context without a parent: the run starts a new
    trace, as the W3C spec requires. So does any ``traceparent`` when ``trust_traceparent`` is
    False (callers that must not attach runs to traces of their choosing).
    """
    received = propagate.extract(_headers_dict(headers), context=Context())
    entries = baggage.get_all(received)
    context = Context()
    parent = span_context_of(received)
    if trust_traceparent and parent is not None:
        span_context = SpanContext(
            trace_id=parent.trace_id,
            span_id=parent.span_id,
            is_remote=True,
            trace_flags=parent.trace_flags,
            trace_state=TraceState(),
        )
        context = trace.set_span_in_context(NonRecordingSpan(span_context), context)
    return CallerContext(
        context=context, session_id=_baggage_id(entries, SESSION_KEYS), user_id=_baggage_id(entries, USER_KEYS)
    )


def inject_headers(
    headers: MutableMapping[str, str] | None = None, context: Context | None = None, *, with_baggage: bool = False
) -> dict[str, str]:
    """``headers`` plus the ``traceparent`` of the current span, and nothing else of the context.

    No ``tracestate`` and no baggage unless ``with_baggage``: they may name the caller's users or
    carry a vendor's data, and a callback URL can point anywhere. With it, the global propagator
    (``OTEL_PROPAGATORS``) writes every header. Outside any valid span no trace header is added.
    Returns a new dict; ``headers`` is unchanged.
    """
    out = dict(headers or {})
    if with_baggage:
        propagate.inject(out, context=context)
        return out
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=context)
    if "traceparent" in carrier:
        out["traceparent"] = carrier["traceparent"]
    return out


def span_context_of(context: Context | None = None) -> SpanContext | None:
    """The valid span context current in ``context`` (default: the current one), or None."""
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None


def traceparent_of(span_context: SpanContext) -> dict[str, str]:
    """``{"traceparent": ..., "tracestate": ...}`` for ``span_context`` (W3C Trace Context)."""
    carrier: dict[str, str] = {}
    ctx = trace.set_span_in_context(NonRecordingSpan(span_context), Context())
    TraceContextTextMapPropagator().inject(carrier, context=ctx)
    return carrier


def context_from_carrier(carrier: Mapping[str, str]) -> Context | None:
    """A context whose current span is the (remote) span of a saved ``traceparent``, or None."""
    ctx = TraceContextTextMapPropagator().extract(dict(carrier), context=Context())
    return ctx if span_context_of(ctx) is not None else None


def traceresponse(span_context: SpanContext) -> str:
    """The ``traceresponse`` header value (W3C Trace Context Level 2): version, trace id, the id of
    the span the server made for the request, flags."""
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"
