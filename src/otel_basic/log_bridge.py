"""Python ``logging`` records -> what a Langfuse user sees.

Langfuse ignores span events (reference/langfuse-otel-ingestion.md), so a record is made visible
through the attributes Langfuse reads:

* **Inside a span** (a workflow step, a tool, an LLM call): the record becomes a ``log`` event (for
  other OTLP backends) and, at WARNING or above, raises the observation's level
  (``langfuse.observation.level``; never lowers it: DEBUG < DEFAULT < WARNING < ERROR) and puts its
  message in the observation's status message, with logger, ``file:line``, function and stack
  trace (when ``exc_info`` is set) as observation metadata (``log.*`` keys). The first record of
  the most severe level wins: a later record of the same or a lower level does not overwrite it.
* **Outside any span** (start-up, a background task): records at or above ``trace_level``
  (``OTEL_BASIC_LOG_TRACE_LEVEL``, default ERROR) become a one-span trace named ``log.<LEVEL>``,
  tagged ``log``, whose level, status message and output are the message, whose input names the
  logger and source location, and whose metadata holds the stack trace. WARNING records outside
  spans are not traced by default: one trace per warning floods the trace list; set
  ``OTEL_BASIC_LOG_TRACE_LEVEL=warning`` to trace them, ``off`` for none.

Installing the bridge changes nothing the host sees in its own logging: no logger level, no
handler and no handler level is touched. Records are captured with a log record factory, not a
handler on the root logger, because a root handler silences Python's last-resort stderr output
and turns a later ``logging.basicConfig()`` into a silent no-op. The trade-off: a record is only
created (and so only captured) when the logger that emits it is enabled for its level. With
Python's default (root at WARNING), INFO records are captured only from loggers the application
enabled for INFO, e.g. ``logging.basicConfig(level=logging.INFO)`` or
``logging.getLogger("myapp").setLevel(logging.INFO)``; otel-basic never lowers a level for you.
Records are seen as they are created, so a filter on the emitting logger does not hide a record
from the bridge (a filter on your handlers still decides what they print).
"""

from __future__ import annotations

import contextvars
import json
import logging
import traceback
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

__all__ = ["LEVEL_ATTR", "STATUS_MESSAGE_ATTR", "SpanEventHandler", "install", "langfuse_level", "uninstall"]

LEVEL_ATTR = "langfuse.observation.level"
STATUS_MESSAGE_ATTR = "langfuse.observation.status_message"
INPUT_ATTR = "langfuse.observation.input"
OUTPUT_ATTR = "langfuse.observation.output"
METADATA_PREFIX = "langfuse.observation.metadata."
TRACE_TAGS_ATTR = "langfuse.trace.tags"
LEVEL_ORDER = ("DEBUG", "DEFAULT", "WARNING", "ERROR")

_SKIP = ("otel_basic", "opentelemetry", "httpx", "httpcore", "urllib3", "langfuse", "grpc", "asyncio")
# True while a record is being bridged (per thread and task): what the bridge itself logs is not bridged.
_bridging: contextvars.ContextVar[bool] = contextvars.ContextVar("otel_basic_bridging", default=False)


def langfuse_level(levelno: int) -> str:
    """The Langfuse observation level of a logging level."""
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARNING"
    if levelno >= logging.INFO:
        return "DEFAULT"
    return "DEBUG"


def _rank(level: Any) -> int:
    return LEVEL_ORDER.index(level) if level in LEVEL_ORDER else LEVEL_ORDER.index("DEFAULT")


def _stacktrace(record: logging.LogRecord) -> str | None:
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None:
        return "".join(traceback.format_exception(exc))
    return record.stack_info or None


def _details(record: logging.LogRecord, message: str) -> dict[str, str | int]:
    """The record as flat attributes: the ``log`` event's, and the observation metadata's."""
    out: dict[str, str | int] = {
        "log.severity": record.levelname,
        "log.logger": record.name,
        "log.message": message,
        "code.filepath": record.pathname,
        "code.lineno": record.lineno,
        "code.function": record.funcName or "",
    }
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None:
        out["exception.type"] = type(exc).__qualname__
        out["exception.message"] = str(exc)
    stack = _stacktrace(record)
    if stack:
        out["exception.stacktrace" if exc is not None else "log.stack"] = stack
    return out


