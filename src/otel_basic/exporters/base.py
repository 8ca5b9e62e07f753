"""What every exporter in our chain shares: a richer failure than ``SpanExportResult.FAILURE``.

OTel's ``SpanExporter`` can only say SUCCESS or FAILURE. The spool must know whether a failure is
worth retrying (endpoint down, 5xx, timeout) or not (401, 400, a redirect), and the flush report
needs a redacted reason. Exporters record that in ``last_failure``; wrappers pass it through.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

FailureKind = Literal["transient", "rejected", "too_large"]


@dataclass(frozen=True)
class ExportFailure:
    """Why the last export failed. ``message`` is safe to log: it never holds a header value."""

    kind: FailureKind
    message: str
    status: int | None = None


class ThreadResult(threading.local):
    """Per-thread outcome of the last export: the processor runs exports in more than one worker
    thread and reads the outcome right after its own call returns."""

    failure: ExportFailure | None = None
    status: int | None = None
    delivered: int = 0


class WrappingExporter(SpanExporter):
    """A SpanExporter that adds one job around an inner exporter."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    @property
    def last_failure(self) -> ExportFailure | None:
        return getattr(self.inner, "last_failure", None)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export(spans)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
