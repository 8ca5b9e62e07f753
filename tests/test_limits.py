"""Payload limits: oversized values are cut (with a marker saying how big they were), data URIs are
replaced by a short description, and no span is ever dropped."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

from otel_basic.limits import DEFAULT_MAX_ATTRIBUTE_CHARS, Limiter, truncation_marker
from otel_basic.masking import Masker
from otel_basic.road import Prepare

FIVE_MB = 5 * 1024 * 1024


def make_span(attributes: dict[str, Any], events: Sequence[Event] = (), status: Status | None = None) -> ReadableSpan:
    ctx = SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1))
    return ReadableSpan(
        "s", context=ctx, attributes=attributes, events=events, status=status or Status(), start_time=1, end_time=2
    )


def export(spans: Sequence[ReadableSpan], **kwargs: Any) -> list[ReadableSpan]:
    limiter = Limiter(**kwargs)
    return [limiter.limit_span(span) for span in spans]


def data_uri(n_bytes: int, mime: str = "image/png") -> str:
    return (
        f"data:{mime};base64,"
        + base64.b64encode(bytes(range(256)) * (n_bytes // 256) + b"x" * (n_bytes % 256)).decode()
    )


def test_a_5mb_body_is_truncated_with_marker_and_original_size() -> None:
    body = ("Dear team, " * (FIVE_MB // 11 + 1))[:FIVE_MB]
    (out,) = export([make_span({"input.value": body, "n": 3})])
    value = out.attributes["input.value"] if out.attributes else None
    assert isinstance(value, str)
    marker = truncation_marker(FIVE_MB)
    assert marker == f"…[truncated by otel-basic: original {FIVE_MB} chars]"
    assert value == body[:DEFAULT_MAX_ATTRIBUTE_CHARS] + marker
    assert out.attributes is not None and out.attributes["n"] == 3


def test_the_limit_is_configurable_and_validated() -> None:
    (out,) = export([make_span({"a": "x" * 100})], max_attribute_chars=10)
    assert out.attributes is not None and out.attributes["a"] == "x" * 10 + truncation_marker(100)
    with pytest.raises(ValueError):
        Limiter(max_attribute_chars=0)


def test_data_uris_are_replaced_by_type_and_size() -> None:
    uri = data_uri(123456)
    content = json.dumps([{"type": "text", "text": "see image"}, {"type": "image_url", "image_url": {"url": uri}}])
    (out,) = export([make_span({"llm.input_messages.0.message.content": content, "plain": uri})])
    assert out.attributes is not None
    assert out.attributes["plain"] == "<data-uri:image/png, 123456 bytes omitted>"
    replaced = out.attributes["llm.input_messages.0.message.content"]
    assert isinstance(replaced, str) and "base64" not in replaced
    assert json.loads(replaced)[1]["image_url"]["url"] == "<data-uri:image/png, 123456 bytes omitted>"


def test_short_data_uris_and_disabled_replacement_are_kept() -> None:
    tiny = "data:image/gif;base64,R0lGODlhAQABAAAAACw="
    (out,) = export([make_span({"a": tiny})])
    assert out.attributes is not None and out.attributes["a"] == tiny
    uri = data_uri(3000)
    (out,) = export([make_span({"a": uri})], replace_data_uris=False)
    assert (out.attributes is not None and out.attributes["a"] == uri[:DEFAULT_MAX_ATTRIBUTE_CHARS]) or uri


def test_events_sequences_and_status_are_limited() -> None:
    big = "y" * 40000
    event = Event("log", {"message": big, "level": 20}, timestamp=7)
    status = Status(StatusCode.ERROR, big)
    (out,) = export([make_span({"seq": ("short", big), "nested": {"k": big}}, [event], status)])
    assert out.attributes is not None
    seq = out.attributes["seq"]
    assert isinstance(seq, tuple) and seq[0] == "short" and str(seq[1]).endswith(truncation_marker(40000))
    assert str(out.events[0].attributes["message"]).endswith(truncation_marker(40000))  # type: ignore[index]
    assert out.events[0].timestamp == 7
    assert out.status.description is not None and out.status.description.endswith(truncation_marker(40000))


def test_small_spans_pass_through_untouched_and_none_are_dropped() -> None:
    spans = [make_span({"a": "short", "n": 1}) for _ in range(5)] + [make_span({"big": "z" * 20000})]
    out = export(spans)
    assert len(out) == 6
    assert all(a is b for a, b in zip(out[:5], spans[:5], strict=True))
    assert out[5] is not spans[5] and out[5].context == spans[5].context


def test_masking_then_limits_on_a_huge_pii_body() -> None:
    body = "Call +44 20 7946 0958 or write ada.lovelace@example.org. " * 100000  # ~5.7 MB
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("big", attributes={"input.value": body}):
        pass
    (out,) = Prepare(Masker(), Limiter())(memory.get_finished_spans())
    value = out.attributes["input.value"] if out.attributes else ""
    assert isinstance(value, str) and "ada.lovelace" not in value and "7946" not in value
    assert "<email:" in value and value.endswith("chars]") and len(value) < 17000
