"""Long JSON documents are masked in remembered pieces (cut where a member's value ends before the next
key: ``", "``, ``": 0.25}], "``); that never changes a byte.

Each document is masked twice: whole (the piece sizes set beyond any document) and in pieces of a few
characters (so nearly every cut is taken), with and without the memo. Documents hold planted
personal values and secrets (tests/privacy_values.py) next to numbers, escapes, secret-named keys,
JSON inside JSON strings and the detectors' context words, written compactly and pretty-printed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_basic.masking import Masker, masker

from .privacy_values import Planted, leaked, personal_values

_WORDS = st.sampled_from(
    ["api_key", "token", "password", "key:", "Bearer", "basic", "mailto:", "?sig=", "&token=", "=\n", "https://",
     "IBAN", "tel", "+", "(", "@", "%40", "&#64;", "\\u0040", "é", "＠", "2024-06-03", "0.25", "1e9", ",", "\"", " "]
)  # fmt: skip
_TEXT = st.lists(_WORDS | st.text(max_size=12), max_size=6).map(" ".join)


@st.composite
def _documents(draw: st.DrawFn) -> tuple[str, list[Planted]]:
    planted = draw(st.lists(personal_values(), min_size=1, max_size=4))
    records: list[Any] = []
    for p in planted:
        record: dict[str, Any] = {
            draw(st.sampled_from(["note", "to", "tool", "args", "value", "api_key", "password", "id"])): p.text,
            "text": draw(_TEXT) + " " + p.text + " " + draw(_TEXT),
            "duration_ms": draw(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**19), 10**19)),
            "list": [draw(_TEXT), p.text, draw(st.integers(0, 10**17))],
            "stats": {"ok": draw(st.sampled_from([True, False, None])), "n": draw(st.integers(-(10**17), 10**17))},
            "after": draw(_TEXT) + " " + p.text,
        }
        if draw(st.booleans()):
            record["nested"] = json.dumps({"q": p.text, "n": draw(_TEXT)})  # JSON inside a JSON string
        records.append(dict(draw(st.permutations(list(record.items())))))  # a secret-named key after any cut
    doc = {"event": "StepEvent", "records": records, "filler": [draw(_TEXT) for _ in range(draw(st.integers(0, 8)))]}
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1, 2])))
    return text, planted


def _mask(text: str, piece_chars: tuple[int, int], memo_entries: int, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    monkeypatch.setattr(masker, "_JSON_CHUNK_CHARS", piece_chars[0])
    monkeypatch.setattr(masker, "_NUMBER_PIECE_CHARS", piece_chars[1])
    m = Masker(memo_entries=memo_entries)
    out: list[object] = [m.mask_value("input.value", text), m.mask_value("output.value", text), m.mask_text(text)]
    out.append(m.mask_value("input.value", text))  # again: the pieces are remembered now
    assert m.error_count == 0
    return out


_SLOW_OK = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]  # monkeypatch: set anew in each example


@settings(max_examples=60, deadline=None, suppress_health_check=_SLOW_OK)
@given(
    case=_documents(),
    piece_chars=st.tuples(st.sampled_from([1, 4, 16, 64]), st.sampled_from([1, 8, 32])),
    memo_entries=st.sampled_from([0, 3, 2048]),
)
def test_pieces_give_the_whole_documents_bytes(
    case: tuple[str, list[Planted]], piece_chars: tuple[int, int], memo_entries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, planted = case
    whole = _mask(text, (sys.maxsize // 4, sys.maxsize // 4), 0, monkeypatch)
    pieces = _mask(text, piece_chars, memo_entries, monkeypatch)
    assert pieces == whole
    assert not leaked(str(pieces[0]).encode(), planted)


def test_a_document_that_changed_in_one_number_scans_only_that_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    scanned: list[int] = []
    m = Masker()
    hits = m._scanner.hits_and_secret_words

    def counting(text: str, want_words: bool) -> Any:
        scanned.append(len(text))
        return hits(text, want_words)

    monkeypatch.setattr(m._scanner, "hits_and_secret_words", counting)

    def step_output(duration: float) -> str:
        results = [{"tool": f"tool{i}", "ok": True, "output": {"to": "ada@example.org", "body": "Hello " * 20}}
                   for i in range(12)]  # fmt: skip
        results[6]["duration_ms"] = duration
        return json.dumps({"event": "ToolsRan", "results": results})

    first = m.mask_value("output.value", step_output(0.62))
    assert "ada@example.org" not in str(first)
    scanned.clear()
    second = m.mask_value("output.value", step_output(0.71))
    assert str(second) == str(first).replace("0.62", "0.71")
    assert 0 < sum(scanned) < len(step_output(0.71)) // 5, scanned


def test_a_number_before_a_long_string_is_scanned_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool's result ends with its duration and the next member is a long draft (the email workflow's
    step output): only the few members around the number are scanned again, not the draft with them."""
    scanned: list[str] = []
    m = Masker()
    hits = m._scanner.hits_and_secret_words

    def counting(text: str, want_words: bool) -> Any:
        scanned.append(text)
        return hits(text, want_words)

    monkeypatch.setattr(m._scanner, "hits_and_secret_words", counting)

    def step_output(duration: float) -> str:
        draft = "Hello Ada, thank you for your email about resetting your password. " * 6
        results = [{"tool": "draft", "ok": True, "error": None, "duration_ms": duration}]
        return json.dumps({"event": "Drafted", "results": results, "draft": draft, "to": "ada@example.org"})

    first = m.mask_value("output.value", step_output(0.4436190538480563))
    assert "ada@example.org" not in str(first)
    scanned.clear()
    second = m.mask_value("output.value", step_output(0.7022697848155423))
    assert str(second) == str(first).replace("0.4436190538480563", "0.7022697848155423")
    assert scanned and all("Hello Ada" not in text for text in scanned), scanned
    assert sum(map(len, scanned)) < 100, scanned
