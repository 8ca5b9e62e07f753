"""The masker's memo (``Masker._memo``): remembering masked strings never changes a byte of the output.

Every masker here is checked against a twin built with the same arguments and ``memo_entries=0`` (no
memo): the same inputs, in any order, repeated, with a memo small enough to rotate on nearly every call,
and from several threads at once, must give exactly the same results. Planted values come from
tests/privacy_values.py (addresses, phones, cards, IBANs, keys in many encodings), inside free text,
JSON documents (secret-named keys, escapes, JSON inside JSON strings) and attribute keys.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

from otel_basic.limits import truncation_marker
from otel_basic.masking import ERROR_PLACEHOLDER, Masker
from otel_basic.masking.masker import _Memo

from .privacy_values import Planted, personal_values

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Configurations whose results must not depend on the memo (each also runs with a 3-entry memo).
CONFIGS: dict[str, dict[str, Any]] = {
    "detectors": {},
    "hide": {"level": "hide"},
    "salted-short-hash": {"salt": "s3cret", "hash_chars": 8},
    "user-pattern": {"extra_patterns": {"order": r"ORD-[0-9]{4,}"}},  # every JSON document takes the parse path
    "small-bound": {"max_chars": 160},  # long strings are cut before detection (not memoized)
}

KEYS = ("app.note", "input.value", "output.value", "user.id", "exception.message", "otel.status_description")

_FILLER = st.text(
    alphabet=st.sampled_from(list("abcXYZ019 .,:;=-_@+/()[]{}\"'\\\n\té€＠%&#<>")) | st.characters(),
    max_size=40,
)


@st.composite
def _free_text(draw: st.DrawFn, planted: list[Planted]) -> str:
    parts = [draw(_FILLER)]
    for p in planted:
        parts += [p.text, draw(_FILLER)]
    return draw(st.sampled_from([" ", "\n", "", ", "])).join(parts)


@st.composite
def _document(draw: st.DrawFn, planted: list[Planted]) -> str:
    text = draw(_free_text(planted))
    values = [p.text for p in planted]
    doc: dict[str, Any] = {"body": text, "to": values, "n": draw(st.integers(-(10**17), 10**17))}
    if draw(st.booleans()):
        doc["password"] = values[0]  # a secret-named key: masked whole (parse path)
    if draw(st.booleans()):
        doc["args"] = json.dumps({"api_key": values[-1], "note": text})  # JSON inside a JSON string
    nest = draw(st.integers(0, 3))
    node: Any = doc
    for _ in range(nest):
        node = [node]
    out = json.dumps(node, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 2])))
    if draw(st.booleans()):
        out = out.replace("/", "\\/")  # an escape the raw text cannot settle
    return out


@st.composite
def inputs(draw: st.DrawFn) -> list[str]:
    """Strings to mask: free text and JSON with planted values, some repeated, some already cut."""
    planted = draw(st.lists(personal_values(), min_size=1, max_size=3))
    strings = [draw(st.one_of(_free_text(planted), _document(planted))) for _ in range(draw(st.integers(2, 6)))]
    strings += [p.text for p in planted]
    if draw(st.booleans()):
        # Already cut. The value sits before the last 160 characters: _PARTIAL_TAIL, which reads those,
        # backtracks exponentially on value-like runs there (with or without the memo).
        tail = "please confirm the change in writing " * 5
        strings.append(f"Reply to {planted[0].text}, {tail}" + truncation_marker(len(strings[0]) + 1000))
    strings += draw(st.lists(st.sampled_from(strings), max_size=4))  # repeats
    return strings


def _span(name: str, attrs: dict[str, Any], note: str) -> ReadableSpan:
    return ReadableSpan(
        name=name,
        context=SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1)),
        attributes=attrs,
        events=[Event("log", {"message": note, "detail": note})],
        status=Status(StatusCode.ERROR, f"ValueError: {note}"),
        start_time=1,
        end_time=2,
    )


def _outputs(masker: Masker, strings: list[str]) -> Iterator[object]:
    """Everything the masker produces for ``strings``, through each public entry point."""
    for i, s in enumerate(strings):
        yield masker.mask_text(s)
        for key in KEYS:
            yield masker.mask_value(key, s)
        yield masker.mask_attributes({"a": s, "input.value": s, f"metadata.{s[:30]}": i, "llm.list": [s, i]})
        yield masker.mask_event_attributes("log", {"message": s, "exception.stacktrace": s})
        span = masker.mask_span(_span(s[:40], {"input.value": s, "output.value": strings[-1 - i]}, s))
        yield (
            span.name,
            dict(span.attributes or {}),
            [(e.name, dict(e.attributes or {})) for e in span.events],
            span.status.description,
        )


def _twins(config: dict[str, Any], memo_entries: int) -> tuple[Masker, Masker]:
    return Masker(**config, memo_entries=memo_entries), Masker(**config, memo_entries=0)


@pytest.mark.parametrize("memo_entries", [3, 2048])
@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
@PROPERTY
@given(strings=inputs(), seed=st.integers(0, 2**32 - 1))
def test_memo_gives_the_same_bytes_as_masking_again(
    config: str, memo_entries: int, strings: list[str], seed: int
) -> None:
    memo, plain = _twins(CONFIGS[config], memo_entries)
    expected = list(_outputs(plain, strings))
    assert list(_outputs(memo, strings)) == expected
    assert list(_outputs(memo, strings)) == expected  # everything remembered now (or rotated out)
    order = list(range(len(strings)))
    random.Random(seed).shuffle(order)
    shuffled = [strings[i] for i in order]
    assert list(_outputs(memo, shuffled)) == list(_outputs(plain, shuffled))
    assert memo.error_count == plain.error_count == 0


@pytest.mark.parametrize("memo_entries", [3, 64])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(inputs(), min_size=4, max_size=4))
def test_memo_shared_by_threads_gives_the_same_bytes(memo_entries: int, batches: list[list[str]]) -> None:
    """Export workers share one masker: four threads mask overlapping inputs at once, the memo rotating
    under them, and each result equals the memo-less masker's."""
    memo, plain = _twins({}, memo_entries)
    shared = [s for batch in batches for s in batch]
    work = [batch + shared for batch in batches]
    expected = [list(_outputs(plain, w)) for w in work]
    got: list[list[object]] = [[] for _ in work]
    errors: list[BaseException] = []
    start = threading.Barrier(len(work))

    def run(i: int) -> None:
        try:
            start.wait()
            for _ in range(2):
                got[i] = list(_outputs(memo, work[i]))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(2e-5)  # switch threads often (the default is every 5 ms)
    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    assert got == expected


