"""The global tracer provider we install: it forwards to the current pipeline's provider.

OpenTelemetry lets the global provider be set once per process. Forwarding lets otel_basic be
reconfigured (or reset between tests) while code that called ``trace.get_tracer()`` earlier, and
Langfuse's ``@observe``, keep landing in whatever pipeline is current. With no pipeline (disabled
or shut down) the tracers are no-ops.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from opentelemetry.util.types import Attributes


class ForwardingTracerProvider(trace.TracerProvider):
    def __init__(self) -> None:
        self.target: TracerProvider | None = None

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
