"""Decode OTLP trace payloads into plain, comparable Python objects.

Tests and the offline demo need to look at exported spans without caring how they
travelled (OTLP/protobuf, OTLP/JSON, or a JSON Lines file written while offline).
This module turns all of them into :class:`ReceivedSpan` values. It only depends on
``protobuf`` and ``opentelemetry-proto`` so the application can import it cheaply.
"""

from __future__ import annotations

import base64
import json
import os
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

__all__ = [
    "OTLPDecodeError",
    "ReceivedEvent",
    "ReceivedSpan",
    "decode_otlp_json",
    "decode_otlp_json_lines",
    "decode_protobuf",
    "decode_request",
    "request_from_json_obj",
    "request_from_proto",
    "spans_from_request",
    "spans_to_otlp_json",
]

_HEX_DIGITS = frozenset(string.hexdigits)


class OTLPDecodeError(ValueError):
    """The payload is not a valid OTLP ExportTraceServiceRequest (a receiver answers 400)."""


@dataclass(frozen=True)
class ReceivedEvent:
    """One span event, with attributes already converted to Python values."""

    name: str
    time_unix_nano: int
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def time(self) -> int:
        """Alias of ``time_unix_nano`` (the OTLP field is called ``time_unix_nano``)."""
        return self.time_unix_nano


@dataclass(frozen=True)
class ReceivedSpan:
    """A decoded span: what a backend would have stored, in test-friendly types.

    Ids are lower-case hex strings (32 chars for traces, 16 for spans) so they compare
    directly with ``format(ctx.trace_id, "032x")`` and with Langfuse UI ids.
    """

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    kind: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[ReceivedEvent] = field(default_factory=list)
    status_code: str = "UNSET"
    status_message: str = ""
    resource: dict[str, Any] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""

    @property
    def duration_ms(self) -> float:
        """Wall-clock duration in milliseconds (0 when the end is before the start)."""
        return max(0, self.end_time_unix_nano - self.start_time_unix_nano) / 1_000_000

    @property
    def is_root(self) -> bool:
        """True when the span has no parent (it starts a trace, or a remote-less root)."""
        return self.parent_span_id is None


# --------------------------------------------------------------------------- decoding


