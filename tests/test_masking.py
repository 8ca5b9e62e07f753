"""Masking of exported spans: every planted value of the corpus disappears, lookalikes survive.

Spans go through a real TracerProvider -> SimpleSpanProcessor -> ``Masker.mask_span`` (what the export
path calls for each span; ``MaskSpanExporter`` below) -> InMemorySpanExporter,
and each test searches *everything* exported (attributes, JSON decoded both ways, events, links, status)
for the planted values. The same spans with masking off must contain them, so the search can fail.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from otel_basic.masking import (
    BUILTIN_DETECTORS,
    DEFAULT_ALLOW_KEYS,
    ERROR_PLACEHOLDER,
    HIDDEN,
    Detector,
    Masker,
    iban_valid,
    luhn_valid,
)

CORPUS_PATH = Path(__file__).parent / "data" / "pii_emails.json"
CORPUS: list[dict[str, Any]] = json.loads(CORPUS_PATH.read_text())["emails"]
TOKEN = re.compile(r"<(email|phone|card|iban|token|secret):[0-9a-f]{16}>")

SYSTEM_PROMPT = "You triage e-mails. Answer with JSON: category, action, urgency, reply_draft."


# --- helpers ----------------------------------------------------------------------------------------


class MaskingExporter(SpanExporter):
    """``Masker.mask_span`` on each span, then ``inner``: what the export path does."""

    def __init__(self, inner: SpanExporter, masker: Masker) -> None:
        self.inner = inner
        self.masker = masker

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self.masker.mask_span(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()


def address_of(sender: str) -> str:
    return sender.rsplit("<", 1)[-1].rstrip(">")


def run_spans(exporter: SpanExporter, emit: Any, resource: Resource | None = None) -> None:
    provider = TracerProvider(resource=resource) if resource else TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    emit(provider.get_tracer("test"))
    provider.shutdown()


def emit_email(tracer: Any, email: dict[str, Any]) -> None:
    """The spans an OpenInference-instrumented e-mail workflow produces for one e-mail."""
    address = address_of(email["sender"])
    msg = {k: email[k] for k in ("sender", "subject", "body", "thread_id")}
    user_text = f"From: {email['sender']}\nSubject: {email['subject']}\n\n{email['body']}"
    reply = f"Reply to {address}: thanks for '{email['subject']}'. Quoted:\n> {email['body'][:400]}"
    common = {"session.id": email["thread_id"], "user.id": address}
    with tracer.start_as_current_span(
        "EmailWorkflow.run",
        attributes={
            **common,
            "openinference.span.kind": "CHAIN",
            "input.value": json.dumps({"email": msg}),  # ensure_ascii=True: \u escapes
            "input.mime_type": "application/json",
            "output.value": json.dumps({"reply": reply, "to": address}, ensure_ascii=False, indent=2),
            "metadata": json.dumps({"from": email["sender"], "subject": email["subject"]}),
        },
    ) as root:
        with tracer.start_as_current_span(
            "EmailWorkflow.triage_email",
            attributes={**common, "input.value": json.dumps({"ev": msg}, ensure_ascii=False)},
        ) as step:
            step.add_event("log", {"message": f"triaging {email['subject']}: {email['body']}", "log.level": 20})
        with tracer.start_as_current_span(
            "OpenAI.achat",
            attributes={
                **common,
                "openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o-mini",
                "llm.token_count.prompt": 412,
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": SYSTEM_PROMPT,
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.content": user_text,
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": reply,
                "llm.prompts": (SYSTEM_PROMPT, user_text),
                "input.value": json.dumps({"messages": [{"role": "user", "content": user_text}]}),
                "output.value": reply,
            },
        ):
            pass
        with tracer.start_as_current_span(
            "send_results",
            attributes={
                **common,
                "openinference.span.kind": "TOOL",
                "tool.name": "send_email",
                "input.value": json.dumps({"to": address, "subject": email["subject"], "body": reply}),
            },
        ) as tool:
            try:
                raise ValueError(f"mailbox of {email['sender']} rejected: {email['body'][:200]}")
            except ValueError as exc:
                tool.record_exception(exc)
                tool.set_status(Status(StatusCode.ERROR, f"ValueError: {exc}"))
        root.set_attribute("output.value", json.dumps({"sent_to": address, "summary": email["body"]}))


def strings_of(value: Any) -> Iterator[str]:
    """Every string inside an exported value, JSON documents decoded (both raw and unescaped)."""
    if isinstance(value, str):
        yield value
        if value[:1] in "{[":
            try:
                doc = json.loads(value)
            except ValueError:
                return
            yield json.dumps(doc, ensure_ascii=False)
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings_of(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings_of(v)


def haystack(spans: Sequence[ReadableSpan]) -> str:
    """All exported text of the spans, in one string to search."""
    parts: list[str] = []
    for span in spans:
        parts.append(span.name)
        for key, value in (span.attributes or {}).items():
            parts.append(key)
            parts.extend(strings_of(value))
        for event in span.events:
            parts.append(event.name)
            for key, value in (event.attributes or {}).items():
                parts.append(key)
                parts.extend(strings_of(value))
        for link in span.links:
            for value in (link.attributes or {}).values():
                parts.extend(strings_of(value))
        if span.status.description:
            parts.append(span.status.description)
    return "\n".join(parts)


def export_email(email: dict[str, Any], masker: Masker) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    run_spans(MaskingExporter(memory, masker), lambda tracer: emit_email(tracer, email))
    return list(memory.get_finished_spans())


def make_span(
    attributes: dict[str, Any],
    events: Sequence[Event] = (),
    name: str = "s",
    status: Status | None = None,
    links: Sequence[Link] = (),
) -> ReadableSpan:
    ctx = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1))
    return ReadableSpan(
        name=name,
        context=ctx,
        attributes=attributes,
        events=events,
        links=links,
        status=status or Status(StatusCode.UNSET),
        start_time=1,
        end_time=2,
    )


def export_raw(spans: Sequence[ReadableSpan], masker: Masker) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    assert MaskingExporter(memory, masker).export(spans) is SpanExportResult.SUCCESS
    return list(memory.get_finished_spans())


# --- the corpus ----------------------------------------------------------------------------------------


def test_corpus_is_big_and_consistent() -> None:
    assert len(CORPUS) >= 30
    assert sum(len(e["planted"]) for e in CORPUS) >= 100
    kinds = " ".join(" ".join(e["planted"]) for e in CORPUS)
    for needle in ("@", "+44 20 7946 0958", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "sk-lf-"):
        assert needle in kinds
    for email in CORPUS:
        text = "\n".join((email["sender"], email["subject"], email["body"]))
        for value in email["planted"] + email["lookalikes"]:
            assert value in text, (email["id"], value)


@pytest.mark.parametrize("email", CORPUS, ids=[e["id"] for e in CORPUS])
def test_every_planted_value_is_masked_everywhere(email: dict[str, Any]) -> None:
    spans = export_email(email, Masker(salt="test"))
    assert len(spans) == 4
    text = haystack(spans)
    leaked = [v for v in email["planted"] if v in text]
    assert not leaked, f"{email['id']} leaked {leaked}"
    assert TOKEN.search(text)
    kept = [v for v in email["lookalikes"] if v not in text]
    assert not kept, f"{email['id']} masked lookalikes {kept}"


@pytest.mark.parametrize("email", CORPUS, ids=[e["id"] for e in CORPUS])
def test_every_planted_value_is_exported_when_masking_is_off(email: dict[str, Any]) -> None:
    text = haystack(export_email(email, Masker(level="off")))
    assert [v for v in email["planted"] if v not in text] == []


@pytest.mark.parametrize("level", ["detectors", "hide"])
def test_otlp_protobuf_bytes_hold_no_planted_value(level: str) -> None:
    masked: list[ReadableSpan] = []
    raw: list[ReadableSpan] = []
    for email in CORPUS:
        masked += export_email(email, Masker(level=level))
        raw += export_email(email, Masker(level="off"))
    masked_bytes = encode_spans(masked).SerializeToString()
    raw_bytes = encode_spans(raw).SerializeToString()
    planted = {v.encode() for e in CORPUS for v in e["planted"]}
    assert all(v in raw_bytes for v in planted)
    assert [v for v in planted if v in masked_bytes] == []


# --- tokens -------------------------------------------------------------------------------------------


def test_same_value_same_token_and_typed_labels() -> None:
    m = Masker(salt="s")
    a = m.mask_text("ada.lovelace@example.org")
    assert re.fullmatch(r"<email:[0-9a-f]{16}>", a)
    assert m.mask_text("Write to ADA.Lovelace@Example.ORG today") == f"Write to {a} today"
    assert m.mask_text("grace@example.org") != a
    assert Masker(salt="other").mask_text("ada.lovelace@example.org") != a
    assert Masker().mask_text("ada.lovelace@example.org") == Masker().mask_text("ada.lovelace@example.org")
    assert m.mask_text("+44 20 7946 0958").startswith("<phone:")
    assert m.mask_text("4111 1111 1111 1111") == m.mask_text("4111-1111-1111-1111") == m.mask_text("4111111111111111")
    assert m.mask_text("4111 1111 1111 1111").startswith("<card:")
    assert m.mask_text("GB82 WEST 1234 5698 7654 32") == m.mask_text("GB82WEST12345698765432")
    assert m.mask_text("GB82WEST12345698765432").startswith("<iban:")
    assert m.mask_text("Authorization: Bearer abc.def-12345678") == "Authorization: Bearer " + m.mask_text(
        "Bearer abc.def-12345678"
    ).removeprefix("Bearer ")
    assert "<token:" in m.mask_text("Authorization: Basic dXNlcjpwYXNz")
    assert m.mask_text("sk-lf-0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d").startswith("<secret:")


def test_same_address_same_token_across_spans_and_attributes() -> None:
    email = CORPUS[0]
    spans = export_email(email, Masker(salt="x"))
    token = Masker(salt="x").mask_text(address_of(email["sender"]))
    users = {s.attributes["user.id"] for s in spans if s.attributes and "user.id" in s.attributes}
    assert users == {token}
    assert haystack(spans).count(token) >= 8


# --- keys: allow-list, hide, secrets ------------------------------------------------------------------


def test_allow_listed_keys_are_untouched_and_identity_keys_are_tokenised() -> None:
    attrs = {
        "session.id": "ada@example.org",
        "langfuse.session.id": "thr-1001",
        "langfuse.user.id": "u-9",
        "langfuse.trace.name": "mail from ada@example.org",
        "llm.model_name": "gpt-4o-mini-2024-07-18",
        "llm.token_count.prompt": 4111111111111111,
        "llm.token_count.total": "4111 1111 1111 1111",
        "openinference.span.kind": "LLM",
        "llm.input_messages.0.message.role": "user",
        "user.id": "ada@example.org",
        "custom.note": "ada@example.org",
    }
    (span,) = export_raw([make_span(attrs)], Masker(salt="k"))
    out = dict(span.attributes or {})
    for key in ("llm.model_name", "llm.token_count.prompt", "llm.token_count.total", "langfuse.user.id"):
        assert out[key] == attrs[key]
    assert out["langfuse.session.id"] == "thr-1001"  # not personal data: unchanged
    token = Masker(salt="k").mask_text("ada@example.org")
    assert out["user.id"] == out["custom.note"] == out["session.id"] == token
    assert out["langfuse.trace.name"] == f"mail from {token}"
    # an app that wants raw ids allow-lists the key
    (raw,) = export_raw([make_span(attrs)], Masker(salt="k", allow_keys=[*DEFAULT_ALLOW_KEYS, "session.id"]))
    assert (raw.attributes or {})["session.id"] == "ada@example.org"


def test_allow_keys_are_globs_and_replace_the_default() -> None:
    m = Masker(allow_keys=["app.*.raw"])
    assert m.mask_value("app.x.raw", "ada@example.org") == "ada@example.org"
    assert m.mask_value("session.id", "ada@example.org") != "ada@example.org"


def test_keys_naming_secrets_are_masked_whole() -> None:
    m = Masker(salt="")
    assert m.mask_value("http.request.header.authorization", "abc").startswith("<secret:")
    assert m.mask_value("db.password", "x1").startswith("<secret:")
    assert m.mask_value("llm.token_count.prompt", 12) == 12
    doc = json.loads(m.mask_text(json.dumps({"password": "abc", "api_key": "k1", "note": "fine words"})))
    assert doc["password"].startswith("<secret:") and doc["api_key"].startswith("<secret:")
    assert doc["note"] == "fine words"


_SECRETS = {"Authorization": "q8Zr2LmX0vT5bN7wK3yP1sD9", "cookie": "sid=abc", "api_key": "hunter-horse-battery"}


@pytest.mark.parametrize(
    "text",
    [
        # over max_chars: cut before detection, so no longer JSON to parse (these leaked)
        json.dumps({"headers": _SECRETS, "items": [f"lorem ipsum {i}" for i in range(3000)]}),
        json.dumps({"args": json.dumps({"password": "hunter2xyz", "token": "t0k3n"}), "pad": "p" * 20000}),
        # broken or cut by someone else
        '{"a": "x", "api_key": "AbCdEfGhIjKlMnOpQrStUvWx", "z": "yy',
        '[{"token": "abcdefgh',
        json.dumps(_SECRETS)[:-3] + "…[truncated by otel-basic: original 99999 chars]",
        '{"l": [":"], "api_key": "AbCdEfGhIjKlMnOpQrStUvWx"',  # a string holding a colon shifted the reading
        '{"pass\\u0077ord": "hunter2xyz", ',  # an escaped name
        '{"' + "h" * 70 + '.authorization": "abcdefgh1"',  # a long name
        # cut between the backslash and the quote that close a value escaped once
        '{"m": "{\\"api_key\\": \\"hunter-horse-battery\\' + "…[truncated by otel-basic: original 99999 chars]",
    ],
    ids=["long", "long-nested", "broken", "unterminated", "already-cut", "colon", "escaped-name", "long-name",
         "cut-escape"],
)
def test_secret_named_members_are_masked_in_json_that_cannot_be_parsed(text: str) -> None:
    out = str(Masker().mask_value("input.value", text))
    for secret in ("q8Zr2LmX0vT5bN7wK3yP1sD9", "sid=abc", "hunter-horse-battery", "hunter2xyz", "t0k3n", "AbCdEfGh",
                   "abcdefgh", "hunter-horse-batte"):  # fmt: skip
        assert secret not in out, out[:300]
    assert "<secret:" in out or "truncated by otel-basic" in out  # (or the cut's value-like tail was dropped)


def test_hide_level_hides_content_and_still_runs_detectors() -> None:
    attrs = {
        "input.value": json.dumps({"body": "hello"}),
        "output.value": "plain reply",
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": "call me",
        "llm.output_messages.0.message.content": "ok",
        "llm.prompts": ("a prompt", "b prompt"),
        "tool.parameters": '{"to": "string"}',
        "llm.model_name": "gpt-4o-mini",
        "email.from": "ada@example.org",
    }
    events = [
        Event("log", {"message": "body with no pii", "log.level": 20}, timestamp=5),
        Event(
            "exception",
            {
                "exception.type": "ValueError",
                "exception.message": "bad customer José",
                "exception.stacktrace": "Traceback...\nValueError: bad customer José",
            },
            timestamp=6,
        ),
    ]
    status = Status(StatusCode.ERROR, "ValueError: bad customer José")
    (span,) = export_raw([make_span(attrs, events, status=status)], Masker(level="hide", salt=""))
    out = dict(span.attributes or {})
    for key in ("input.value", "output.value", "llm.input_messages.0.message.content", "tool.parameters"):
        assert out[key] == HIDDEN, key
    assert out["llm.output_messages.0.message.content"] == HIDDEN
    assert out["llm.prompts"] == (HIDDEN, HIDDEN)
    assert out["llm.input_messages.0.message.role"] == "user"
    assert out["llm.model_name"] == "gpt-4o-mini"
    assert out["email.from"].startswith("<email:")
    log, exc = span.events
    assert log.attributes == {"message": HIDDEN, "log.level": 20}
    assert exc.attributes is not None
    assert exc.attributes["exception.message"] == HIDDEN
    assert exc.attributes["exception.type"] == "ValueError"
    assert "José" not in str(exc.attributes["exception.stacktrace"])
    assert span.status.description == f"ValueError: {HIDDEN}"
    assert "José" not in haystack([span])


def test_off_level_returns_values_unchanged() -> None:
    m = Masker(level="off")
    assert m.mask_value("user.id", "ada@example.org") == "ada@example.org"
    assert m.mask_attributes({"a": "ada@example.org"}) == {"a": "ada@example.org"}
    with pytest.raises(ValueError, match="masking level"):
        Masker(level="everything")


# --- JSON -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ensure_ascii", [True, False])
@pytest.mark.parametrize("indent", [None, 2])
def test_json_values_stay_valid_json(ensure_ascii: bool, indent: int | None) -> None:
    m = Masker(salt="")
    doc = {
        "email": {"sender": "José Müller <josé.müller@beispiel.de>", "body": "Ruf an: 0176 12345678\nDanke"},
        "cards": [4111111111111111, "5500 0000 0000 0004"],
        "nested": json.dumps({"to": "info@bäckerei.de", "tel": "+49 30 901820"}),
        "keyed_by_address": {"ada@example.org": 3},
        "n": 3.5,
        "ok": True,
        "none": None,
        "version": "v2.14.0",
    }
    raw = json.dumps(doc, ensure_ascii=ensure_ascii, indent=indent)
    out = m.mask_value("input.value", raw)
    assert isinstance(out, str)
    parsed = json.loads(out)
    flat = json.dumps(parsed, ensure_ascii=False) + json.dumps(json.loads(parsed["nested"]), ensure_ascii=False)
    for planted in ("josé.müller@beispiel.de", "0176 12345678", "4111111111111111", "5500 0000 0000 0004",
                    "info@bäckerei.de", "+49 30 901820", "ada@example.org"):  # fmt: skip
        assert planted not in flat, planted
    assert parsed["email"]["sender"].startswith("José Müller <<email:")
    assert parsed["n"] == 3.5 and parsed["ok"] is True and parsed["none"] is None
    assert parsed["version"] == "v2.14.0"
    assert list(parsed) == list(doc)


@pytest.mark.parametrize(
    "value",
    [
        "😀090-1234-5678",  # escaped emoji right before a phone: raw "\\ude00090-..." glues digits
        "M\u00fcller <müller@bäckerei.de>",  # escaped local part and domain
        "line\n+44 20 7946 0958\tand\r\nada@example.org",
        'quote "4111 1111 1111 1111" and back\\slash 0176 12345678',
    ],
)
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_json_escapes_never_hide_a_value(value: str, ensure_ascii: bool) -> None:
    raw = json.dumps({"k": value, "list": [value]}, ensure_ascii=ensure_ascii)
    out = json.loads(str(Masker().mask_value("input.value", raw)))
    flat = json.dumps(out, ensure_ascii=False)
    for planted in ("090-1234-5678", "müller@bäckerei.de", "+44 20 7946 0958", "ada@example.org",
                    "4111 1111 1111 1111", "0176 12345678"):  # fmt: skip
        assert planted not in flat


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('{"password": "hunter2xyz", "password": 1}', "hunter2xyz"),  # a key twice: parsing keeps the last
        ('{"a": "eve\\u0040example.org", "a": 1}', "eve\\u0040example.org"),
        ('{"authorization": "abc", "authorization": null}', '"abc"'),
        ('{"a": -4111111111111111}', "4111111111111111"),  # a negative card number: a bare JSON value
        ('{"a": "-----BEGIN PRIVATE KEY-----", "b": "x", "c": [1, 2]}', None),  # a PEM header alone: still JSON
        # a private key split across values or array items: each string's part becomes a token
        ('{"k": "-----BEGIN PRIVATE KEY-----", "b": "MIIEvQIBADANBgkqhkiG9w0B", "c": "-----END PRIVATE KEY-----"}',
         "MIIEvQIBADANBgkqhkiG9w0B"),
        (json.dumps(["-----BEGIN PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0B", "AQEFAASCBKcw"]), "AQEFAASCBKcw"),
        ('{"x-api-key"  : "9f2c1ab7e5"}', "9f2c1ab7e5"),  # whitespace before the colon
        ('{"ToKen": "9f2c1ab7e5"}', "9f2c1ab7e5"),  # any case
        ('\n{"authorization": "Token 9f2c1ab7e5"}', "9f2c1ab7e5"),  # whitespace before the document
        ('{"api_key": "9f2c1ab7e5"}\n', "9f2c1ab7e5"),
        ('{"api_key": ["9f2c1ab7e5"]}', "9f2c1ab7e5"),  # a list or an object under a secret name
        ('{"authorization": {"scheme": "x", "credentials": "9f2c1ab7e5"}}', "9f2c1ab7e5"),
    ],
)
def test_json_in_odd_shapes_stays_valid_and_masked(text: str, secret: str | None) -> None:
    out = str(Masker().mask_value("input.value", text))
    json.loads(out)  # still valid JSON (the PEM header swallowed the rest of the document before)
    assert secret is None or secret not in out, out
    doc, was = json.loads(out), json.loads(text)
    assert (list(doc) == list(was)) if isinstance(was, dict) else len(doc) == len(was)  # same keys / items


@pytest.mark.parametrize(
    "shape",
    ["a key twice", "cut at the size limit"],
)
def test_an_escaped_quote_in_a_secret_member_of_unparsed_json_hides_it_and_every_later_one(shape: str) -> None:
    """JSON that cannot be parsed is masked member by member in the raw text. A password holding an escaped
    quote used to lose only its start to a detector's token, which swallowed the backslash; the strings
    then no longer lined up, and the rest of it and every later secret-named member went out raw."""
    doc = '{"password": "Tr0ub4dor\\"horse-battery-staple", "n": 0.25, "api_key": "kq8Zr2mWzLp0", "k": 1'
    doc += ', "k": 2}' if shape == "a key twice" else ', "pad": "' + "x" * 20_000 + '"}'
    out = str(Masker().mask_value("input.value", doc))
    for planted in ("Tr0ub4dor", "horse-battery-staple", "kq8Zr2mWzLp0"):
        assert planted not in out, out[:200]
    assert out.startswith('{"password": "<secret:') and '"api_key": "<secret:' in out
    if shape == "a key twice":
        json.loads(out)  # still valid JSON: each value became one token


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("Authorization: Bearer AbCdEfGhIjKlMnOpQrStUvWxYz", "AbCdEfGhIjKlMnOpQrStUvWxYz"),  # letters, mixed case
        ("curl -H 'Bearer gfscbwcedvwXafpQcisgpiqnwucgaQ'", "gfscbwcedvwXafpQcisgpiqnwucgaQ"),
        ("Authorization: Bearer gfscbwcedvwxafpqcisgpiqnwucgaq", "gfscbwcedvwxafpqcisgpiqnwucgaq"),  # one case
        ("we are the bearer instruments of change", None),
        ("Bearer Instruments Ltd", None),
    ],
)
def test_a_bearer_token_of_letters_alone_is_masked_and_prose_is_not(text: str, token: str | None) -> None:
    out = Masker().mask_text(text)
    if token is None:
        assert out == text
    else:
        assert token not in out and "<token:" in out, out


@pytest.mark.parametrize("pad", [100, 20_000])  # parsed, and cut at the size limit (masked in the raw text)
def test_an_escaped_secret_name_inside_json_inside_json_is_found(pad: int) -> None:
    inner = '{"to\\u006ben": "innerSECRETvalue1", "x": 1}'  # {"token": ...} with the k escaped
    assert json.loads(inner)["token"] == "innerSECRETvalue1"
    doc = json.dumps({"tool_call": {"arguments": inner}, "pad": "z" * pad})
    out = str(Masker().mask_value("input.value", doc))
    assert "innerSECRETvalue1" not in out and "<secret:" in out, out[:200]


@pytest.mark.parametrize(
    ("text", "planted"),
    [
        ('data: {"password": "Tr0ub4dor\\"horse", "token": "tokhunter3"}', ["Tr0ub4dor", "horse", "tokhunter3"]),
        ('error: body was {"a": 1, "api_key": "abc\\"defSECRET"}', ["defSECRET"]),  # a log line, an error
    ],
)
def test_json_members_after_a_prefix_are_masked_like_a_document(text: str, planted: list[str]) -> None:
    """Only text starting with { or [ had its secret-named members looked for: after a prefix, names like
    token or api_key were not masked at all, and an escaped quote in a password leaked its rest."""
    out = Masker().mask_text(text)
    assert not [p for p in planted if p in out], out
    assert out.count("<secret:") == text.count('": "'), out


@pytest.mark.parametrize("inner_value", ["C:\\Users\\me\\", "hunter2\\"])  # values ending in a backslash
def test_a_backslash_at_the_end_of_a_value_in_json_inside_json_hides_no_later_member(inner_value: str) -> None:
    """Tool-call arguments inside a document that cannot be parsed (a key twice, or cut): the escaped
    backslash before the value's closing quote read as an escaped quote, and the next member went out raw."""
    inner = json.dumps({"cwd": inner_value, "password": "hunter2horse", "token": "tok_live_hunter3"})
    quoted = json.dumps(inner)
    for doc in ['{"a": 1, "a": 1, "args": ' + quoted + "}", '{"args": ' + quoted]:  # a key twice; cut
        out = str(Masker().mask_value("input.value", doc))
        assert "hunter2horse" not in out and "tok_live_hunter3" not in out, out


@pytest.mark.parametrize(
    "text",
    [
        "Bearer%20abc123def456ghi789jkl",
        "Authorization:%20Bearer%20abc123def456ghi789jkl",
        "https://api.example.org/x?authorization=Bearer+abc123def456ghi789jkl",
        "Bearer\xa0abc123def456ghi789jkl",
        "Bearer&nbsp;abc123def456ghi789jkl",
    ],
)
def test_a_bearer_token_url_encoded_or_after_a_no_break_space_is_masked(text: str) -> None:
    """The decoded view kept only hits holding a decoded character: the %20 before the token is its
    context, not part of it, so the token stayed raw (found by a hostile review)."""
    out = Masker().mask_text(text)
    assert "abc123def456ghi789jkl" not in out, out


@pytest.mark.parametrize(
    "name",
    [
        "sessionToken",
        "apiSecret",
        "SecretAccessKey",
        "password ",
        "myAPIKey",
        # a review's misses (2026-12-03): names the list did not hold, or with a dot inside
        "passphrase",
        "credentials",
        "clientCredential",
        "jwt",
        "api.key",
        "access.token",
    ],
)
def test_camel_case_and_padded_secret_names_have_their_values_masked(name: str) -> None:
    doc = json.dumps({name: "shortpw1", "n": 1})
    for text in (doc, doc[:-1] + ', "n": 2}'):  # parsed, and a key twice (the raw-text path)
        assert "shortpw1" not in str(Masker().mask_value("input.value", text)), text
    assert "shortpw1" not in str(Masker().mask_attributes({f"app.{name}": "shortpw1"}))


@pytest.mark.parametrize("name", ["passphrase", "jwt", "api.key", "pin_password", "credentials"])
def test_a_number_under_a_secret_name_is_masked(name: str) -> None:
    """A numeric PIN or passcode is a secret too: only strings were replaced (a README-only review)."""
    masker = Masker()
    assert "987654321" not in str(masker.mask_attributes({f"app.{name}": 987654321, "app.n": 5}))
    assert "98765.4321" not in str(masker.mask_attributes({f"app.{name}": 98765.4321}))
    for doc in ({name: 987654322, "n": 1}, {name: [987654323, "x"]}, {"outer": {name: {"v": 987654324}}}):
        out = str(masker.mask_value("input.value", json.dumps(doc)))
        assert "98765432" not in out, out
    kept = masker.mask_attributes({"app.count": 987654325, f"app.{name}.enabled": True})
    assert kept["app.count"] == 987654325  # a number under an ordinary name stays a number


# Every form SECRET_NAME takes, as a user's code would spell it.
_SECRET_NAMES = [
    "password", "passwd", "pwd", "passphrase", "secret", "client_secret", "clientSecret", "api_key", "apikey",
    "apiKey", "access_key", "secret_key", "private_key", "access_token", "refresh_token", "auth_token",
    "id_token", "token", "sessionToken", "jwt", "credential", "credentials", "clientCredential",
    "authorization", "cookie", "set-cookie", "x-api-key", "api.key", "pin_password",
]


@pytest.mark.parametrize("name", _SECRET_NAMES)
def test_secret_named_values_in_reprs_and_text_are_masked(name: str) -> None:
    """A secret name's value written as data in text, not JSON: a Python dict's or a pydantic model's repr
    (what ``str(obj)`` puts in ``input.value`` or a log line), keyword arguments, ``name=value``, and a
    number under the name in JSON that cannot be parsed. Only password, token, secret and ``*key`` were
    read in text, and a quoted value only to its first space (a README-only review's miss, 2026-12-04)."""
    masker = Masker()
    texts = [
        f"{{'{name}': 'correct horse 71', 'n': 1}}",  # a dict's repr
        f"Login(user='ada', {name}='correct horse 72')",  # a pydantic model's repr (a name with - or . too)
        f'call({name}="correct horse 73")',
        f"{name}=correcthorse74 next",
        f"{{'{name}': 918273675, 'n': 1}}",  # a numeric PIN in a repr
        f'err {{"{name}": 918273676, "x": ',  # ... and in JSON cut short
        f'log: {{"{name}": 918273677, "n": 1, "{name}": 2}}',  # ... and in JSON named twice (not parsed)
    ]
    for text in texts:
        out = str(masker.mask_value("input.value", text))
        assert "correct" not in out and "9182736" not in out, (text, out)
        assert masker.mask_value("input.value", out) == out  # masking again changes nothing
    assert json.loads(str(masker.mask_value("input.value", f'{{"{name}": 918273678, "{name}": 1}}')))


def test_a_secret_in_a_real_pydantic_repr_is_masked() -> None:
    from pydantic import BaseModel

    class Login(BaseModel):
        user: str
        passphrase: str
        api_key: str

    text = repr(Login(user="ada", passphrase="it's correct horse", api_key="ab12"))
    out = Masker().mask_text(text)
    assert "correct horse" not in out and "ab12" not in out and "user='ada'" in out, out


@pytest.mark.parametrize(
    ("text", "planted"),
    [
        # a review's (helper-40) leaks: inside a JSON string (raw text, escaped quotes), ...
        (json.dumps({"m": [{"content": 'config:\n  password: "hunter2"\n  api_key: "sk_live_short"'}]}), "hunter2"),
        (json.dumps({"m": 'config:\n  api_key: "sk_live_short"'}), "sk_live"),
        ('"password=\\"hunter2\\""', "hunter2"),  # a tool's output: a top-level JSON string
        ('"run \\"password=abc1\\""', "abc1"),
        # ... pydantic's ValidationError (the field on the line above its input), prefixed strings, pairs
        ("1 validation error for L\npassword\n  String should have at least 12 characters "
         "[type=string_too_short, input_value='hunter2', input_type=str]", "hunter2"),
        ("creds.api_key\n  Input should be a valid integer [type=int_parsing, input_value='k3y9', input_type=str]",
         "k3y9"),
        ("{'password': b'hunter2'}", "hunter2"),
        ("Tk(id_token=b'idtokval')", "idtokval"),
        ("[('password', 'hunter2')]", "hunter2"),
        ("OrderedDict([('password', 'odpass')])", "odpass"),
        ("[(b'x-api-key', b'abc123')]", "abc123"),
        ("{'cookies': 'sid=sekrit'}", "sekrit"),
        # a second review's (helper-41): escapes a raw reading of JSON cannot see through, ...
        (json.dumps({"m": 'config: password: \\"hunter2\\"'}), "hunter2"),
        (json.dumps({"m": "password\t=\thunter2"}), "hunter2"),
        (json.dumps({"m": "[('password', \"it's-hunter2\")]"}), "hunter2"),
        ("{'password': 'say \"hi\" hunter2'}", "hunter2"),
        ("msg='cfg={\\'password\\': \\'hunter2\\'}'", "hunter2"),  # a repr inside a repr
        # ... pairs in lists, cut, and long; pydantic's e.json()
        ("[['x-api-key', 'hunter2']]", "hunter2"),
        (json.dumps({"headers": [["Authorization", "hunter2"]]}), "hunter2"),
        ('{"headers": [["x-api-key", "hunter2"', "hunter2"),
        ("[('token', '" + "A" * 1017 + "hunter2')]", "hunter2"),
        ('config: password: \\"' + "a" * 1100 + 'hunter2\\"', "hunter2"),
        ('[{"type": "string_too_short", "loc": ["creds", "password"], "input": "hunter2"}]', "hunter2"),
    ],
)
def test_secret_values_in_escaped_prefixed_paired_and_error_forms_are_masked(text: str, planted: str) -> None:
    masker = Masker()
    out = str(masker.mask_value("output.value", text))
    assert planted not in out, out
    assert masker.mask_value("output.value", out) == out
    if text.startswith(('"', "{")) and text.endswith(('"', "}")) and '"' in text[1:]:
        with contextlib.suppress(ValueError):
            json.loads(text)
            json.loads(out)  # valid JSON stays valid: an escaped quote's backslash was masked away


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Login(password=None, token=False)", None),
        ("[M(token=None)]", None),
        ("if token == 'EOF':", None),
        ("api_key = os.getenv('API_KEY')", None),
        ("password = getpass()", None),
        ("secret=SecretStr('**********')", None),
        ("{'password': 12345}", "{'password': <secret:"),  # the brace stays
        ("{'api_key': \"password='\", 'b': \"'\"}", ", 'b': \"'\"}"),  # a name inside a value is the value's
        ('{"note": "set password=", "user": "bob"}', None),  # a string ending in a name is not its value's quote
        ('["token=", 5]', None),
        ("password = input('Password: ')", None),
    ],
)
def test_code_and_repr_structure_survive_masking(text: str, kept: str | None) -> None:
    """Code is not a value (a comparison, a call), None/False are none, and a value never eats the
    brackets or quotes around it (the review found ``token=<secret:…>`` eating ``False)``)."""
    masker = Masker()
    out = masker.mask_text(text)
    assert out == text if kept is None else (kept in out and out.endswith(text[-1])), out
    assert masker.mask_text(out) == out


