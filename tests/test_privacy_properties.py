"""Property: a generated personal value or secret, planted in any field of a span, never leaves the process.

The values (tests/privacy_values.py) are addresses, phone numbers, cards, IBANs, keys and URL credentials
in many encodings. Each example plants them in every field a span has (span name, attributes including
JSON input/output and the identity keys, event names and attributes, link attributes, status, a recorded
exception with a chained cause, log records inside and outside a span), runs them through the real export
path (``otel_basic.configure`` against the test receiver) at each masking level, and searches the bytes
the receiver got and the bytes the spool wrote to disk (the receiver refuses the first export, so the
batch is spooled). Nothing may survive. The README's known misses (base64, personal names, ...) are not
generated.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.trace import Link, Status, StatusCode

import otel_basic
from otel_basic.testing import LangfuseReceiver

from .privacy_values import Planted, leaked, personal_values

log = logging.getLogger("app.privacy")

PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def emit(planted: list[Planted]) -> None:
    """One trace that carries the values in every field a span can have."""
    values = [p.text for p in planted]
    first = values[0]
    text = " | ".join(f"contact {v} now" for v in values)
    tracer = otel_basic.get_tracer("privacy")
    with tracer.start_as_current_span(f"lookup {first}") as other:
        other_ctx = other.get_span_context()
    attributes = {
        "app.note": text,
        "input.value": json.dumps({"body": text, "to": values}),
        "input.mime_type": "application/json",
        "output.value": text,
        "llm.input_messages.0.message.content": text,
        "app.list": [text, first],
        "user.id": first,
        "session.id": first,
        "langfuse.user.id": first,
        "langfuse.session.id": first,
        "langfuse.trace.name": f"mail from {first}",
        "langfuse.observation.status_message": f"{first}: failed",
    }
    with tracer.start_as_current_span(
        f"handle {first}", attributes=attributes, links=[Link(other_ctx, {"peer": text})]
    ) as span:
        span.add_event(f"event {first}", {"detail": text, "message": text})
        log.warning("about %s", text)
        try:
            try:
                raise KeyError(f"account of {text}")
            except KeyError as exc:
                raise ValueError(f"{first}: refund failed") from exc
        except ValueError as exc:
            span.record_exception(exc)
            log.exception("failed for %s", first)
        span.set_status(Status(StatusCode.ERROR, f"{first}: refund failed"))
    log.error("outside any span: %s", first)


def spool_bytes(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def clear_spool(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            p.unlink()


@pytest.mark.parametrize("level", ["detectors", "hide"])
@PROPERTY
@given(planted=st.lists(personal_values(), min_size=1, max_size=3))
def test_planted_values_reach_neither_the_receiver_nor_the_spool(
    level: str, planted: list[Planted], langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("OTEL_BASIC_MASK", level)
    spool = tmp_path / "spool"
    otel_basic.reset()
    clear_spool(spool)
    langfuse_env.clear()
    langfuse_env.reset_faults()
    otel_basic.configure()
    try:
        # 1. The endpoint refuses the batch for good: it lands on disk (the spool's rejected/ directory).
        langfuse_env.fail_next(400, count=100)
        emit(planted)
        otel_basic.flush(timeout=10)
        on_disk = spool_bytes(spool)
        assert on_disk, "the refused batch was written to the spool"
        # 2. The endpoint accepts: the same spans arrive.
        langfuse_env.reset_faults()
        emit(planted)
        assert otel_basic.flush(timeout=10)
        wire = b"\n".join(r.body for r in langfuse_env.trace_requests if r.accepted)
        assert b"refund failed" in wire or level == "hide"
        assert b"handle " in wire, "span names arrived"
    finally:
        otel_basic.reset()
    assert not leaked(on_disk, planted), leaked(on_disk, planted)
    assert not leaked(wire, planted), leaked(wire, planted)
    # Identity keys: a detected value is a stable token, never raw.
    assert re.search(rb"<(email|phone|card|iban|secret|token):[0-9a-f]{16}>", wire)


async def test_with_masking_off_the_values_do_arrive(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search above can fail: with masking off, each kind of value is found on the wire."""
    monkeypatch.setenv("OTEL_BASIC_MASK", "off")
    otel_basic.configure()
    planted = [
        Planted("email", "eve%40example.com", ("eve%40example.com",)),
        Planted("phone", "415 555 0132", ()),
        Planted("card", "4111.1111.1111.1111", ()),
        Planted("iban", "de89 3704 0044 0532 0130 00", ()),
        Planted("url", "https://bob:Pw9Secret@host.example/x", ("Pw9Secret",)),
    ]
    emit(planted)
    assert otel_basic.flush(timeout=10)
    wire = b"\n".join(r.body for r in langfuse_env.trace_requests)
    assert len(leaked(wire, planted)) >= len(planted)


FIXED = [
    Planted("email/url", "eve%40example.com", ("eve@example.com",)),
    Planted("email/html", "frank&#64;example.com", ("frank@example.com",)),
    Planted("email/json-u", "grace\\u0040example.com", ("grace@example.com",)),
    Planted("email/literal", "judy@[10.1.2.3]", ()),
    Planted("phone/nanp-space", "415 555 0132", ()),
    Planted("card/dot", "4111.1111.1111.1111", ("4111111111111111",)),
    Planted("iban/lower", "de89 3704 0044 0532 0130 00", ("DE89370400440532013000",)),
    Planted("secret/url", "https://bob:Pw9Secret-x@hooks.example.com/cb", ("Pw9Secret-x",)),
]


@pytest.mark.parametrize("level", ["detectors", "hide"])
def test_a_transient_outage_spools_only_masked_data(
    level: str, langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """503s until the retries give up: the batch waits in the spool (not rejected/), then drains."""
    monkeypatch.setenv("OTEL_BASIC_MASK", level)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")  # milliseconds, as the OTLP spec says
    otel_basic.configure()
    langfuse_env.fail_next(503, count=1000)
    emit(FIXED)
    report = otel_basic.flush(timeout=10)
    assert report.spooled >= 1, report
    on_disk = spool_bytes(tmp_path / "spool")
    assert on_disk and not leaked(on_disk, FIXED), leaked(on_disk, FIXED)
    langfuse_env.reset_faults()
    assert otel_basic.flush(timeout=10)
    wire = b"\n".join(r.body for r in langfuse_env.trace_requests if r.accepted)
    assert b"handle " in wire and not leaked(wire, FIXED), leaked(wire, FIXED)
