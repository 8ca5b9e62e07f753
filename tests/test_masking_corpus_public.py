"""A second corpus the detectors were not tuned on (tests/data/pii_corpus_public.json).

Written from public descriptions of the formats: Wikipedia's examples of valid e-mail addresses and of
national telephone conventions, the IBAN registry's example IBANs, payment providers' public test card
numbers, vendors' documented example keys, RFC 3986 userinfo. Each planted value must be gone from every
field of the exported span, in the text and inside a JSON document, except the items marked
``known_miss``: those are the README's listed known misses, and they must still be misses (so the list
stays true). Lookalikes (dates, versions, server addresses, prices, ids, hashes) must pass unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_basic.masking import Masker

DATA = json.loads((Path(__file__).parent / "data" / "pii_corpus_public.json").read_text(encoding="utf-8"))
ITEMS: list[dict[str, Any]] = DATA["items"]
README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def span_with(text: str) -> ReadableSpan:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span(
        text, attributes={"app.note": text, "input.value": json.dumps({"body": text}), "user.id": text}
    ) as span:
        span.add_event(text, {"log.message": text})
    provider.shutdown()
    (finished,) = exporter.get_finished_spans()
    return finished


def exported_text(span: ReadableSpan) -> str:
    parts = [span.name, *(str(v) for v in (span.attributes or {}).values())]
    for event in span.events:
        parts += [event.name, *(str(v) for v in (event.attributes or {}).values())]
    return "\n".join(parts)


def survivors(item: dict[str, Any], level: str) -> list[str]:
    out = exported_text(Masker(level, salt="corpus").mask_span(span_with(item["text"])))
    return [p for p in item["planted"] if p in out or json.dumps(p)[1:-1] in out]


def test_corpus_is_big_and_covers_every_kind() -> None:
    kinds = {item["kind"] for item in ITEMS}
    assert kinds == {"email", "phone", "iban", "card", "secret"}
    assert len(ITEMS) >= 120 and len(DATA["lookalikes"]) >= 10


@pytest.mark.parametrize("item", ITEMS, ids=[f"{i:03d}-{item['kind']}" for i, item in enumerate(ITEMS)])
def test_planted_values_are_masked_in_every_field(item: dict[str, Any]) -> None:
    found = survivors(item, "detectors")
    if item.get("known_miss"):
        assert found, f"no longer a miss, update the README's known misses: {item['text']!r}"
    else:
        assert not found, f"{item['source']}: {found}"


def test_hide_masks_at_least_what_detectors_mask() -> None:
    for item in ITEMS:
        if not item.get("known_miss"):
            assert not survivors(item, "hide"), item["text"]


def test_known_misses_are_listed_in_the_readme() -> None:
    privacy = " ".join(README.split("## Privacy", 1)[1].split("\n## ", 1)[0].split())
    for reason in {item["known_miss"] for item in ITEMS if item.get("known_miss")}:
        assert reason.split(" (")[0].split(",")[0] in privacy, reason


@pytest.mark.parametrize("text", DATA["lookalikes"])
def test_lookalikes_pass_unchanged(text: str) -> None:
    assert Masker(salt="corpus").mask_text(text) == text