@pytest.mark.parametrize(
    "text",
    [
        "the token: the next one",
        "max_tokens=512",
        "tokenizer='bpe'",
        "primary_key='id'",
        "monkey='banana'",
        "{'password_hint': 'first pet'}",
        "keyboard: 'qwerty'",
        "{'password': None, 'token': True}",
        "the password. Then 'x'",
    ],
)
def test_text_that_names_no_secret_value_keeps_it(text: str) -> None:
    assert Masker().mask_text(text) == text


@pytest.mark.parametrize(
    "name", ["maxTokens", "inputTokens", "primaryKey", "tokenizer", "TokenType", "credentialsProvider", "jwtIssuer"]
)
def test_names_that_only_contain_a_secret_word_keep_their_values(name: str) -> None:
    doc = json.dumps({name: "plain-value", "n": 1})
    assert "plain-value" in str(Masker().mask_value("input.value", doc))


def test_masking_masked_text_again_changes_nothing() -> None:
    """A token is not a secret: the hash in ``<secret:...>`` after a colon looked like one to the keyword
    detector, so masking twice wrapped tokens in tokens."""
    m = Masker()
    once = m.mask_text("api_key=AbC123dEf456GhI789jkl, token: zz9Yy8Xx7Ww6Vv5Uu4, mail ada@example.org")
    assert "AbC123" not in once and "zz9Yy8" not in once and "ada@" not in once
    assert m.mask_text(once) == once