def _nest(n: int, x: object) -> object:
    for _ in range(n):
        x = [x]
    return x


def test_a_result_from_the_top_level_is_not_reused_where_it_would_be_too_deep() -> None:
    """A JSON string 20 deep masks fine on its own; inside 15 more levels it is too deep (_MAX_DEPTH),
    with or without the memo having seen it before."""
    inner = json.dumps(_nest(20, "a/b eve@example.org")).replace("/", "\\/")
    outer = json.dumps(_nest(15, inner))
    cold = Masker()
    warm = Masker()
    assert "<email:" in str(warm.mask_value("x", inner))
    assert warm.mask_value("x", outer) == cold.mask_value("x", outer) == ERROR_PLACEHOLDER


def test_maskers_never_share_results() -> None:
    text = "Reach ada.lovelace@example.org or +44 20 7946 0958 about ORD-12345"
    doc = json.dumps({"body": text, "password": "hunter22"})
    variants: list[Callable[[], Masker]] = [
        lambda: Masker(salt="one"),
        lambda: Masker(salt="two"),
        lambda: Masker(salt="one", hash_chars=8),
        lambda: Masker("hide", salt="one"),
        lambda: Masker(salt="one", extra_patterns={"order": r"ORD-[0-9]+"}),
        lambda: Masker(salt="one", detectors=["phone"]),
    ]
    maskers = [make() for make in variants]
    for m in maskers:  # each one warm: its memo holds its own results
        for value in (text, doc):
            m.mask_value("input.value", value)
            m.mask_value("app.note", value)
    seen = set()
    for m, make in zip(maskers, variants, strict=True):
        fresh = make()
        got = tuple(m.mask_value(k, v) for k in ("input.value", "app.note") for v in (text, doc))
        assert got == tuple(fresh.mask_value(k, v) for k in ("input.value", "app.note") for v in (text, doc))
        seen.add(got)
    assert len(seen) == len(variants)  # every configuration masks differently
    assert len({id(m._memo) for m in maskers}) == len(maskers)


