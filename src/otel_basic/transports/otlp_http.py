"""OTLP/HTTP transport (protobuf or JSON) that tells the truth about delivery.

Why not the stock ``OTLPSpanExporter``: it counts any 2xx-3xx as success (a redirect, an SSO page or
an OTLP ``partial_success`` lose spans silently), hides the status code, and its timeout knows
nothing of a flush's deadline. Here only an OTLP answer is a success: 2xx with an empty body, a
protobuf ``ExportTraceServiceResponse`` or a JSON object; ``partial_success.rejected_spans`` is
reported as such; 408/429/5xx and connection errors are retried with backoff (``Retry-After``
honoured) inside ONE deadline given by the caller; a connection that fails is retried once, then the
road spools the batch at once instead of holding it in memory, where a kill would lose it.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import replace
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_basic.otlp_json import request_to_json_line
from otel_basic.redact import redact_url
from otel_basic.road import Deadline, SendResult, backoff
from otel_basic.transports import GZIP_MIN_BYTES
from otel_basic.transports.http_conn import ANSWER_SECONDS, FastConnection
from otel_basic.transports.loop_http import LoopPoster

_RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
_USER_AGENT = "otel-basic"
_TRANSPORT_ATTEMPTS = 2

Encoding = Literal["protobuf", "json"]


def retry_after_seconds(value: str | None) -> float | None:
    """Parse ``Retry-After`` (seconds or HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    return max(0.0, seconds) if seconds == seconds else None  # NaN is not a wait


class HttpTransport:
    """POSTs one ``ExportTraceServiceRequest`` per call; see the module docstring for why."""

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        compression: str = "gzip",
        timeout: float = 10.0,
        encoding: Encoding = "protobuf",
        client_options: Mapping[str, Any] | None = None,
        max_attempts: int = 6,
        fast: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self._where = redact_url(endpoint)
        self._timeout = timeout
        self._compression = compression
        self._encoding = encoding
        self._max_attempts = max_attempts
        base_headers = {
            "content-type": "application/json" if encoding == "json" else "application/x-protobuf",
            "user-agent": _USER_AGENT,
        }
        base_headers.update(headers or {})
        self._headers = base_headers
        self._client_options = {"trust_env": False, **(client_options or {}), "follow_redirects": False}
        self._client = self._new_client()
        self._stop = threading.Event()
        # fast: no proxy is set, so a FastConnection per concurrent sender (see http_conn)
        self._direct = FastConnection.for_client(endpoint, self._headers, self._client_options) if fast else None
        self._idle: list[FastConnection] = []
        self._idle_lock = threading.Lock()
        self._loop = LoopPoster(self._direct) if self._direct is not None else None

    def _fast_post(
        self, direct: FastConnection, body: bytes, timeout: float, headers: Mapping[str, str]
    ) -> httpx.Response:
        with self._idle_lock:
            conn = self._idle.pop() if self._idle else direct.fresh()
        response = conn.post(body, timeout, headers)  # on error the connection closed itself: not pooled
        with self._idle_lock:
            self._idle.append(conn)
        return response

    def _new_client(self) -> httpx.Client:
        return httpx.Client(headers=self._headers, **self._client_options)

    def __repr__(self) -> str:  # never show headers: they carry credentials
        return f"HttpTransport(endpoint={self._where!r})"

    def body(self, request: ExportTraceServiceRequest) -> tuple[bytes, str | None]:
        """The request body and its ``content-encoding`` (None: sent as it is)."""
        raw = request_to_json_line(request).encode() if self._encoding == "json" else request.SerializeToString()
        if len(raw) < GZIP_MIN_BYTES:
            return raw, None
        if self._compression == "gzip":
            # Level 1: about 2.5x less CPU than level 5 on OTLP batches for bodies a few percent larger.
            # One C call writes the gzip format (wbits 31); gzip.compress adds a separate crc32 pass,
            # and each of the two releases the GIL, a hand-off to a busy app thread (~5 ms) apiece.
            return zlib.compress(raw, 1, wbits=31), "gzip"
        if self._compression == "deflate":
            return zlib.compress(raw, 1), "deflate"
        return raw, None

    def send(self, request: ExportTraceServiceRequest, deadline: Deadline) -> SendResult:
        try:
            body, encoding = self.body(request)
        except Exception as exc:  # an attribute the encoder cannot take: retrying will not help
            return SendResult("rejected", f"could not encode spans: {type(exc).__name__}")
        return self._post(body, deadline, {"content-encoding": encoding} if encoding else {})

    @property
    def loop_capable(self) -> bool:
        """Whether :meth:`send_on_loop` can send (the direct path: no proxy, a usable TLS context)."""
        return self._loop is not None and not self._stop.is_set()

    async def send_on_loop(self, request: ExportTraceServiceRequest, timeout: float) -> SendResult:
        """One attempt from the running event loop, no retry: the road's workers go on from its answer
        (:meth:`otel_basic.road.Road.resume`), after its ``Retry-After`` if it has one."""
        if self._loop is None:
            return SendResult("retryable", "no event-loop path to this endpoint")
        try:
            body, encoding = self.body(request)
            response = await self._loop.post(
                body, {"content-encoding": encoding} if encoding else {}, min(timeout, self._timeout)
            )
        except Exception as exc:
            return SendResult("retryable", f"{type(exc).__name__} sending to {self._where}")
        result = classify(response, self._where)
        wait = retry_after_seconds(response.headers.get("retry-after")) if result.kind == "retryable" else None
        return replace(result, answer_seconds=_answer_seconds(response), retry_after=wait)

    def _post(self, body: bytes, deadline: Deadline, headers: Mapping[str, str]) -> SendResult:
        end = min(deadline.at, time.monotonic() + self._timeout)
        attempt = 0
        result = SendResult("retryable", "deadline reached before sending")
        while True:
            attempt += 1
            left = end - time.monotonic()
            if left <= 0 or self._stop.is_set() or (attempt > 1 and time.monotonic() >= deadline.retries_end()):
                return result
            wait: float | None
            try:
                if self._direct is not None:
                    response = self._fast_post(self._direct, body, max(left, 0.001), headers)
                else:
                    response = self._client.post(self.endpoint, content=body, headers=headers, timeout=max(left, 0.001))
            except Exception as exc:  # httpx errors, and anything exotic (OverflowError, ssl, ...)
                result = SendResult("retryable", f"{type(exc).__name__} sending to {self._where}")
                if attempt >= _TRANSPORT_ATTEMPTS:
                    return result
                wait = 0.1
            else:
                result = replace(classify(response, self._where), answer_seconds=_answer_seconds(response))
                if result.kind != "retryable":
                    return result
                wait = retry_after_seconds(response.headers.get("retry-after"))
            if attempt >= self._max_attempts:
                return result
            pause = wait if wait is not None else backoff(attempt)
            if not deadline.wait_to_retry(pause, self._stop, end, result.reason):
                return result

    def reopen(self) -> None:
        self._client = self._new_client()
        self._stop = threading.Event()
        self._idle = []  # a fork child must not share the parent's sockets
        self._idle_lock = threading.Lock()
        if self._loop is not None:
            self._loop.forget()

    def close(self) -> None:
        self._stop.set()
        self._client.close()
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if self._loop is not None:
            self._loop.close()


def _answer_seconds(response: httpx.Response) -> float | None:
    """Our socket measures the answer alone; httpx's ``elapsed`` (request start to body read) is an upper bound."""
    measured = response.extensions.get(ANSWER_SECONDS)
    if isinstance(measured, float):
        return measured
    try:
        return response.elapsed.total_seconds()
    except RuntimeError:  # a response httpx did not time
        return None


def classify(response: httpx.Response, where: str) -> SendResult:
    """What an HTTP answer means for the batch."""
    status = response.status_code
    if 200 <= status < 300:
        return _otlp_success(response, where)
    if status in _RETRYABLE:
        return SendResult("retryable", f"HTTP {status} from {where}", status=status)
    if status == 413:
        return SendResult("too_large", f"HTTP 413 (body too large) from {where}", status=status)
    if 300 <= status < 400:
        target = redact_url(response.headers.get("location", "?"))[:200]
        reason = f"HTTP {status} redirect from {where} to {target}: fix the endpoint URL"
        return SendResult("rejected", reason, status=status)
    hint = {
        401: "wrong LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY for this LANGFUSE_BASE_URL (another region?)",
        403: "the key has no ingestion access, or ingestion is suspended",
        404: "no OTLP traces endpoint at this URL",
    }.get(status, "the endpoint rejected the batch")
    return SendResult("rejected", f"HTTP {status} from {where}: {hint}", status=status)


def _otlp_success(response: httpx.Response, where: str) -> SendResult:
    """A 2xx is a success only if it is an OTLP answer; partial success is reported as such."""
    body = response.content
    if not body.strip():
        return SendResult.ok()
    ctype = response.headers.get("content-type", "").lower()
    rejected, message = 0, ""
    if "protobuf" in ctype:
        try:
            parsed = ExportTraceServiceResponse.FromString(body)
        except DecodeError:
            return _not_otlp(response.status_code, ctype, where)
        rejected = parsed.partial_success.rejected_spans
        message = parsed.partial_success.error_message
    elif "json" in ctype:
        try:
            payload = json.loads(body)
        except ValueError:
            return _not_otlp(response.status_code, ctype, where)
        if not isinstance(payload, dict):
            return _not_otlp(response.status_code, ctype, where)
        partial = payload.get("partialSuccess") or payload.get("partial_success") or {}
        if isinstance(partial, dict):
            try:
                rejected = int(partial.get("rejectedSpans", partial.get("rejected_spans", 0)) or 0)
            except (TypeError, ValueError):
                rejected = 0
            message = str(partial.get("errorMessage", partial.get("error_message", "")) or "")
    else:
        return _not_otlp(response.status_code, ctype, where)
    if rejected > 0:
        detail = f": {message[:200]}" if message else ""
        return SendResult("partial", f"{where} rejected {rejected} spans (partial success){detail}", rejected)
    return SendResult.ok()


def _not_otlp(status: int, ctype: str, where: str) -> SendResult:
    shown = ctype.split(";")[0].strip() or "no content type"
    return SendResult(
        "retryable",
        f"HTTP {status} from {where} was not an OTLP answer ({shown}): a proxy, login or captive-portal page?",
        status=status,
    )