def test_json_with_escaped_slashes_is_parsed() -> None:
    raw = '{"tel": "Ruf an: 030\\/901820", "url": "https:\\/\\/example.org\\/a"}'  # as some serializers write
    out = json.loads(str(Masker().mask_value("input.value", raw)))
    assert out["tel"].startswith("Ruf an: <phone:") and out["url"] == "https://example.org/a"


def test_json_without_findings_is_returned_as_is() -> None:
    raw = json.dumps({"temperature": 0.1, "max_tokens": 512, "model": "gpt-4o-mini"}, indent=2)
    assert Masker().mask_value("llm.invocation_parameters", raw) is raw


def test_bracketed_text_that_is_not_json_is_masked_as_text() -> None:
    out = Masker(salt="").mask_text("[draft] write to ada@example.org {soon}")
    assert out.startswith("[draft] write to <email:") and out.endswith("> {soon}")


# --- custom detectors -------------------------------------------------------------------------------------


def test_custom_pattern_and_hook() -> None:
    seen: list[str] = []

    def hook(key: str, value: str) -> str:
        seen.append(key)
        return value.replace("Project Falcon", "<project>")

    m = Masker(extra_patterns={"customer": r"CUST-\d{6}", "ticket": re.compile(r"TCK#\d+")}, hook=hook, salt="")
    out = m.mask_value("note", "CUST-123456 about Project Falcon, TCK#42, mail ada@example.org")
    assert isinstance(out, str)
    assert re.fullmatch(
        r"<customer:[0-9a-f]{16}> about <project>, <ticket:[0-9a-f]{16}>, mail <email:[0-9a-f]{16}>", out
    )
    assert seen == ["note"]
    assert Masker(extra_patterns={"pin": r"\b\d{4}\b"}).mask_value("pin", "1234") != "1234"  # short values too
    # JSON documents with user patterns take the parse path and stay valid.
    doc = json.loads(str(m.mask_value("input.value", json.dumps({"c": "CUST-654321"}))))
    assert doc["c"].startswith("<customer:")


