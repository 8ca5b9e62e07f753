"""OTLP/HTTP (protobuf) span exporter that tells the truth about delivery.

Why not the stock ``OTLPSpanExporter``: it counts any 2xx-3xx as success (a redirect silently
loses a batch), hides the status code from its caller, logs one error per failed batch, and its
timeout knows nothing about a flush's deadline. We keep OTel's well-kept encoder
(``encode_spans``) and send with httpx: only 2xx is success, 429/502/503/504 and connection errors
are retried with backoff (``Retry-After`` honoured) inside ONE deadline, the smaller of the export
timeout and the flush deadline (see :mod:`otel_basic.deadline`); a connection that fails is retried
once, then the batch goes to the spool.
"""

from __future__ import annotations

import gzip
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime

import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_basic import deadline
from otel_basic.exporters.base import ExportFailure, ThreadResult

_log = logging.getLogger("otel_basic.export")
_RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
_USER_AGENT = "otel-basic"
_TRANSPORT_ATTEMPTS = 2


def retry_after_seconds(value: str | None) -> float | None:
    """Parse ``Retry-After`` (seconds or HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class OtlpHttpExporter(SpanExporter):
    """POSTs protobuf ``ExportTraceServiceRequest`` bodies; see the module docstring for why."""

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        compression: str = "gzip",
        timeout: float = 10.0,
        max_attempts: int = 6,
    ) -> None:
        self.endpoint = endpoint
        self._timeout = timeout
        self._gzip = compression == "gzip"
        self._max_attempts = max_attempts
        base_headers = {"content-type": "application/x-protobuf", "user-agent": _USER_AGENT}
        if self._gzip:
            base_headers["content-encoding"] = "gzip"
        base_headers.update(headers or {})
        self._client = httpx.Client(headers=base_headers, follow_redirects=False, trust_env=False)
        self._stop = threading.Event()
        self._result = ThreadResult()

    @property
    def last_failure(self) -> ExportFailure | None:
        """Why this thread's last export failed (None after a success)."""
        return self._result.failure

    def __repr__(self) -> str:  # never show headers: they carry credentials
        return f"OtlpHttpExporter(endpoint={self.endpoint!r})"

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        body: bytes = encode_spans(spans).SerializeToString()
        return gzip.compress(body, compresslevel=5) if self._gzip else body

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            body = self.encode(spans)
        except Exception as exc:  # a span whose attributes cannot be encoded
            self._result.failure = ExportFailure("rejected", f"could not encode spans: {type(exc).__name__}")
            return SpanExportResult.FAILURE
        return self.send(body)

    def send_request(self, request: bytes) -> SpanExportResult:
        """Send an already serialized ``ExportTraceServiceRequest`` (spool replay)."""
        return self.send(gzip.compress(request, compresslevel=5) if self._gzip else request)

    def send(self, body: bytes) -> SpanExportResult:
        """Send an encoded body with retries inside one deadline; record why it failed."""
        end = time.monotonic() + deadline.remaining(self._timeout)
        self._result.failure = None
        attempt = 0
        while True:
            attempt += 1
            left = end - time.monotonic()
            if left <= 0 or self._stop.is_set():
                self._result.failure = self._result.failure or ExportFailure("transient", "deadline reached")
                return SpanExportResult.FAILURE
            wait: float | None
            try:
                response = self._client.post(self.endpoint, content=body, timeout=max(left, 0.001))
            except httpx.HTTPError as exc:
                self._result.status = None
                self._result.failure = ExportFailure("transient", f"{type(exc).__name__} sending to {self.endpoint}")
                if attempt >= _TRANSPORT_ATTEMPTS:
                    # Down or not answering: one quick retry (a stale keep-alive connection), then
                    # give the batch to the spool at once instead of holding it in memory for
                    # the whole timeout, where a kill would lose it.
                    return SpanExportResult.FAILURE
                wait = 0.1
            else:
                status = self._result.status = response.status_code
                if 200 <= status < 300:
                    self._result.failure = None
                    return SpanExportResult.SUCCESS
                self._result.failure = _classify(status, self.endpoint, response)
                if self._result.failure.kind != "transient":
                    return SpanExportResult.FAILURE
                wait = retry_after_seconds(response.headers.get("retry-after"))
            if attempt >= self._max_attempts:
                return SpanExportResult.FAILURE
            backoff = wait if wait is not None else min(8.0, 0.25 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            if backoff > end - time.monotonic():
                return SpanExportResult.FAILURE
            if self._stop.wait(backoff):
                return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._stop.set()
        self._client.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _classify(status: int, endpoint: str, response: httpx.Response) -> ExportFailure:
    if status in _RETRYABLE:
        return ExportFailure("transient", f"HTTP {status} from {endpoint}", status)
    if status == 413:
        return ExportFailure("too_large", f"HTTP 413 (body too large) from {endpoint}", status)
    if 300 <= status < 400:
        where = response.headers.get("location", "?")
        return ExportFailure(
            "rejected",
            f"HTTP {status} redirect from {endpoint} to {where[:200]}: fix the endpoint URL",
            status,
        )
    hint = {
        401: "wrong LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY for this LANGFUSE_BASE_URL (another region?)",
        403: "the key has no ingestion access, or ingestion is suspended",
        404: "no OTLP traces endpoint at this URL",
    }.get(status, "the endpoint rejected the batch")
    return ExportFailure("rejected", f"HTTP {status} from {endpoint}: {hint}", status)
