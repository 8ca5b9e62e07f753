"""``OTEL_TRACES_EXPORTER=console``: each request printed to stdout as one line of OTLP/JSON (the
spec leaves the console format to the SDK; OTLP/JSON is what the file route writes, so the same
tools read both). Spans are masked and limited like on every other route: they took the road."""

from __future__ import annotations

import sys
import threading

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_basic.otlp_json import request_to_json_line
from otel_basic.road import Deadline, SendResult


class ConsoleTransport:
    endpoint = "console"

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def send(self, request: ExportTraceServiceRequest, deadline: Deadline) -> SendResult:
        line = request_to_json_line(request)
        with self._lock:
            print(line, file=sys.stdout, flush=True)
        return SendResult.ok()

    def reopen(self) -> None:
        self._lock = threading.RLock()

    def close(self) -> None:
        pass