def _any_value(value: AnyValue) -> Any:
    """Convert an OTLP AnyValue into the natural Python value (None when unset)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bytes_value":
        return bytes(value.bytes_value)
    if which == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return None


def _attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


def _enum_suffix(full_name: str, prefix: str) -> str:
    return full_name[len(prefix) :] if full_name.startswith(prefix) else full_name


def _span_kind(kind: int) -> str:
    try:
        name: str = Span.SpanKind.Name(kind)
    except ValueError:
        return str(kind)
    return _enum_suffix(name, "SPAN_KIND_")


def _status_code(code: int) -> str:
    try:
        name: str = Status.StatusCode.Name(code)
    except ValueError:
        return str(code)
    return _enum_suffix(name, "STATUS_CODE_")


def spans_from_request(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """Flatten a parsed request into spans, validating ids the way Langfuse does.

    A span without a 16-byte trace id or an 8-byte span id makes the whole batch
    invalid, mirroring the server's 400 for "spans missing or with bad traceId/spanId".
    """
    out: list[ReceivedSpan] = []
    for rs in request.resource_spans:
        resource = _attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                if len(span.trace_id) != 16 or not any(span.trace_id):
                    raise OTLPDecodeError(f"span {span.name!r}: invalid traceId {span.trace_id.hex()!r}")
                if len(span.span_id) != 8 or not any(span.span_id):
                    raise OTLPDecodeError(f"span {span.name!r}: invalid spanId {span.span_id.hex()!r}")
                if span.parent_span_id and len(span.parent_span_id) != 8:
                    raise OTLPDecodeError(
                        f"span {span.name!r}: invalid parentSpanId {span.parent_span_id.hex()!r}"
                    )
                out.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() if any(span.parent_span_id) else None,
                        kind=_span_kind(span.kind),
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        events=[
                            ReceivedEvent(
                                name=ev.name,
                                time_unix_nano=ev.time_unix_nano,
                                attributes=_attributes(ev.attributes),
                            )
                            for ev in span.events
                        ],
                        status_code=_status_code(span.status.code),
                        status_message=span.status.message,
                        resource=dict(resource),
                        scope_name=ss.scope.name,
                        scope_version=ss.scope.version,
                    )
                )
    return out


def decode_protobuf(body: bytes) -> list[ReceivedSpan]:
    """Decode a binary (``application/x-protobuf``) ExportTraceServiceRequest."""
    return spans_from_request(request_from_proto(body))


def _id_for_parse_dict(value: Any, nbytes: int) -> Any:
    """OTLP/JSON ids are hex, protobuf's JSON mapping wants base64: translate hex ones.

    Base64 ids (what ``MessageToDict`` produces) are passed through untouched; the
    lengths never collide (32 hex chars vs 24 base64 chars for a trace id).
    """
    if isinstance(value, str) and len(value) == 2 * nbytes and _HEX_DIGITS.issuperset(value):
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    return value


def _fix_ids(obj: dict[str, Any], keys: Sequence[tuple[str, int]]) -> dict[str, Any]:
    fixed = dict(obj)
    for key, nbytes in keys:
        for variant in (key, _snake(key)):
            if variant in fixed:
                fixed[variant] = _id_for_parse_dict(fixed[variant], nbytes)
    return fixed


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


def _list_field(obj: Mapping[str, Any], key: str) -> list[Any] | None:
    for variant in (key, _snake(key)):
        if variant in obj:
            value = obj[variant]
            if not isinstance(value, list):
                raise OTLPDecodeError(f"{key!r} must be an array")
            return value
    return None


def _set_list(obj: dict[str, Any], key: str, value: list[Any]) -> None:
    for variant in (key, _snake(key)):
        if variant in obj:
            obj[variant] = value
            return


def _normalise_json(payload: Any) -> dict[str, Any]:
    """Rewrite hex ids in an OTLP/JSON document so ``json_format.ParseDict`` accepts it."""
    if not isinstance(payload, dict):
        raise OTLPDecodeError("OTLP/JSON body must be an object")
    doc = dict(payload)
    resource_spans = _list_field(doc, "resourceSpans") or []
    new_rs: list[Any] = []
    for rs in resource_spans:
        if not isinstance(rs, dict):
            raise OTLPDecodeError("resourceSpans entries must be objects")
        rs = dict(rs)
        new_ss: list[Any] = []
        for ss in _list_field(rs, "scopeSpans") or []:
            if not isinstance(ss, dict):
                raise OTLPDecodeError("scopeSpans entries must be objects")
            ss = dict(ss)
            new_spans: list[Any] = []
            for span in _list_field(ss, "spans") or []:
                if not isinstance(span, dict):
                    raise OTLPDecodeError("spans entries must be objects")
                span = _fix_ids(span, (("traceId", 16), ("spanId", 8), ("parentSpanId", 8)))
                links = _list_field(span, "links")
                if links is not None:
                    _set_list(
                        span,
                        "links",
                        [
                            _fix_ids(link, (("traceId", 16), ("spanId", 8)))
                            if isinstance(link, dict)
                            else link
                            for link in links
                        ],
                    )
                new_spans.append(span)
            _set_list(ss, "spans", new_spans)
            new_ss.append(ss)
        _set_list(rs, "scopeSpans", new_ss)
        new_rs.append(rs)
    _set_list(doc, "resourceSpans", new_rs)
    return doc


def request_from_json_obj(payload: Any) -> ExportTraceServiceRequest:
    """Parse an already-loaded OTLP/JSON object (hex or base64 ids, enum names or ints)."""
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(_normalise_json(payload), request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OTLPDecodeError(f"invalid OTLP/JSON body: {exc}") from exc
    return request


def decode_otlp_json(body: bytes | str) -> list[ReceivedSpan]:
    """Decode one OTLP/JSON ExportTraceServiceRequest document."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OTLPDecodeError(f"body is not valid JSON: {exc}") from exc
    return spans_from_request(request_from_json_obj(payload))


