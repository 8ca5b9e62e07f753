"""``MaskingExporter``: masks every span on its way out, whoever created it.

Masking at export time (rather than in the instrumentation) is what covers OpenInference's spans, our own
and Langfuse's alike, and it works on copies: the SDK's finished spans are shared with other processors.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_basic.exporters.base import WrappingExporter
from otel_basic.masking.masker import ERROR_PLACEHOLDER, Masker
from otel_basic.spancopy import copy_span, transform_span

__all__ = ["MaskingExporter"]


class MaskingExporter(WrappingExporter):
    """Passes masked copies of the spans to ``inner``; never raises and never exports a raw value.

    Unchanged spans are passed through as they are. If a whole span cannot be processed, a skeleton copy
    (same ids, name, timing, status code; no attributes or events) is exported so the trace tree survives.
    """

    def __init__(self, inner: SpanExporter, masker: Masker) -> None:
        super().__init__(inner)
        self.masker = masker

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self._mask(span) for span in spans])

    def _mask(self, span: ReadableSpan) -> ReadableSpan:
        m = self.masker
        try:
            return transform_span(
                span,
                lambda attrs: m._mask_mapping(attrs, event=False),
                lambda _name, attrs: m._mask_mapping(attrs, event=True),
                lambda attrs: m._mask_mapping(attrs, event=False),
                m._mask_status,
            )
        except Exception as exc:
            m._failed(f"span {span.name!r}", exc)
            return copy_span(span, attributes={"otel_basic.masking.error": ERROR_PLACEHOLDER}, events=(), links=())