def test_custom_detector_objects_and_detector_selection() -> None:
    shout = Detector("shout", re.compile(r"\b[A-Z]{5,}\b"), precheck=lambda s: any(c.isupper() for c in s))
    m = Masker(detectors=["email", shout], salt="")
    assert m.mask_text("HELLO ada@example.org +44 20 7946 0958").startswith("<shout:")
    assert "+44 20 7946 0958" in m.mask_text("HELLO ada@example.org +44 20 7946 0958")
    with pytest.raises(ValueError, match="unknown detector"):
        Masker(detectors=["email", "dna"])
    assert set(BUILTIN_DETECTORS) == {
        "url_credentials", "bearer", "api_key", "assignment", "email", "iban", "card", "phone"
    }


# --- false positives ------------------------------------------------------------------------------------

LOOKALIKES = [
    "2024-06-03T10:15:30.123456+02:00",
    "2024-06-03 10:15:30Z",
    "1717401600",
    "1717401600123456789",
    "span 00f067aa0ba902b7 trace 4bf92f3577b34da6a3ce929d0e0e4736",
    "span 0012345678901234",
    "tokens: prompt 1536, completion 412, total 1948",
    "v2.14.0",
    "version 10.4.2 build 2024.06.11",
    "3.14159265358979",
    "-3.75% and +2.5%",
    "€1,299.00 / $49.99 / 1.250,00 €",
    "order 4111111111111112",
    "order 4111-1111-1111-1112",
    "5123 4567 8901 2345",
    "DE00 1234 5678 9012 3456 78",
    "ISBN 978-3-16-148410-0",
    "01/02/2024 and 05.03.2024 and 2024/06/12",
    "10:45 - 11:30",
    "192.168.100.200",
    "bearer instruments",
    "basic information",
    "key: internationalization",
    "token: the-new-onboarding-flow",
    "monkey: abcdefgh12345678xyz",
    "x@2",
    "@decorator and @john",
]


