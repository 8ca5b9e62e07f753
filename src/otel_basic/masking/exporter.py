"""``MaskingExporter``: masks every span on its way out, whoever created it.

Masking at export time (rather than in the instrumentation) is what covers OpenInference's spans, our own
and Langfuse's alike, and it works on copies: the SDK's finished spans are shared with other processors.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_basic.exporters.base import WrappingExporter
from otel_basic.masking.masker import Masker

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
        return self.masker.mask_span(span)  # every string of the span; never raises (skeleton on failure)
