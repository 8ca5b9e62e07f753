"""The direct OTLP encoder writes exactly the bytes the SDK's encoder serializes to.

Generated spans cover every attribute value type OTLP has (and some it has not: objects, integers
outside int64, lone surrogates, which both encoders leave out), nesting, events, links, status
codes and descriptions, remote and local parents, trace state, several resources and scopes, and
the encoder's memory of short key/value pairs (``True`` and ``1`` are equal in Python and must not
share an encoding).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from otel_basic.otlp_encode import encode_message, encode_request


@pytest.fixture(autouse=True)
def _quiet_sdk_encoder() -> Any:
    """The SDK's encoder logs a stack trace for each value it leaves out."""
    logger = logging.getLogger("opentelemetry.exporter.otlp.proto.common._internal")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


texts = st.text(max_size=40) | st.sampled_from(["", "LLM", "a" * 200, "é☃\U0001f600", "\ud800", "x\udfffy"])
scalars = (
    st.none()
    | st.booleans()
    | texts
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, 1, -1, 127, 128, 2**63 - 1, -(2**63), 2**63, 2**64])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars | st.just(object()),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
keys = st.text(max_size=12) | st.sampled_from(["input.value", "openinference.span.kind", "a", "b", ""])
attributes = st.dictionaries(keys, values, max_size=6)
ids = st.integers(min_value=1, max_value=2**64 - 1)
contexts = st.builds(
    lambda t, s, remote, state: SpanContext(t, s, remote, TraceFlags(1), TraceState(state)),
    st.integers(min_value=1, max_value=2**128 - 1),
    ids,
    st.booleans(),
    st.sampled_from([[], [("vendor", "v1")], [("a", "1"), ("b", "2")]]),
)
resources = st.sampled_from(
    [
        Resource({"service.name": "svc"}),
        Resource({"service.name": "other", "n": 3}, "https://schema/1"),
        Resource({}),
    ]
)
scopes = st.sampled_from(
    [
        None,
        InstrumentationScope("openinference.instrumentation.llama_index", "4.6.1"),
        InstrumentationScope("otel_basic", None, "https://schema/s"),
        InstrumentationScope("with-attrs", "1", None, {"k": "v", "n": 2}),
    ]
)
times = st.none() | st.integers(min_value=0, max_value=2**64 - 1)
events = st.builds(Event, texts, attributes | st.none(), st.integers(min_value=0, max_value=2**64 - 1) | st.just(0))
links = st.builds(Link, contexts, attributes | st.none())
statuses = st.builds(
    lambda code, text: Status(code, text if code is StatusCode.ERROR else None),
    st.sampled_from(list(StatusCode)),
    st.none() | texts,
)
spans = st.builds(
    lambda name, ctx, parent, resource, attrs, evs, lks, kind, status, start, end, scope: ReadableSpan(
        name,
        ctx,
        parent,
        resource,
        attrs,
        evs,
        lks,
        kind,
        None,
        status,
        start,
        end,
        scope,
    ),
    texts,
    contexts,
    st.none() | contexts,
    resources,
    attributes,
    st.lists(events, max_size=3),
    st.lists(links, max_size=2),
    st.sampled_from(list(SpanKind)),
    statuses,
    times,
    times,
    scopes,
)


def sdk_bytes(batch: list[ReadableSpan]) -> bytes:
    data: bytes = encode_spans(batch).SerializeToString()
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(spans, min_size=1, max_size=5))
def test_same_bytes_as_the_sdk_encoder(batch: list[ReadableSpan]) -> None:
    try:
        expected = sdk_bytes(batch)
    except Exception:  # a span name or event name that is not valid UTF-8: the road's skeleton fallback
        with pytest.raises(ValueError):  # _Unencodable
            encode_request(batch)
        return
    assert encode_request(batch) == expected
    # again: the remembered keys and key/value pairs give the same bytes
    assert encode_request(batch) == expected


def span_with(attrs: dict[str, Any]) -> ReadableSpan:
    ctx = SpanContext(1, 2, False, TraceFlags(1))
    return ReadableSpan("s", ctx, None, Resource({}), attrs, (), (), SpanKind.INTERNAL, None, Status(), 1, 2)