@pytest.mark.parametrize("text", LOOKALIKES)
def test_lookalikes_are_not_masked(text: str) -> None:
    assert Masker().mask_text(text) == text


def test_validators() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("340000000000009")
    assert not luhn_valid("4111111111111112") and not luhn_valid("4111 1111")
    assert iban_valid("DE89370400440532013000") and iban_valid("FR1420041010050500013M02606")
    assert not iban_valid("DE89370400440532013001") and not iban_valid("DE00")


@pytest.mark.parametrize(
    "text",
    [
        "+1 (415) 555-0132",
        "+44 20 7946 0958",
        "+49 30 901820",
        "+4915112345678",
        "+49 (0)30 901820",
        "0176 12345678",
        "030/901820",
        "03-1234-5678",
        "06 12 34 56 78",
        "(415) 555-0199",
        "415-555-0143",
        "+1.415.555.0170",
    ],
)
def test_phone_formats(text: str) -> None:
    assert re.fullmatch(r"<phone:[0-9a-f]{16}>", Masker().mask_text(text)), text


@pytest.mark.parametrize(
    ("text", "value", "kept"),
    [
        ("card 4111 1111 1111 1111 12/25 cvv 123", "4111 1111 1111 1111", " 12/25 cvv 123"),  # then the expiry
        ("card 4111111111111111 1 item", "4111111111111111", " 1 item"),
        ("378282246310005 12 34", "378282246310005", " 12 34"),
        ("+44 20 7946 0958 2024-06-03", "+44 20 7946 0958", " 2024-06-03"),  # a phone, then a date
        ("+440000000000 2024-06-03", "+440000000000", " 2024-06-03"),
        ("Ruf 030 901820 2024-06-03 an", "030 901820", " 2024-06-03 an"),
        ("4111 1111 1111 1111-12/25", "4111 1111 1111 1111", "-12/25"),  # the expiry joined with a dash
        ("5555-5555-5555-4444-12-25", "5555-5555-5555-4444", "-12-25"),
        ("card 4111.1111.1111.1111.5", "4111.1111.1111.1111", ".5"),
        ("item 01 4111 1111 1111 1111", "4111 1111 1111 1111", ""),  # a short number before a card
        ("0674 5555-5555-5555-4444", "5555-5555-5555-4444", ""),
        ("x 0812 3061 020 7946 0958", "020 7946 0958", ""),  # a national prefix loses to the whole number
    ],
)
def test_a_value_followed_by_more_digit_groups_is_masked(text: str, value: str, kept: str) -> None:
    """The numeric detector's match is greedy; a value that checks only without the groups around it is
    still found, with the token of the value alone (the first nine leaked before)."""
    token = Masker().mask_text(value)
    assert re.fullmatch(r"<(card|phone):[0-9a-f]{16}>", token), token
    out = Masker().mask_text(text)
    assert out.endswith(token + kept) and value not in out, out