def decode_request(body: bytes, content_type: str) -> list[ReceivedSpan]:
    """Decode an (already decompressed) OTLP/HTTP trace export body by its content type.

    Raises :class:`OTLPDecodeError` for unsupported content types or bad payloads.
    """
    ctype = (content_type or "").lower()
    if "application/x-protobuf" in ctype or "application/protobuf" in ctype:
        return decode_protobuf(body)
    if "application/json" in ctype:
        return decode_otlp_json(body)
    raise OTLPDecodeError(f"unsupported content type {content_type!r}")


def decode_otlp_json_lines(path_or_text: str | os.PathLike[str]) -> list[ReceivedSpan]:
    """Decode a JSON Lines file (or its text) where each line is one OTLP/JSON request.

    A ``str`` that starts with ``{`` (after whitespace) or is empty is treated as the
    text itself; any other ``str`` or a path-like object is read as a file. Blank lines
    are skipped; a bad line raises :class:`OTLPDecodeError` naming its line number.
    """
    if isinstance(path_or_text, str) and (not path_or_text.strip() or path_or_text.lstrip().startswith("{")):
        text = path_or_text
    else:
        text = Path(path_or_text).read_text(encoding="utf-8")
    spans: list[ReceivedSpan] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            spans.extend(decode_otlp_json(line))
        except OTLPDecodeError as exc:
            raise OTLPDecodeError(f"line {lineno}: {exc}") from exc
    return spans


# --------------------------------------------------------------------------- encoding


def _to_any_value_json(value: Any) -> dict[str, Any]:
    """Python value -> OTLP/JSON AnyValue (inverse of :func:`_any_value`)."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, bytes | bytearray):
        return {"bytesValue": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": _to_kv_json(value)}}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_to_any_value_json(v) for v in value]}}
    return {"stringValue": str(value)}


def _to_kv_json(attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": str(k), "value": _to_any_value_json(v)} for k, v in attrs.items()]


def spans_to_otlp_json(spans: Iterable[ReceivedSpan]) -> dict[str, Any]:
    """Re-encode spans as one OTLP/JSON ExportTraceServiceRequest (hex ids).

    Spans are grouped by (resource, scope) in first-seen order, so
    ``decode_otlp_json(json.dumps(spans_to_otlp_json(s)))`` round-trips.
    """
    groups: dict[str, tuple[dict[str, Any], dict[tuple[str, str], list[dict[str, Any]]]]] = {}
    for span in spans:
        res_key = json.dumps(_to_kv_json(span.resource), sort_keys=True)
        res_entry = groups.setdefault(res_key, (span.resource, {}))
        span_json: dict[str, Any] = {
            "traceId": span.trace_id,
            "spanId": span.span_id,
            "name": span.name,
            "kind": f"SPAN_KIND_{span.kind}" if not span.kind.isdigit() else int(span.kind),
            "startTimeUnixNano": str(span.start_time_unix_nano),
            "endTimeUnixNano": str(span.end_time_unix_nano),
            "attributes": _to_kv_json(span.attributes),
            "events": [
                {
                    "timeUnixNano": str(ev.time_unix_nano),
                    "name": ev.name,
                    "attributes": _to_kv_json(ev.attributes),
                }
                for ev in span.events
            ],
            "status": {
                "code": f"STATUS_CODE_{span.status_code}"
                if not span.status_code.isdigit()
                else int(span.status_code),
                "message": span.status_message,
            },
        }
        if span.parent_span_id:
            span_json["parentSpanId"] = span.parent_span_id
        res_entry[1].setdefault((span.scope_name, span.scope_version), []).append(span_json)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _to_kv_json(resource)},
                "scopeSpans": [
                    {"scope": {"name": name, "version": version}, "spans": span_list}
                    for (name, version), span_list in scopes.items()
                ],
            }
            for resource, scopes in groups.values()
        ]
    }


def request_from_proto(data: bytes) -> ExportTraceServiceRequest:
    """Parse protobuf bytes into the generated message (for callers needing raw access)."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise OTLPDecodeError(f"invalid OTLP protobuf body: {exc}") from exc
    return request
