"""Make what a finished span knows visible to Langfuse: a pure per-span transform for the road.

Langfuse ignores span events and reads only attributes (reference/langfuse-otel-ingestion.md).
Some facts only exist once a span has ended, when it can no longer be changed (a span processor's
``on_end`` gets an immutable span), so the road applies :func:`langfuse_visible` to each finished
span, before masking (the stack traces and messages it copies are then masked like everything
else):

* **Recorded exceptions** (``span.record_exception``, OpenInference's ``exception`` events): the
  type, message and stack trace become observation metadata (``exception.type``,
  ``exception.message``, ``exception.stacktrace``), so the stack trace is visible in Langfuse.
* **Failed spans** (status ERROR): the status message says where it failed (the innermost frame,
  ``at file:line in function``), not only the exception type and message; an explicit lower level
  set while the span ran (a logged WARNING) is raised to ERROR, and the error's message replaces
  the warning's. An ERROR logged inside the span keeps its own message (the first of the most
  severe level wins, as in :mod:`otel_basic.log_bridge`).
* **Run metadata** (``trace_attributes(metadata=...)``, OpenInference ``using_metadata``): OpenInference
  puts it on every span of the run as one JSON string, ``metadata``, which Langfuse keeps as a
  string under ``metadata.attributes``, so filters on its keys never match. Each key becomes a
  ``langfuse.trace.metadata.<key>`` attribute (top-level, filterable trace metadata); an explicit
  ``langfuse.trace.metadata.<key>`` already on the span wins.
* **Langfuse SDK metadata** (spans of the ``langfuse-sdk`` scope, and attributes stamped by
  ``propagate_attributes``): Langfuse SDK 5 JSON-encodes every metadata value, strings included
  (``"acme"`` is sent as ``"\\"acme\\""``). Langfuse's server stores OTLP metadata values as
  received, whatever ``x-langfuse-sdk-name``/``-version`` says (those headers only attribute the
  export to an SDK), so a JSON-encoded string is decoded here: a user filtering on ``acme`` finds
  it. Values that are not JSON strings (numbers, objects) are left as they are.

Pure: no I/O, no globals; returns ``None`` when nothing changes, so the common span costs no copy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_basic.spancopy import attributes_of, copy_span, plain

__all__ = ["langfuse_visible"]

LEVEL_ATTR = "langfuse.observation.level"
STATUS_MESSAGE_ATTR = "langfuse.observation.status_message"
OBS_METADATA = "langfuse.observation.metadata."
TRACE_METADATA = "langfuse.trace.metadata."
OPENINFERENCE_METADATA = "metadata"
EXCEPTION_TYPE = OBS_METADATA + "exception.type"
EXCEPTION_MESSAGE = OBS_METADATA + "exception.message"
EXCEPTION_STACKTRACE = OBS_METADATA + "exception.stacktrace"

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+?)\s*$', re.MULTILINE)


def _last_exception(span: ReadableSpan) -> Mapping[str, Any] | None:
    raw = getattr(span, "_events", None)
    if raw is not None and not raw:
        return None  # the common case: no events, and no tuple copy of them
    found: Mapping[str, Any] | None = None
    for event in span.events:
        if event.name == "exception":
            found = plain(event.attributes) if event.attributes else {}
    return found


def _where(stacktrace: Any) -> str | None:
    """``at file:line in function`` for the innermost frame of a Python traceback."""
    if not isinstance(stacktrace, str):
        return None
    frames = list(_FRAME.finditer(stacktrace))
    if not frames:
        return None
    last = frames[-1]
    return f"at {last['file']}:{last['line']} in {last['func']}"


def _decoded_metadata(attrs: Mapping[str, Any], sdk_span: bool) -> dict[str, Any]:
    """SDK-written metadata values that are JSON-encoded strings, decoded."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if not isinstance(value, str) or len(value) < 2 or value[0] != '"' or value[-1] != '"':
            continue
        if not (key.startswith(TRACE_METADATA) or (sdk_span and key.startswith(OBS_METADATA))):
            continue
        try:
            decoded = json.loads(value)
        except ValueError:
            continue
        if isinstance(decoded, str):
            out[key] = decoded
    return out


def _lifted_metadata(raw: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """OpenInference's ``metadata`` JSON object as ``langfuse.trace.metadata.<key>`` attributes."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in parsed.items():
        name = TRACE_METADATA + str(key)
        if name in attrs or value is None:
            continue
        out[name] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return out


def _is_sdk_encoded(span: ReadableSpan) -> bool:
    scope = span.instrumentation_scope
    return scope is not None and scope.name.startswith("langfuse-sdk")


def langfuse_visible(span: ReadableSpan) -> ReadableSpan | None:
    """A copy of ``span`` with the attributes Langfuse needs to show it right, or ``None`` if it
    already shows right (the usual case). Never raises for odd input: it only reads."""
    attrs = attributes_of(span) or {}
    updates: dict[str, Any] = {}

    exception = _last_exception(span)
    if exception is not None and EXCEPTION_STACKTRACE not in attrs:
        for source, target in (
            ("exception.type", EXCEPTION_TYPE),
            ("exception.message", EXCEPTION_MESSAGE),
            ("exception.stacktrace", EXCEPTION_STACKTRACE),
        ):
            value = exception.get(source)
            if isinstance(value, str) and value:
                updates[target] = value

    if span.status.status_code is StatusCode.ERROR:
        level = attrs.get(LEVEL_ATTR)
        if level is None or level != "ERROR" or STATUS_MESSAGE_ATTR not in attrs:
            message = span.status.description or ""
            if not message and exception is not None:
                message = f"{exception.get('exception.type', 'Error')}: {exception.get('exception.message', '')}"
            where = _where(exception.get("exception.stacktrace")) if exception is not None else None
            if where and where not in message:
                message = f"{message}\n{where}" if message else where
            if level is not None and level != "ERROR":
                updates[LEVEL_ATTR] = "ERROR"  # an explicit WARNING would hide the ERROR status
                updates[STATUS_MESSAGE_ATTR] = message or "error"
            elif STATUS_MESSAGE_ATTR not in attrs and message and message != span.status.description:
                updates[STATUS_MESSAGE_ATTR] = message

    if any(key.startswith(TRACE_METADATA) for key in attrs) or _is_sdk_encoded(span):
        updates.update(_decoded_metadata(attrs, _is_sdk_encoded(span)))
    run_metadata = attrs.get(OPENINFERENCE_METADATA)
    if isinstance(run_metadata, str) and run_metadata.startswith("{"):
        updates.update(_lifted_metadata(run_metadata, attrs))

    if not updates:
        return None
    return copy_span(span, attributes={**attrs, **updates})
