"""OTLP/gRPC span exporter for the collector route, bounded by the flush deadline.

Kept small on purpose: the generated stub from opentelemetry-proto does the protocol; we only
add the deadline from :mod:`otel_basic.deadline`, retries of UNAVAILABLE/RESOURCE_EXHAUSTED, and
a redacted :class:`ExportFailure`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_basic import deadline
from otel_basic.exporters.base import ExportFailure, FailureKind, ThreadResult

_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
}


class OtlpGrpcExporter(SpanExporter):
    """Exports to an OTLP/gRPC receiver (``http://host:4317`` = plaintext, ``https://`` = TLS)."""

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        compression: str = "gzip",
        timeout: float = 10.0,
        max_attempts: int = 6,
    ) -> None:
        parts = urlsplit(endpoint)
        target = parts.netloc or endpoint
        self.endpoint = endpoint
        self._metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())
        comp = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
        if parts.scheme == "https":
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), compression=comp)
        else:
            self._channel = grpc.insecure_channel(target, compression=comp)
        self._stub = trace_service_pb2_grpc.TraceServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._stop = threading.Event()
        self._result = ThreadResult()

    @property
    def last_failure(self) -> ExportFailure | None:
        """Why this thread's last export failed (None after a success)."""
        return self._result.failure

    def __repr__(self) -> str:
        return f"OtlpGrpcExporter(endpoint={self.endpoint!r})"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._send(encode_spans(spans))

    def send_request(self, request: bytes) -> SpanExportResult:
        """Send an already serialized ``ExportTraceServiceRequest`` (spool replay)."""
        return self._send(ExportTraceServiceRequest.FromString(request))

    def _send(self, request: ExportTraceServiceRequest) -> SpanExportResult:
        end = time.monotonic() + deadline.remaining(self._timeout)
        self._result.failure = None
        for attempt in range(1, self._max_attempts + 1):
            left = end - time.monotonic()
            if left <= 0 or self._stop.is_set():
                break
            try:
                self._stub.Export(request, metadata=self._metadata, timeout=left)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                kind: FailureKind = "transient" if code in _RETRYABLE else "rejected"
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "message larger" in str(exc.details()):
                    kind = "too_large"
                self._result.failure = ExportFailure(kind, f"gRPC {code.name} from {self.endpoint}")
                if kind != "transient":
                    return SpanExportResult.FAILURE
            else:
                self._result.failure = None
                return SpanExportResult.SUCCESS
            backoff = min(4.0, 0.25 * 2 ** (attempt - 1))
            if backoff > end - time.monotonic() or self._stop.wait(backoff):
                break
        self._result.failure = self._result.failure or ExportFailure("transient", "deadline reached")
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._stop.set()
        self._channel.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