# --- the exporter ------------------------------------------------------------------------------------------


def test_exported_copy_keeps_identity_and_original_is_untouched() -> None:
    resource = Resource({"service.name": "mail", "team.contact": "ops@example.com"})

    def emit(tracer: Any) -> None:
        with tracer.start_as_current_span("parent") as parent:
            parent.add_event("note", {"message": "ada@example.org"})
            with tracer.start_as_current_span("child", kind=SpanKind.CLIENT, attributes={"to": "ada@example.org"}):
                pass

    inner = InMemorySpanExporter()
    run_spans(MaskingExporter(inner, Masker()), emit, resource)
    masked_child, masked_parent = inner.get_finished_spans()
    assert masked_child.name == "child" and masked_child.kind is SpanKind.CLIENT
    assert masked_child.parent is not None and masked_parent.context is not None
    assert masked_child.parent.span_id == masked_parent.context.span_id
    assert masked_child.start_time and masked_child.end_time
    assert masked_child.resource.attributes["team.contact"] == "ops@example.com"  # resource is not masked
    assert masked_child.instrumentation_scope is not None and masked_child.instrumentation_scope.name == "test"
    assert masked_parent.events[0].timestamp and masked_parent.events[0].name == "note"
    assert "ada@example.org" not in haystack([masked_child, masked_parent])


