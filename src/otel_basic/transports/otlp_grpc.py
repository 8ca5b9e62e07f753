"""OTLP/gRPC transport for the collector route, bounded by the caller's deadline.

Kept small on purpose: the generated stub from opentelemetry-proto does the protocol; we add the
deadline, retries of UNAVAILABLE/RESOURCE_EXHAUSTED/DEADLINE_EXCEEDED/ABORTED, OTLP partial
success, and redacted reasons. The channel comes from a factory so TLS settings and ``fork()``
(a new channel in the child) are handled in one place.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_basic.redact import redact_url
from otel_basic.road import Deadline, SendKind, SendResult
from otel_basic.transports import GZIP_MIN_BYTES

_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
}

ChannelFactory = Callable[[], grpc.Channel]


def default_channel(endpoint: str) -> ChannelFactory:
    """``http://host:4317`` or ``host:4317`` = plaintext, ``https://`` = TLS with the system roots. No
    compression on the channel: :class:`GrpcTransport` compresses per call."""
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    target = parts.netloc
    if parts.scheme == "https":
        return lambda: grpc.secure_channel(target, grpc.ssl_channel_credentials())
    return lambda: grpc.insecure_channel(target)


class GrpcTransport:
    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        channel: ChannelFactory | None = None,
        compression: str = "gzip",
        timeout: float = 10.0,
        max_attempts: int = 6,
    ) -> None:
        self.endpoint = endpoint
        self._where = redact_url(endpoint)
        self._metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())
        self._factory = channel or default_channel(endpoint)
        # Per call, as over HTTP: only requests of GZIP_MIN_BYTES or more (a channel-wide gzip compressed
        # every small per-step request, and a call cannot turn a channel's compression off)
        self._gzip = compression == "gzip"
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._open()

    def _open(self) -> None:
        self._channel = self._factory()
        self._stub = trace_service_pb2_grpc.TraceServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"GrpcTransport(endpoint={self._where!r})"

    def send(self, request: ExportTraceServiceRequest, deadline: Deadline) -> SendResult:
        end = min(deadline.at, time.monotonic() + self._timeout)
        result = SendResult("retryable", "deadline reached before sending")
        compression = grpc.Compression.Gzip if self._gzip and request.ByteSize() >= GZIP_MIN_BYTES else None
        for attempt in range(1, self._max_attempts + 1):
            left = end - time.monotonic()
            if left <= 0 or self._stop.is_set() or (attempt > 1 and time.monotonic() >= deadline.retries_end()):
                break
            try:
                response = self._stub.Export(request, metadata=self._metadata, timeout=left, compression=compression)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
                kind: SendKind = "retryable" if code in _RETRYABLE else "rejected"
                details = str(exc.details()) if hasattr(exc, "details") else ""
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "message larger" in details:
                    kind = "too_large"
                result = SendResult(kind, f"gRPC {code.name} from {self._where}")
                if kind != "retryable":
                    return result
            else:
                rejected = response.partial_success.rejected_spans
                if rejected > 0:
                    message = response.partial_success.error_message[:200]
                    return SendResult(
                        "partial", f"{self._where} rejected {rejected} spans (partial success): {message}", rejected
                    )
                return SendResult.ok()
            backoff = min(4.0, 0.25 * 2 ** (attempt - 1))
            if not deadline.wait_to_retry(backoff, self._stop, end, result.reason):
                break
        return result

    def reopen(self) -> None:
        self._open()

    def close(self) -> None:
        self._stop.set()
        self._channel.close()
