"""Python ``logging`` records -> events on the current span.

Langfuse ingests traces only (no logs endpoint), so a log line is useful there only as a span
event. Records at or above the configured level (INFO by default) become an event named ``log``
on the span that is current where they were logged, with level, logger name, message, source
location and exception details.

Outside any span a record is not attached anywhere: it still goes to whatever handlers your
logging configuration has (we never consume records), and records at WARNING and above are
additionally exported as a one-span trace named ``log.<LEVEL>`` so errors outside a run (at
start-up, in a background task) still reach the trace backend.
"""

from __future__ import annotations

import logging
import traceback

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode, Tracer

_SKIP = ("otel_basic", "opentelemetry", "httpx", "httpcore", "urllib3", "langfuse", "grpc", "asyncio")


class SpanEventHandler(logging.Handler):
    def __init__(self, tracer: Tracer, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._tracer = tracer

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_SKIP):
            return  # our own and the exporters' records: bridging them could loop
        try:
            attrs: dict[str, str | int] = {
                "log.severity": record.levelname,
                "log.logger": record.name,
                "log.message": record.getMessage(),
                "code.filepath": record.pathname,
                "code.lineno": record.lineno,
            }
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                attrs["exception.type"] = type(exc).__qualname__
                attrs["exception.message"] = str(exc)
                attrs["exception.stacktrace"] = "".join(traceback.format_exception(exc))
            span = trace.get_current_span()
            if span.is_recording():
                span.add_event("log", attributes=attrs)
            elif record.levelno >= logging.WARNING:
                with self._tracer.start_as_current_span(f"log.{record.levelname}") as orphan:
                    orphan.add_event("log", attributes=attrs)
                    if record.levelno >= logging.ERROR:
                        orphan.set_status(Status(StatusCode.ERROR, record.getMessage()[:200]))
        except Exception:  # a log call must never fail because of telemetry
            self.handleError(record)


def install(tracer: Tracer, level: int) -> SpanEventHandler:
    """Attach the bridge to the root logger without changing what the host's handlers print.

    Records below the root logger's level never reach handlers, so when the root is at its
    default (WARNING) and we want INFO, the root is lowered to INFO and each existing root handler
    that had no level of its own gets WARNING (what it printed before). With no root handlers,
    Python's last-resort stderr output would stop once ours is added, so an equivalent WARNING
    stderr handler is added in its place.
    """
    handler = SpanEventHandler(tracer, level)
    root = logging.getLogger()
    if not root.handlers:
        fallback = logging.StreamHandler()
        fallback.setLevel(logging.WARNING)
        fallback.set_name("otel-basic-last-resort")
        root.addHandler(fallback)
    if root.level == logging.WARNING and level < logging.WARNING:
        for existing in root.handlers:
            if existing.level == logging.NOTSET:
                existing.setLevel(logging.WARNING)
        root.setLevel(level)
    root.addHandler(handler)
    return handler


def uninstall(handler: SpanEventHandler) -> None:
    logging.getLogger().removeHandler(handler)