def test_equal_python_values_of_other_types_keep_their_own_encoding() -> None:
    # True == 1 == 1.0 and hash alike: a cache keyed by value alone would send one for the other
    for value in (True, 1, 1.0, False, 0, 0.0, "1"):
        batch = [span_with({"k": value})]
        assert encode_request(batch) == sdk_bytes(batch), value
    decoded = encode_message([span_with({"a": True, "b": 1, "c": 1.0})]).resource_spans[0].scope_spans[0].spans[0]
    kinds = {kv.key: kv.value.WhichOneof("value") for kv in decoded.attributes}
    assert kinds == {"a": "bool_value", "b": "int_value", "c": "double_value"}


def test_a_value_otlp_cannot_hold_leaves_out_that_attribute_only() -> None:
    attrs = {"ok": "kept", "big": 2**64, "obj": object(), "surrogate": "\ud83d", "nested": [1, 2**70], "n": math.inf}
    batch = [span_with(attrs)]
    assert encode_request(batch) == sdk_bytes(batch)
    span = encode_message(batch).resource_spans[0].scope_spans[0].spans[0]
    assert [kv.key for kv in span.attributes] == ["ok", "n"]


def test_a_value_nested_too_deep_for_protobuf_leaves_out_that_attribute_not_the_batch() -> None:
    # found by a hostile review: the bytes were written, parsing them back (over 100 levels) failed,
    # and the road dropped every span of the batch
    deep_list: Any = "x"
    for _ in range(60):
        deep_list = [deep_list]
    deep_map: Any = "x"
    for _ in range(40):
        deep_map = {"k": deep_map}
    shallow: Any = "x"
    for _ in range(15):  # 75 levels: kept
        shallow = {"k": [shallow]}
    batch = [span_with({"list": deep_list, "map": deep_map, "ok": "kept", "shallow": shallow}), span_with({"b": 1})]
    request = encode_message(batch)
    spans = request.resource_spans[0].scope_spans[0].spans
    assert [kv.key for kv in spans[0].attributes] == ["ok", "shallow"]
    assert [kv.key for kv in spans[1].attributes] == ["b"]


class _OwnEncode(str):
    def encode(self, *args: Any, **kwargs: Any) -> bytes:  # type: ignore[override]
        return b"EVIL"


class _OddCompare(int):
    def __lt__(self, other: object) -> bool:
        return True


def test_subclasses_are_encoded_by_their_value_and_never_poison_the_memory() -> None:
    """A str subclass with its own ``encode`` made its key's bytes "EVIL" and left them remembered for
    the plain key (every later span's ``llm.model_name``); protobuf reads a string's characters."""
    first = [span_with({_OwnEncode("llm.model_name"): _OwnEncode("gpt"), "n": _OddCompare(5)})]
    later = [span_with({"llm.model_name": "gpt"})]
    for batch in (first, later, first, later):
        assert encode_request(batch) == sdk_bytes(batch)
    span = encode_message(later).resource_spans[0].scope_spans[0].spans[0]
    assert [(kv.key, kv.value.string_value) for kv in span.attributes] == [("llm.model_name", "gpt")]


def test_bytes_where_protobuf_takes_text_and_invalid_counts_or_times_as_the_sdk_does() -> None:
    ctx = SpanContext(1, 2, False, TraceFlags(1))
    scope = InstrumentationScope(b"bytes-scope", b"1.0")  # type: ignore[arg-type]  # get_tracer(b"...") makes these
    batch = [ReadableSpan("s", ctx, None, Resource({}), {b"k": "v", None: 1}, instrumentation_scope=scope)]  # type: ignore[dict-item]
    assert encode_request(batch) == sdk_bytes(batch)
    for bad in (
        ReadableSpan("s", ctx, None, Resource({}), {}, start_time=-1),
        ReadableSpan("s", ctx, None, Resource({}), {}, start_time=True),  # type: ignore[arg-type]
        ReadableSpan(0, ctx, None, Resource({}), {}),  # type: ignore[arg-type]
    ):
        with pytest.raises(Exception):  # noqa: B017  # both encoders refuse it; the road sends a skeleton
            sdk_bytes([bad])
        with pytest.raises((TypeError, ValueError)):
            encode_request([bad])
