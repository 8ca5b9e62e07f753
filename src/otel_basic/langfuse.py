"""The Langfuse client, bound to OUR provider with its own export turned off.

``Langfuse(tracer_provider=ours)`` adds a LangfuseSpanProcessor to our provider; left alone it
would POST every span a second time. ``should_export_span=lambda s: False`` keeps that processor
for what it is good at (stamping propagated attributes, scores, ``@observe``) while our pipeline
stays the only exporter. ``langfuse.flush()`` still flushes our spans because it calls
``provider.force_flush()``. (Not ``tracing_enabled=False``: then flush never touches the provider.)

Langfuse keeps one client per public key and silently ignores later ones, so ours must be created
before anything calls ``get_client()``/``@observe``; we warn when we find we were too late.

The client's span processor is gated (:class:`LangfuseGate`): with export off, its ``on_start`` only
stamps attributes that ``propagate_attributes`` (or Langfuse baggage) put in the context, and its
``on_end`` only forgets what ``on_start`` noted. So it runs only for spans started in such a
context; every other span (all of LlamaIndex's, usually) skips it, which is exact, not a sampling.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from typing import Any

from opentelemetry import baggage
from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from otel_basic.redact import redact_urls_in
from otel_basic.sdk_env import LANGFUSE_FLUSH_INTERVAL
from otel_basic.settings import Settings

_log = logging.getLogger("otel_basic")


def _never_export(span: ReadableSpan) -> bool:
    return False


# Langfuse's propagate_attributes stores values under "langfuse.propagated.<key>" context keys and,
# with as_baggage=True, under "langfuse_<key>" baggage entries (langfuse/_client/propagation.py).
_CONTEXT_PREFIX = "langfuse."
_BAGGAGE_PREFIX = "langfuse_"
_gates: weakref.WeakKeyDictionary[TracerProvider, LangfuseGate] = weakref.WeakKeyDictionary()


def carries_langfuse_state(context: Context) -> bool:
    """Whether ``context`` holds anything Langfuse's processor would stamp on a span started in it."""
    for key in context:
        if isinstance(key, str) and key.startswith(_CONTEXT_PREFIX):
            return True
    bag = baggage.get_all(context=context)
    return bool(bag) and any(key.startswith(_BAGGAGE_PREFIX) for key in bag)


class LangfuseGate(SpanProcessor):
    """Runs the Langfuse client's span processor only for spans it has work for.

    With ``should_export_span`` never true (ours), ``LangfuseSpanProcessor.on_start`` copies
    propagated attributes from the context and notes the span for its app-root bookkeeping, and
    ``on_end`` drops that note. A span started in a context without Langfuse state gets no
    attribute from it, so skipping both calls changes nothing the endpoint sees; ``on_end`` is
    forwarded while the inner processor has notes (spans it saw start), which is then cheap.
    ``eager = True`` forwards everything (the benchmark's "before" variant).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.eager = False
        self._notes: Callable[[], int] = _notes_counter(inner)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.eager or carries_langfuse_state(parent_context or context_api.get_current()):
            self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.eager or self._notes():
            self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


def _notes_counter(inner: Any) -> Callable[[], int]:
    """How many spans the inner processor is tracking (private dict; "always forward" if it moved)."""
    notes = getattr(inner, "_span_export_expectation_by_id", None)
    if isinstance(notes, dict):
        return notes.__len__
    return lambda: 1


def ungate(provider: TracerProvider) -> bool:
    """Forward every span to the Langfuse processor again (benchmarks); False if none is gated."""
    gate = _gates.get(provider)
    if gate is None:
        return False
    gate.eager = True
    return True


def _construct_gated(provider: TracerProvider, factory: Callable[[], Any]) -> Any:
    """Call ``factory`` (the Langfuse constructor) with the processor it adds wrapped in a gate.

    Langfuse adds its processor with ``provider.add_span_processor`` and keeps no reference to it,
    so we catch it there: an instance attribute shadowing the method during the constructor only.
    """
    original = provider.add_span_processor

    def add(processor: SpanProcessor) -> None:
        if type(processor).__name__ == "LangfuseSpanProcessor":
            gate = LangfuseGate(processor)
            _gates[provider] = gate
            processor = gate
        original(processor)

    provider.add_span_processor = add  # type: ignore[method-assign,assignment]
    try:
        return factory()
    finally:
        del provider.add_span_processor


def create_client(settings: Settings, provider: TracerProvider) -> Any | None:
    """A Langfuse client on ``provider``, or None when no Langfuse keys are configured."""
    if not (settings.langfuse_public_key and settings.langfuse_secret_key):
        return None
    try:
        from langfuse import Langfuse
    except ImportError:  # pragma: no cover - langfuse is a dependency
        return None
    kwargs: dict[str, Any] = {
        "public_key": settings.langfuse_public_key,
        "secret_key": settings.langfuse_secret_key,
        "base_url": settings.langfuse_base_url,
        "tracer_provider": provider,
        "should_export_span": _never_export,
        "timeout": max(1, int(settings.export_timeout)),
    }
    if settings.environment:
        kwargs["environment"] = settings.environment
    if settings.release:
        kwargs["release"] = settings.release
    if LANGFUSE_FLUSH_INTERVAL not in os.environ:
        # Its span processor exports nothing, so its timer need not follow OTEL_BSP_SCHEDULE_DELAY (1 ms
        # there woke it ~900 times a second in an idle app); 1 s is the client's default for score batches.
        kwargs["flush_interval"] = 1.0
    try:
        client = _construct_gated(provider, lambda: Langfuse(**kwargs))
    except Exception as exc:  # the client is an extra: our pipeline exports without it
        detail = redact_urls_in(str(exc)).replace(settings.langfuse_secret_key, "***")[:300]
        _log.warning(
            "otel-basic: the Langfuse client could not start (%s: %s); spans still export, but "
            "@observe, propagate_attributes and client scores are not bound to otel-basic",
            type(exc).__name__,
            detail,
        )
        return None
    bound = getattr(getattr(client, "_resources", None), "tracer_provider", provider)
    if bound is not provider:
        _log.warning(
            "otel-basic: a Langfuse client for this public key existed before otel_basic.configure(); "
            "langfuse.flush() will not flush otel-basic's spans. Import basic.observability (or call "
            "otel_basic.configure()) before get_client()/@observe."
        )
    return client


def release_client(settings: Settings) -> None:
    """Forget Langfuse's per-key singleton so a later configure() can bind a new provider."""
    if not settings.langfuse_public_key:
        return
    try:
        from langfuse._client.resource_manager import LangfuseResourceManager
    except ImportError:  # pragma: no cover
        return
    with LangfuseResourceManager._lock:
        instance = LangfuseResourceManager._instances.pop(settings.langfuse_public_key, None)
    if instance is not None:
        try:
            instance.shutdown()
        except Exception:
            _log.debug("Langfuse client shutdown failed", exc_info=True)
