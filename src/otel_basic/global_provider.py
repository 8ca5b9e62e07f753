"""The global tracer provider we install: it forwards to the current pipeline's provider.

OpenTelemetry lets the global provider be set once per process. Forwarding lets otel_basic be
reconfigured (or reset between tests) while code that called ``trace.get_tracer()`` earlier, and
Langfuse's ``@observe``, keep landing in whatever pipeline is current. With no pipeline (disabled
or shut down) the tracers are no-ops.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from opentelemetry.util.types import Attributes


class _Kept(SpanProcessor):
    """A processor the host added to the global provider: it follows every pipeline otel-basic
    builds, and a pipeline's shutdown (a reconfigure) does not shut it down."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.inner.on_end(span)

    def shutdown(self) -> None:
        pass  # the host's processor ends with ForwardingTracerProvider.shutdown, not with our pipeline

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class ForwardingTracerProvider(trace.TracerProvider):
    """Forwards to the current pipeline's provider, and behaves like the SDK's TracerProvider for
    the common idioms: ``add_span_processor``, ``force_flush``, ``shutdown``, ``resource``."""

    def __init__(self) -> None:
        self._target: TracerProvider | None = None
        self._added: list[_Kept] = []
        self._lock = threading.RLock()

    @property
    def target(self) -> TracerProvider | None:
        return self._target

    @target.setter
    def target(self, provider: TracerProvider | None) -> None:
        with self._lock:
            self._target = provider
            if provider is not None:
                for kept in self._added:
                    provider.add_span_processor(kept)

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        """Add a processor to the current pipeline and to every later one (as on the SDK provider)."""
        kept = _Kept(span_processor)
        with self._lock:
            self._added.append(kept)
            target = self._target
        if target is not None:
            target.add_span_processor(kept)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the current pipeline (and the processors added here) within the timeout."""
        target = self._target
        ok = target.force_flush(timeout_millis) if target is not None else True
        for kept in list(self._added):
            if target is None:
                ok = kept.inner.force_flush(timeout_millis) and ok
        return ok

    def shutdown(self) -> None:
        """Shut down the processors added here; the pipeline itself ends with ``otel_basic.shutdown()``."""
        with self._lock:
            added, self._added = self._added, []
        for kept in added:
            kept.inner.shutdown()

    def __getattr__(self, name: str) -> Any:
        # resource, sampler, id_generator...: the current pipeline's, as the SDK provider has them
        target = self.__dict__.get("_target")
        if target is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(target, name)

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> Tracer:
        return _ForwardingTracer(
            self, (instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        )


class _ForwardingTracer(Tracer):
    def __init__(self, owner: ForwardingTracerProvider, key: tuple[Any, ...]) -> None:
        self._owner = owner
        self._key = key
        self._cached: tuple[TracerProvider | None, Tracer] | None = None

    def _tracer(self) -> Tracer:
        target = self._owner.target
        if self._cached is None or self._cached[0] is not target:
            tracer = trace.NoOpTracer() if target is None else target.get_tracer(*self._key)
            self._cached = (target, tracer)
        return self._cached[1]

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        return self._tracer().start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        with self._tracer().start_as_current_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
            end_on_exit,
        ) as span:
            yield span


GLOBAL = ForwardingTracerProvider()


def install_global(provider: TracerProvider) -> bool:
    """Make ``provider`` current; install the forwarder as global if nobody set one. Returns
    whether the global now reaches ``provider``."""
    current = trace.get_tracer_provider()
    if isinstance(current, trace.ProxyTracerProvider):
        trace.set_tracer_provider(GLOBAL)
        current = trace.get_tracer_provider()
    GLOBAL.target = provider
    return current is GLOBAL


def release_global(provider: TracerProvider) -> None:
    if GLOBAL.target is provider:
        GLOBAL.target = None