def _metadata(record: logging.LogRecord) -> dict[str, str | int]:
    """Observation metadata (top-level keys in Langfuse) describing where the record came from."""
    meta: dict[str, str | int] = {
        METADATA_PREFIX + "log.logger": record.name,
        METADATA_PREFIX + "log.level": record.levelname,
        METADATA_PREFIX + "log.location": f"{record.pathname}:{record.lineno}",
        METADATA_PREFIX + "log.function": record.funcName or "",
    }
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None:
        meta[METADATA_PREFIX + "log.exception"] = f"{type(exc).__qualname__}: {exc}"
    stack = _stacktrace(record)
    if stack:
        meta[METADATA_PREFIX + "log.stacktrace"] = stack
    return meta


def _current_level(span: Span) -> Any:
    attributes = getattr(span, "attributes", None)  # SDK spans expose their attributes; others: unknown
    return attributes.get(LEVEL_ATTR) if attributes is not None else None


class SpanEventHandler(logging.Handler):
    """Bridges one record: see the module docstring. ``trace_level=None``: no one-span traces."""

    def __init__(self, tracer: Tracer, level: int = logging.INFO, *, trace_level: int | None = logging.ERROR) -> None:
        super().__init__(level)
        self._tracer = tracer
        self.trace_level = trace_level
        self.active = True
        self._factory: Callable[..., logging.LogRecord] | None = None
        self._previous: Callable[..., logging.LogRecord] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if not self.active or record.name.startswith(_SKIP) or _bridging.get():
            return  # our own and the exporters' records: bridging them could loop
        token = _bridging.set(True)
        try:
            message = record.getMessage()
            span = trace.get_current_span()
            if span.is_recording():
                self._inside(span, record, message)
            elif self.trace_level is not None and record.levelno >= self.trace_level:
                self._own_trace(record, message)
        except Exception:  # a log call must never fail because of telemetry
            self.handleError(record)
        finally:
            _bridging.reset(token)

    def _inside(self, span: Span, record: logging.LogRecord, message: str) -> None:
        span.add_event("log", attributes=_details(record, message))
        if record.levelno < logging.WARNING:
            return
        new = langfuse_level(record.levelno)
        if _rank(new) <= _rank(_current_level(span)):
            return  # the first record of the most severe level keeps the status message
        span.set_attribute(LEVEL_ATTR, new)
        span.set_attribute(STATUS_MESSAGE_ATTR, message)
        span.set_attributes(_metadata(record))

    def _own_trace(self, record: logging.LogRecord, message: str) -> None:
        source = {
            "logger": record.name,
            "location": f"{record.pathname}:{record.lineno}",
            "function": record.funcName or "",
        }
        attributes: dict[str, Any] = {
            LEVEL_ATTR: langfuse_level(record.levelno),
            STATUS_MESSAGE_ATTR: message,
            INPUT_ATTR: json.dumps(source),
            OUTPUT_ATTR: message,
            TRACE_TAGS_ATTR: ["log"],
            **_metadata(record),
        }
        with self._tracer.start_as_current_span(
            f"log.{record.levelname}",
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as orphan:
            orphan.add_event("log", attributes=_details(record, message))
            if record.levelno >= logging.ERROR:
                orphan.set_status(Status(StatusCode.ERROR, message[:200]))


def install(tracer: Tracer, level: int, *, trace_level: int | None = logging.ERROR) -> SpanEventHandler:
    """Bridge every record of ``level`` or above that the application's loggers create.

    Nothing in the host's logging configuration changes (see the module docstring for why a log
    record factory and not a root handler). The previous factory keeps producing the records;
    ours only looks at them.
    """
    handler = SpanEventHandler(tracer, level, trace_level=trace_level)
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if handler.active and record.levelno >= handler.level:
            handler.handle(record)
        return record

    handler._factory, handler._previous = factory, previous
    logging.setLogRecordFactory(factory)
    return handler


def uninstall(handler: SpanEventHandler) -> None:
    """Stop bridging; restore the previous record factory unless someone installed another since."""
    handler.active = False
    if handler._factory is not None and logging.getLogRecordFactory() is handler._factory:
        assert handler._previous is not None
        logging.setLogRecordFactory(handler._previous)
