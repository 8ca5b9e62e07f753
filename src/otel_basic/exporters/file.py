"""Writes spans to a local file as OTLP/JSON lines: the offline route (no endpoint configured
for the demo) and a debugging aid. Appends with one ``write`` per batch, flushed at once."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_basic.exporters.base import ExportFailure, ThreadResult
from otel_basic.otlp_json import request_to_json_line, spans_to_json_line


class OtlpJsonFileExporter(SpanExporter):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.endpoint = f"file://{path}"
        self._lock = threading.Lock()
        self._result = ThreadResult()

    @property
    def last_failure(self) -> ExportFailure | None:
        """Why this thread's last export failed (None after a success)."""
        return self._result.failure

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._write(lambda: spans_to_json_line(spans))

    def send_request(self, request: bytes) -> SpanExportResult:
        return self._write(lambda: request_to_json_line(ExportTraceServiceRequest.FromString(request)))

    def _write(self, render: Callable[[], str]) -> SpanExportResult:
        try:
            line = render() + "\n"
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
        except OSError as exc:
            self._result.failure = ExportFailure("transient", f"cannot write {self.path}: {exc.strerror}")
            return SpanExportResult.FAILURE
        self._result.failure = None
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
