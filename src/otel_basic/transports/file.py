"""Writes requests to a local file as OTLP/JSON lines: the offline route (no endpoint configured
for the demo) and a debugging aid. Appends with one ``write`` per batch, flushed at once; the file
is private (0600) because it holds span data."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_basic.otlp_json import request_to_json_line
from otel_basic.redact import make_private_dir
from otel_basic.road import Deadline, SendResult


class FileTransport:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.endpoint = f"file://{path}"
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"FileTransport(path={str(self.path)!r})"

    def send(self, request: ExportTraceServiceRequest, deadline: Deadline) -> SendResult:
        try:
            line = request_to_json_line(request) + "\n"
            with self._lock:
                if not self.path.parent.is_dir():
                    make_private_dir(self.path.parent)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
        except OSError as exc:
            return SendResult("retryable", f"cannot write {self.path}: {exc.strerror or type(exc).__name__}")
        return SendResult.ok()

    def reopen(self) -> None:
        self._lock = threading.RLock()

    def close(self) -> None:
        pass
