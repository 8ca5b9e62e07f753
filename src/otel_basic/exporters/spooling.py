"""Failed batches go to the on-disk spool instead of being thrown away.

A transient failure (endpoint down, timeout, 5xx/429 after retries, flush deadline) writes the
batch to the spool; a permanent one (400, 401/403, a redirect) is kept aside as rejected with its
reason. "Too large" is left to the splitting wrapper outside this one. After a successful export,
a few spooled batches are replayed, oldest first, within the same deadline.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_basic.exporters.base import WrappingExporter
from otel_basic.spool import Sender, Spool

REPLAY_BATCHES_PER_SUCCESS = 8


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    data: bytes = encode_spans(spans).SerializeToString()
    return data


class SpoolingExporter(WrappingExporter):
    def __init__(self, inner: SpanExporter, spool: Spool, sender: Sender) -> None:
        super().__init__(inner)
        self.spool = spool
        self.sender = sender

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            self.retry_spool()
            return result
        failure = self.last_failure
        if failure is not None and failure.kind == "too_large":
            return result  # the splitter outside us halves the batch and comes back
        data = encode_request(spans)
        if failure is not None and failure.kind == "rejected":
            self.spool.reject(data, len(spans), failure.message)
        else:
            self.spool.write(data, len(spans))
        return result

    def retry_spool(self) -> None:
        """Send the oldest spooled batches if there are any (after a success, or while idle)."""
        if self.spool.pending():
            self.spool.replay(self.sender, max_batches=REPLAY_BATCHES_PER_SUCCESS)

    def keep(self, spans: Sequence[ReadableSpan], reason: str) -> bool:
        """Overflow hook for the processor: spans that cannot stay in memory."""
        return self.spool.write(encode_request(spans), len(spans))