def test_memo_is_used_and_bounded() -> None:
    masker = Masker()
    calls = 0
    scan = masker._scanner.hits_and_secret_words

    def counting(text: str, want_words: bool) -> Any:
        nonlocal calls
        calls += 1
        return scan(text, want_words)

    masker._scanner.hits_and_secret_words = counting  # type: ignore[method-assign]
    text = "Write to ada.lovelace@example.org today"
    first = masker.mask_text(text)
    assert (masker.mask_text(text), calls) == (first, 1)  # remembered: scanned once
    assert (masker.mask_value("user.id", text), masker.mask_value("app.note", text), calls) == (first, first, 1)
    off = Masker(memo_entries=0)
    off.mask_text(text)
    assert len(off._memo) == 0
    big = "x" * 70_000 + " ada@example.org"
    unbounded = Masker(max_chars=None)
    unbounded.mask_text(big)
    assert big not in unbounded._memo.young  # longer than 64 Ki characters: not remembered
    with pytest.raises(ValueError):
        Masker(memo_entries=-1)


def test_memo_generations() -> None:
    memo = _Memo(max_entries=4, max_chars=100)
    for i in range(4):
        memo.put(f"k{i}", f"v{i}", 4)
    assert len(memo.young) == 4 and not memo.old
    memo.put("k4", "v4", 4)  # full: a new generation
    assert set(memo.old) == {"k0", "k1", "k2", "k3"} and set(memo.young) == {"k4"}
    assert memo.recall("k1", 2) == "v1"  # used again: copied into the young generation
    assert set(memo.young) == {"k4", "k1"}
    memo.put("k5", "v5", 4)
    memo.put("k6", "v6", 4)
    memo.put("k7", "v7", 4)  # rotates: k1 stays, k0, k2 and k3 (unused for a generation) are gone
    assert set(memo.old) == {"k4", "k1", "k5", "k6"} and set(memo.young) == {"k7"}
    assert memo.recall("k1", 2) == "v1" and memo.recall("k0", 2) is None
    chars = _Memo(max_entries=100, max_chars=10)
    for i in range(10):
        chars.put(f"c{i}", "v", 4)
        assert chars._chars <= 10 and len(chars.young) <= 2
    off = _Memo(max_entries=0, max_chars=10)
    off.put("k", "v", 2)
    assert not off.young and off.recall("k", 1) is None


def test_text_already_cut_is_masked_in_linear_time() -> None:
    """The tail a cut may have left half of was found by a regex that backtracked exponentially on
    digit runs (18 digits before the marker: 44 s on an export thread). Now a scan: any shape of
    input costs microseconds, and what the cut may have left half of is still dropped."""
    masker = Masker()
    for body in ("0" * 18 + "<", "Reply to <mailto:x@y.museum> today " + "9" * 40, "a1 " * 80, "AB" * 200):
        started = time.perf_counter()
        masker.mask_value("app.note", body + truncation_marker(len(body) + 100))
        assert time.perf_counter() - started < 0.5, body  # microseconds now; seconds to minutes before
    out = masker.mask_value("app.note", "call me at +49 170 12" + truncation_marker(500))
    assert "170" not in out and "12" not in out.split("…")[0] and out.startswith("call me at")


@pytest.mark.parametrize("value", ["<a@b>", "://a@", "＜ａ＠ｂ＞"])
def test_five_character_values_are_scanned_too(value: str) -> None:
    assert Masker().mask_value("app.note", value) != value
