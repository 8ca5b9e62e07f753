"""Test helpers: a Langfuse-compatible OTLP receiver and decoded-span types.

Import cost matters (the pytest plugin loads this for every test run), so this
package only pulls in the stdlib, protobuf and opentelemetry-proto.
"""

from __future__ import annotations

from otel_basic.otlp_decode import (
    OTLPDecodeError,
    ReceivedEvent,
    ReceivedSpan,
    decode_otlp_json_lines,
    decode_request,
)
from otel_basic.testing.receiver import (
    LANGFUSE_TRACES_PATH,
    OTLP_TRACES_PATH,
    LangfuseReceiver,
    ReceivedRequest,
)

__all__ = [
    "LANGFUSE_TRACES_PATH",
    "OTLP_TRACES_PATH",
    "LangfuseReceiver",
    "OTLPDecodeError",
    "ReceivedEvent",
    "ReceivedRequest",
    "ReceivedSpan",
    "decode_otlp_json_lines",
    "decode_request",
]
