"""Run-level attributes (session, user, tags, metadata) on EVERY span of a run, not only LlamaIndex's.

``run_with_flush(..., session_id=, user_id=, tags=, metadata=)`` and ``trace_attributes`` put them in
OpenInference's context attributes, which OpenInference copies onto the spans *it* starts. Spans the
app starts itself (``otel_basic.get_tracer``, ``trace.get_tracer``, Langfuse's ``@observe``) would
miss them, and Langfuse would show those observations without the run's user and session. This span
processor copies the same context attributes onto every span when it starts, unless the span already
set the key itself.
"""

from __future__ import annotations

from openinference.instrumentation import get_attributes_from_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor


class ContextAttributes(SpanProcessor):
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        existing = span.attributes or {}
        for key, value in get_attributes_from_context():
            if key not in existing:
                span.set_attribute(key, value)

    def on_end(self, span: ReadableSpan) -> None:
        pass
