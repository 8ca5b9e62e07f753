"""OTLP/JSON encoding of spans (hex ids, lowerCamelCase), one request per line, as in the OTel
file exporter spec. Used for the offline file route and for the spool's readable index."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan

from otel_basic.otlp_encode import encode_message

_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def _hex_ids(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (base64.b64decode(v).hex() if k in _ID_KEYS and isinstance(v, str) else _hex_ids(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def request_to_json_line(request: ExportTraceServiceRequest) -> str:
    """One ``ExportTraceServiceRequest`` as a single line of OTLP/JSON."""
    as_dict = json_format.MessageToDict(request)
    return json.dumps(_hex_ids(as_dict), separators=(",", ":"), ensure_ascii=False)


def spans_to_json_line(spans: Sequence[ReadableSpan]) -> str:
    return request_to_json_line(encode_message(spans))