def test_original_span_is_not_mutated() -> None:
    span = make_span({"a": "ada@example.org", "b": 1})
    (out,) = export_raw([span], Masker())
    assert span.attributes is not None and span.attributes["a"] == "ada@example.org"
    assert out.attributes is not None and out.attributes["a"].startswith("<email:") and out.attributes["b"] == 1


def test_dropped_counts_are_kept() -> None:
    from opentelemetry.sdk.trace import SpanLimits

    memory = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2, max_events=1))
    provider.add_span_processor(SimpleSpanProcessor(MaskingExporter(memory, Masker())))
    with provider.get_tracer("t").start_as_current_span("s") as span:
        span.set_attributes({"a": "ada@example.org", "b": "x", "c": "y"})
        span.add_event("e1", {"m": "ada@example.org"})
        span.add_event("e2")
    (out,) = memory.get_finished_spans()
    assert out.dropped_attributes == 1 and out.dropped_events == 1
    assert encode_spans([out]).resource_spans[0].scope_spans[0].spans[0].dropped_attributes_count == 1


def test_spans_without_findings_are_passed_through_as_is() -> None:
    span = make_span({"llm.model_name": "gpt-4o-mini", "note": "nothing to see", "n": 3})
    memory = InMemorySpanExporter()
    MaskingExporter(memory, Masker()).export([span])
    assert memory.get_finished_spans()[0] is span


