"""Run-level attributes (session, user, tags, metadata) on EVERY span of a run, not only LlamaIndex's.

``run_with_flush(..., session_id=, user_id=, tags=, metadata=)`` and ``trace_attributes`` put them in
OpenInference's context attributes, which OpenInference copies onto the spans *it* starts. Spans the
app starts itself (``otel_basic.get_tracer``, ``trace.get_tracer``, Langfuse's ``@observe``) would
miss them, and Langfuse would show those observations without the run's user and session. This span
processor copies the same context attributes onto every span when it starts, unless the span already
set the key itself.

It reads the context once and looks the keys up in it, instead of OpenInference's
``get_attributes_from_context`` (one ``get_value`` per key, each reading the context again): this
runs for every span, on the app's thread.
"""

from __future__ import annotations

from typing import cast

from openinference.instrumentation.context_attributes import CONTEXT_ATTRIBUTES
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.util.types import AttributeValue


class ContextAttributes(SpanProcessor):
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        context = get_current()  # what get_attributes_from_context reads, not parent_context
        if not context:
            return
        existing = span.attributes or {}
        for key in CONTEXT_ATTRIBUTES:
            value = context.get(key)
            if value is not None and key not in existing:
                span.set_attribute(key, cast(AttributeValue, value))

    def on_end(self, span: ReadableSpan) -> None:
        pass
