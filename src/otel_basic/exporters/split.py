"""HTTP 413 / "message too large": split the batch and retry the halves.

Langfuse and collectors cap request size. Halving continues down to one span; a single span that
is still too large has its longest string attributes cut (with a marker and the original size)
a few times; if even that fails the span is handed to ``give_up`` (kept aside as rejected),
never dropped silently. ``last_delivered`` tells the processor how many spans really arrived.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_basic.exporters.base import ThreadResult, WrappingExporter
from otel_basic.spancopy import copy_span

_TRUNCATION_ROUNDS = 4


def _shrink(span: ReadableSpan) -> ReadableSpan | None:
    """Cut the longest string attribute to a quarter; None when there is nothing left to cut."""
    attrs = dict(span.attributes or {})
    strings = {k: v for k, v in attrs.items() if isinstance(v, str)}
    longest = max(strings, key=lambda k: len(strings[k]), default=None)
    if longest is None or len(strings[longest]) < 256:
        return None
    value = strings[longest]
    marker = f"…[truncated by otel-basic after HTTP 413: original {len(value)} chars]"
    attrs[longest] = value[: len(value) // 4] + marker
    return copy_span(span, attributes=attrs)


class SplittingExporter(WrappingExporter):
    def __init__(self, inner: SpanExporter, give_up: Callable[[Sequence[ReadableSpan], str], None]) -> None:
        super().__init__(inner)
        self._give_up = give_up
        self._result = ThreadResult()

    @property
    def last_delivered(self) -> int:
        """Spans of this thread's last batch that the endpoint accepted."""
        return self._result.delivered

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._result.delivered = 0
        ok = self._export(list(spans))
        return SpanExportResult.SUCCESS if ok == len(spans) else SpanExportResult.FAILURE

    def _too_large(self) -> bool:
        failure = self.last_failure
        return failure is not None and failure.kind == "too_large"

    def _export(self, spans: list[ReadableSpan]) -> int:
        """Export and return how many spans were accepted."""
        if self.inner.export(spans) == SpanExportResult.SUCCESS:
            self._result.delivered += len(spans)
            return len(spans)
        if not self._too_large():
            return 0
        if len(spans) > 1:
            mid = len(spans) // 2
            return self._export(spans[:mid]) + self._export(spans[mid:])
        span = spans[0]
        for _ in range(_TRUNCATION_ROUNDS):
            smaller = _shrink(span)
            if smaller is None:
                break
            span = smaller
            if self.inner.export([span]) == SpanExportResult.SUCCESS:
                self._result.delivered += 1
                return 1
            if not self._too_large():
                return 0
        self._give_up([span], self.last_failure.message if self.last_failure else "too large")
        return 0