def test_links_and_sequences_are_masked() -> None:
    link = Link(SpanContext(1, 2, is_remote=True), {"from": "ada@example.org"})
    span = make_span({"tag.tags": ("vip", "ada@example.org"), "list": ["+44 20 7946 0958"]}, links=[link])
    (out,) = export_raw([span], Masker())
    assert "ada@example.org" not in haystack([out]) and "7946" not in haystack([out])
    assert out.attributes is not None and isinstance(out.attributes["tag.tags"], tuple)
    assert out.attributes["tag.tags"][0] == "vip"


def test_exporter_never_raises_and_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    def bad_hook(key: str, value: str) -> str:
        if "boom" in value:
            raise RuntimeError(f"hook failed on {value}")
        return value

    class Weird:
        def __str__(self) -> str:
            return "weird ada@example.org"

    huge = tuple(f"item {i} ada{i}@example.org" for i in range(20000))
    attrs = {
        "ok": "fine text",
        "boom": "boom ada@example.org",
        "bytes": b"ada@example.org",
        "binary": b"\xff\xfe\x00 ada@example.org",
        "weird": Weird(),
        "huge": huge,
        "nested": {"deep": ["ada@example.org", None, 3]},
        "none": None,
        "deep_json": "[" * 200 + '"ada@example.org"' + "]" * 200,
    }
    masker = Masker(hook=bad_hook)
    with caplog.at_level(logging.WARNING, logger="otel_basic.masking"):
        (out,) = export_raw([make_span(attrs)], masker)
        export_raw([make_span({"boom": "boom again"})], masker)
    assert out.attributes is not None
    assert out.attributes["boom"] == ERROR_PLACEHOLDER
    assert out.attributes["ok"] == "fine text"
    assert out.attributes["bytes"] != b"ada@example.org" and isinstance(out.attributes["bytes"], bytes)
    binary = out.attributes["binary"]
    assert isinstance(binary, bytes) and binary.startswith(b"\xff\xfe\x00 <email:")  # other bytes kept
    assert "ada@example.org" not in str(out.attributes["weird"])
    assert len(out.attributes["huge"]) == 20000 and "ada1@example.org" not in out.attributes["huge"][1]
    assert "ada@example.org" not in json.dumps(out.attributes["nested"])
    assert "ada@example.org" not in str(out.attributes["deep_json"])
    json.loads(str(out.attributes["deep_json"]))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ada@example.org" not in warnings[0].getMessage()
    assert masker.error_count == 2


def test_json_too_deep_to_parse_fails_closed() -> None:
    deep = "[" * 200 + '"ada@example.org", "CUST-1"' + "]" * 200
    masker = Masker(extra_patterns={"customer": r"CUST-\d"})  # user patterns force the parse path
    assert masker.mask_value("input.value", deep) == ERROR_PLACEHOLDER


def test_a_span_that_cannot_be_read_is_exported_as_a_skeleton() -> None:
    class Broken(ReadableSpan):
        @property
        def attributes(self) -> Any:
            raise RuntimeError("unreadable")

    broken = Broken("broken", context=SpanContext(1, 2, is_remote=False), start_time=1, end_time=2)
    (out,) = export_raw([broken], Masker())
    assert out.name == "broken" and out.context == broken.context
    assert out.attributes == {"otel_basic.masking.error": ERROR_PLACEHOLDER}


# --- encodings and shapes a hostile tester found -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "raw"),
    [
        ("mail leakad=40example.org now", "leakad"),  # quoted-printable
        ("Subject: =?utf-8?q?x=40example.org?=", "x=40example"),  # MIME encoded word
        ("mail le\u200bak@example.org now", "le\u200bak"),  # zero-width space
        ("mail leak@exa\u00admple.org now", "exa\u00admple"),  # soft hyphen
        ("mail leak\u202e@example.org now", "example.org"),  # right-to-left override
        ("mail leak\ufe6bexample.org now", "example.org"),  # small commercial at
        ("KeyError('mail le\\u200bak@example.org now')", "example.org"),  # an escaped zero-width space (repr)
        ("mail le&shy;ak@example.org now", "example.org"),  # HTML soft hyphen
        ("mail leakam@exam=\nple.org now", "leakam"),  # quoted-printable soft line break
        ("mail leakam@exam=\r\nple.org now", "leakam"),
        ("KeyError('mail leakam@exam=\\nple.org')", "leakam"),  # the same in a repr
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----", "MIIEvQ"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7 (cut", "MIIEow"),
        ("https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/abcdEFGHijklMNOPqrst", "abcdEFGH"),
        ("https://s3.amazonaws.com/b/k?X-Amz-Signature=abcdef0123&X-Amz-Credential=AKIAX/2024", "abcdef0123"),
        ("https://acct.blob.core.windows.net/c?sv=1&sig=abcDEF123%2Bx&se=2024", "abcDEF123"),
        ("https://app.example/cb?code=abc123XYZ&state=1", "abc123XYZ"),
        ("https://app.example/?session=s3ss10n", "s3ss10n"),
        ("https://app.example/?auth=a9th", "a9th"),
        ("https://app.example/?pass=hunter22", "hunter22"),
        ("https://app.example/?token=abc123", "abc123"),
        ("https://app.example/?secret=abc123", "abc123"),
        ("token=abc123 and secret=s3cr3t", "abc123"),
        ("token=abc123 and secret=s3cr3t", "s3cr3t"),
        ("IBAN DE89-3704-0044-0532-0130-00 ok", "DE89"),
        ("IBAN de89-3704-0044-0532-0130-00 ok", "de89"),
        ("card 5555 - 5555 - 5555 - 4444 ok", "5555"),
    ],
)
def test_encoded_and_shaped_values_are_masked(text: str, raw: str) -> None:
    out = Masker(salt="").mask_text(text)
    assert raw not in out, out
    assert re.search(r"<(email|secret|iban|card):[0-9a-f]{16}>", out), out
    # the same inside a JSON document (fast path or parse path)
    doc = Masker(salt="").mask_text(json.dumps({"v": text}))
    assert raw not in json.loads(doc)["v"], doc


@pytest.mark.parametrize(
    "text",
    [
        "width=40px and height=40px",
        "f(a=\n1, b=\\n2) and a soft\u00adhyphen",
        "see https://docs.example/search?q=masking&page=2&lang=en",
        "max_tokens=256, token: internationalization",
        "-----BEGIN PUBLIC KEY-----",
        "range 2000 - 3000",
    ],
)
def test_new_shapes_leave_lookalikes_alone(text: str) -> None:
    assert Masker(salt="").mask_text(text) == text
