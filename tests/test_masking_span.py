"""``Masker.mask_span``: every string of a span, ``hide`` never weaker than ``detectors``, cost bounded by
the size limit, never raises; tokens stable across processes and collision-safe."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode, Tracer

import otel_basic
from otel_basic.limits import truncation_marker
from otel_basic.masking import (
    ERROR_ATTRIBUTE,
    ERROR_PLACEHOLDER,
    HIDDEN,
    Masker,
    Scanner,
    derive_salt,
    hide_traceback,
)
from otel_basic.testing import LangfuseReceiver

from .conftest import PYTHON, subprocess_env
from .privacy_values import Planted, leaked, personal_values

ADA = "ada.lovelace@example.com"


def finished(emit: Callable[[Tracer], None]) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    emit(provider.get_tracer("t"))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def strings(span: ReadableSpan) -> Iterator[str]:
    """Every string of a span, as an exporter would encode it."""
    yield span.name
    yield span.status.description or ""

    def values(attrs: Any) -> Iterator[str]:
        for k, v in (attrs or {}).items():
            yield k
            yield from (v if isinstance(v, (list, tuple)) else [v]) if not isinstance(v, str) else [v]

    yield from (str(v) for v in values(span.attributes))
    for event in span.events:
        yield event.name
        yield from (str(v) for v in values(event.attributes))
    for link in span.links:
        yield from (str(v) for v in values(link.attributes))


def full_span(value: str) -> ReadableSpan:
    def emit(tracer: Tracer) -> None:
        with tracer.start_as_current_span("other") as other:
            ctx = other.get_span_context()
        with tracer.start_as_current_span(
            f"mail from {value}",
            attributes={"app.note": f"see {value}", "input.value": json.dumps({"to": value}), "user.id": value,
                        "session.id": value, "langfuse.trace.name": f"from {value}", "llm.model_name": "gpt-4o"},
            links=[Link(ctx, {"peer": value})],
        ) as span:
            span.add_event(f"sent to {value}", {"log.message": f"hello {value}", "detail": value})
            try:
                try:
                    raise KeyError(f"account of {value}")
                except KeyError as exc:
                    raise ValueError(f"{value}: refund failed") from exc
            except ValueError as exc:
                span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{value}: refund failed"))

    return finished(emit)[-1]


@pytest.mark.parametrize("level", ["detectors", "hide"])
def test_every_string_of_the_span_is_masked(level: str) -> None:
    span = full_span(ADA)
    masked = Masker(level, salt="s").mask_span(span)
    assert ADA in "\n".join(strings(span))
    assert not any(ADA in s or "ada.lovelace" in s for s in strings(masked)), list(strings(masked))
    # identity and timing are the original's; the original is untouched
    assert masked.context == span.context and masked.parent == span.parent
    assert (masked.start_time, masked.end_time, masked.status.status_code) == (
        span.start_time, span.end_time, StatusCode.ERROR,
    )
    assert span.name == f"mail from {ADA}"
    assert masked.attributes is not None and masked.attributes["llm.model_name"] == "gpt-4o"
    token = Masker(level, salt="s").mask_text(ADA)
    assert masked.name == f"mail from {token}"
    assert masked.attributes["user.id"] == masked.attributes["session.id"] == token


def test_hide_status_and_stack_traces() -> None:
    masked = Masker("hide", salt="s").mask_span(full_span(ADA))
    assert masked.status.description == HIDDEN  # "ada...: refund failed" has no exception type in front
    (exception,) = [e for e in masked.events if e.name == "exception"]
    attrs = exception.attributes or {}
    assert attrs["exception.message"] == HIDDEN and attrs["exception.type"] == "ValueError"
    trace = str(attrs["exception.stacktrace"])
    assert "KeyError: <hidden>" in trace and "ValueError: <hidden>" in trace
    assert "ada.lovelace" not in trace and "KeyError: 'account" not in trace and "<email:" not in trace
    assert 'File "' in trace and "The above exception was the direct cause" in trace
    assert Masker("hide").mask_span(finished(lambda t: t.start_span("x").end())[0]).status.description is None


def test_hide_traceback_keeps_frames_and_hides_every_message() -> None:
    try:
        try:
            raise KeyError("account of Ada Lovelace")
        except KeyError:
            raise RuntimeError("cannot refund Ada Lovelace\nsecond line about Ada") from None
    except RuntimeError as exc:
        exc.add_note("note: Ada Lovelace called")
        import traceback

        text = "".join(traceback.format_exception(exc))
    hidden = hide_traceback(text)
    assert "Ada" not in hidden.replace('raise KeyError("account of Ada Lovelace")', "").replace(
        'raise RuntimeError("cannot refund Ada Lovelace\\nsecond line about Ada") from None', ""
    )
    assert "RuntimeError: <hidden>" in hidden and "Traceback (most recent call last):" in hidden


LEVEL_FIELDS = st.sampled_from(["app.note", "input.value", "user.id", "langfuse.trace.name", "llm.prompts"])


@settings(max_examples=40, deadline=None)
@given(planted=st.lists(personal_values(), min_size=1, max_size=3), key=LEVEL_FIELDS)
def test_hide_is_at_least_as_private_as_detectors(planted: list[Planted], key: str) -> None:
    text = " and ".join(p.text for p in planted)

    def emit(tracer: Tracer) -> None:
        with tracer.start_as_current_span(text, attributes={key: text}) as span:
            span.add_event(text, {"message": text, "other": text})
            span.set_status(Status(StatusCode.ERROR, f"ValueError: {text}"))

    (span,) = finished(emit)
    det = Masker("detectors", salt="s").mask_span(span)
    hide = Masker("hide", salt="s").mask_span(span)
    for d, h in zip(strings(det), strings(hide), strict=True):
        assert h == d or HIDDEN in h, (d, h)  # hide = detectors, or content replaced
    assert not leaked("\n".join(strings(hide)).encode(), planted)


# --- cost bounded by the limit ------------------------------------------------------------------------


def test_cost_is_bounded_by_the_limit_not_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    original = Scanner.hits_and_secret_words

    def recording(self: Scanner, text: str, want: bool) -> Any:
        seen.append(len(text))
        return original(self, text, want)

    monkeypatch.setattr(Scanner, "hits_and_secret_words", recording)
    huge = ("4111 1111 1111 1111 +44 20 7946 0958 " * 300_000)[:10_000_000]
    (span,) = finished(lambda t: t.start_span("big", attributes={"input.value": huge, "list": [huge, huge]}).end())
    masked = Masker(salt="s", max_chars=16384).mask_span(span)
    assert max(seen) <= 16384 + 512, "the detectors never read more than the limit plus the look-ahead"
    value = str((masked.attributes or {})["input.value"])
    assert len(value) <= 16384 and value.endswith(truncation_marker(len(huge)))
    assert "4111 1111" not in value and "<card:" in value
    assert all(len(str(v)) <= 16384 for v in list((masked.attributes or {})["list"]))  # type: ignore[arg-type]
    # a smaller per-call bound
    small = Masker(salt="s").mask_span(span, max_chars=1000)
    assert len(str((small.attributes or {})["input.value"])) <= 1000


@pytest.mark.parametrize("offset", range(-30, 8, 3))
def test_a_value_straddling_the_cut_is_replaced_whole(offset: int) -> None:
    bound = 2000
    marker = truncation_marker(10**6)
    start = bound - len(marker) + offset
    text = ("x " * bound)[:start] + ADA + " " + "y" * (10**6 - start - len(ADA) - 1)
    out = Masker(salt="s", max_chars=bound).mask_text(text)
    assert len(out) <= bound and out.endswith(marker)
    for cut in range(3, len(ADA) + 1):
        assert ADA[:cut] not in out, "no prefix of the address survives the cut"


def test_a_string_cut_before_masking_loses_its_partial_tail() -> None:
    m = Masker(salt="s")
    for partial in ("ada.lovelace@exa", "+44 20 7946", "DE89 3704 0044 05", "4111 1111 11"):
        out = m.mask_text(f"write to {partial}{truncation_marker(99999)}")
        assert partial not in out and out.startswith("write to ") and out.endswith(truncation_marker(99999))


# --- never raises -----------------------------------------------------------------------------------------


class Exploding(dict[str, Any]):
    def items(self) -> Any:
        raise RuntimeError(f"boom {ADA}")


def test_failure_exports_a_skeleton_never_the_raw_span(caplog: pytest.LogCaptureFixture) -> None:
    (span,) = finished(lambda t: t.start_span(f"mail {ADA}", attributes={"a": "b"}).end())
    span._attributes = Exploding(a=ADA)
    m = Masker(salt="s")
    out = m.mask_span(span)
    assert out.attributes == {ERROR_ATTRIBUTE: ERROR_PLACEHOLDER}
    assert out.context == span.context and not out.events and not out.links
    assert ADA not in out.name and out.name.startswith("mail <email:")
    assert m.error_count == 1 and ADA not in caplog.text


# --- tokens ----------------------------------------------------------------------------------------------


def test_tokens_are_hmac_with_64_bits_and_a_stable_derived_salt() -> None:
    token = Masker(salt="a").mask_text(ADA)
    assert re.fullmatch(r"<email:[0-9a-f]{16}>", token)
    assert Masker(salt="a").mask_text(ADA) == token != Masker(salt="b").mask_text(ADA)
    assert derive_salt("pk-lf-1", "svc") == derive_salt("pk-lf-1", "svc") != derive_salt("pk-lf-2", "svc")
    assert "pk-lf-1" not in derive_salt("pk-lf-1", "svc")
    for salt in ("a", "x" * 100, ""):  # HMAC-SHA256 exactly (short, long and empty keys)
        expected = hmac.new(salt.encode(), ADA.encode(), hashlib.sha256).hexdigest()[:16]
        assert Masker(salt=salt).mask_text(ADA) == f"<email:{expected}>"
    # 64 bits: at a million users the chance that any two share a token is ~1e6**2 / 2**65 ~ 3e-8.
    # 200 000 distinct addresses here (a 6-hex-digit hash had collisions from ~5 000 on).
    m = Masker(salt="a")
    tokens = {m._make_token("email", f"user{i}@example.com") for i in range(200_000)}
    assert len(tokens) == 200_000


CHILD = """
import otel_basic
otel_basic.configure()
with otel_basic.get_tracer("child").start_as_current_span("run", attributes={"user.id": "Ada.Lovelace@Example.com"}):
    pass
assert otel_basic.flush(timeout=10)
otel_basic.shutdown()
"""


def test_two_processes_give_the_same_address_the_same_token(langfuse_env: LangfuseReceiver) -> None:
    def run(**extra: str) -> str:
        langfuse_env.clear()
        subprocess.run([PYTHON, "-c", CHILD], env=subprocess_env(**extra), check=True, timeout=60)
        (span,) = langfuse_env.wait_for_spans(1)
        return str(span.attributes["user.id"])

    first, second = run(), run()
    assert re.fullmatch(r"<email:[0-9a-f]{16}>", first) and first == second, "stable with no setting at all"
    salted = run(OTEL_BASIC_MASK_SALT="another-deployment-secret")
    assert re.fullmatch(r"<email:[0-9a-f]{16}>", salted) and salted != first


def test_an_app_that_wants_raw_ids_allow_lists_the_key(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BASIC_MASK_ALLOW_KEYS", "user.id,langfuse.user.id")
    otel_basic.configure()
    attrs = {"user.id": ADA, "langfuse.user.id": ADA, "session.id": ADA, "app.uuid": "u-9"}
    with otel_basic.get_tracer("t").start_as_current_span("run", attributes=attrs):
        pass
    assert otel_basic.flush(timeout=10)
    (span,) = langfuse_env.spans
    assert span.attributes["user.id"] == span.attributes["langfuse.user.id"] == ADA
    assert span.attributes["session.id"].startswith("<email:") and span.attributes["app.uuid"] == "u-9"


def test_salt_setting_is_read_and_never_shown() -> None:
    from otel_basic.settings import load_settings

    settings = load_settings({"OTEL_BASIC_MASK_SALT": "a-long-random-deployment-salt", "OTEL_BASIC_FILE": "x.jsonl"})
    assert settings.mask_salt == "a-long-random-deployment-salt"
    assert "a-long-random-deployment-salt" not in repr(settings)
    assert "a-long-random-deployment-salt" not in json.dumps(settings.describe(), default=str)
    assert load_settings({"OTEL_BASIC_FILE": "x.jsonl"}).mask_salt is None


def test_hide_traceback_handles_exception_groups() -> None:
    import traceback

    who, card = "Ada", "4111"  # runtime values: the source lines the traceback shows hold only the names
    try:
        raise ExceptionGroup(f"batch for {who}", [ValueError(f"{who.lower()} v"), KeyError(card)])
    except ExceptionGroup as exc:
        text = "".join(traceback.format_exception(exc))
    hidden = hide_traceback(text)
    assert "Ada" not in hidden and "ada v" not in hidden and "4111" not in hidden
    assert "ExceptionGroup: <hidden>" in hidden and "ValueError: <hidden>" in hidden
    assert "---------------- 1 ----------------" in hidden


# --- hostile-tester gaps: nested JSON, attribute keys, integer cards, logger names --------------------------


def test_secret_keys_inside_json_encoded_json_are_masked() -> None:
    """Tool-call arguments are a JSON string inside the messages JSON of ``input.value``/``output.value``
    (and of ``metadata``/``tag.tags``): a ``password`` key in there is masked like a top-level one."""
    args = json.dumps({"username": "bob", "password": "PWLEAK3xyz"})
    messages = {"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": args}}]}]}
    twice = json.dumps({"m": json.dumps([args])})  # JSON in JSON in JSON
    spans = finished(
        lambda t: t.start_span(
            "s",
            attributes={
                "input.value": json.dumps(messages),
                "output.value": json.dumps(messages, indent=2),
                "metadata": twice,
                "tag.tags": json.dumps([args]),
            },
        ).end()
    )
    masked = Masker(salt="s").mask_span(spans[0])
    attrs = dict(masked.attributes or {})
    for key in ("input.value", "output.value", "metadata", "tag.tags"):
        assert "PWLEAK3" not in attrs[key], (key, attrs[key])
        assert "<secret:" in attrs[key] and "bob" in attrs[key]
        json.loads(attrs[key])  # still valid JSON
    inner = json.loads(json.loads(attrs["input.value"])["messages"][0]["tool_calls"][0]["function"]["arguments"])
    assert inner["username"] == "bob" and inner["password"].startswith("<secret:")


def test_attribute_keys_are_masked_and_stay_unique() -> None:
    key = "langfuse.trace.metadata.approved_by:mdleak1@example.org"

    def emit(t: Tracer) -> None:
        span = t.start_span(
            "s",
            attributes={key: True, "note.a@b.org": "x", "note.A@B.org": "y", "plain.key": "v"},
            links=[Link(t.start_span("l").get_span_context(), {"link.carol@example.org": 1})],
        )
        span.add_event("e", {"ev.dave@example.org": "z"})
        span.end()

    span = next(s for s in finished(emit) if s.name == "s")
    for level in ("detectors", "hide"):
        masked = Masker(level, salt="s").mask_span(span)
        text = "\n".join(strings(masked))
        for raw in ("mdleak1", "a@b.org", "A@B.org", "carol@", "dave@"):
            assert raw not in text, (level, raw)
        attrs = dict(masked.attributes or {})
        assert len(attrs) == 4 and attrs["plain.key"] == "v"
        assert attrs[key.replace("mdleak1@example.org", Masker(salt="s").mask_text("mdleak1@example.org"))] is True
        # a@b.org and A@B.org are one address: one token, both attributes kept
        both = [k for k in attrs if k.startswith("<email:")]
        assert sorted(attrs[k] for k in both) == ["x", "y"] and any(k.endswith("#2") for k in both)


def test_unchanged_keys_are_the_same_objects_and_cached() -> None:
    masker = Masker(salt="s")
    attrs = {"plain.key": "v", "n": 3}
    assert masker.mask_attributes(attrs) == attrs
    assert masker.mask_span(finished(lambda t: t.start_span("s", attributes=attrs).end())[0]).attributes == attrs
    assert set(masker._key_masks) >= {"plain.key"} and masker._key_masks["plain.key"] == "plain.key"


def test_integer_card_numbers_are_masked() -> None:
    masker = Masker(salt="s")
    spans = finished(
        lambda t: t.start_span(
            "s",
            attributes={"card": 4111111111111111, "cards": [5555555555554444, 7], "count": 1234567890123, "n": 42},
        ).end()
    )
    attrs = dict(masker.mask_span(spans[0]).attributes or {})
    assert attrs["card"] == masker.mask_text("4111111111111111") and str(attrs["card"]).startswith("<card:")
    assert list(attrs["cards"]) == [masker.mask_text("5555555555554444"), 7]
    assert attrs["count"] == 1234567890123 and attrs["n"] == 42  # not Luhn / too short: unchanged
    assert masker.mask_value("x", 4111111111111111) == attrs["card"]


def test_logger_names_in_log_events_are_masked() -> None:
    def emit(t: Tracer) -> None:
        span = t.start_span("s")
        span.add_event("log", {"log.logger": "app.alice@example.org", "logger.name": "bob@example.org"})
        span.end()

    masked = Masker(salt="s").mask_span(finished(emit)[0])
    text = "\n".join(strings(masked))
    assert "alice@" not in text and "bob@" not in text


def test_instrumentation_scope_attributes_and_schema_url_are_masked() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(
        "scope-x", "1.0", schema_url="https://u:LEAKSCHEMA@h.example.com/s", attributes={"owner": "carol@example.org"}
    )
    for _ in range(2):
        tracer.start_span("s").end()
    provider.get_tracer("plain").start_span("p").end()
    provider.shutdown()
    masker = Masker(salt="s")
    first, second, plain_span = (masker.mask_span(s) for s in exporter.get_finished_spans())
    scope = first.instrumentation_scope
    assert scope is not None and scope.name == "scope-x" and scope.version == "1.0"
    assert "LEAKSCHEMA" not in scope.schema_url and "<secret:" in scope.schema_url
    assert dict(scope.attributes or {}) == {"owner": masker.mask_text("carol@example.org")}
    assert second.instrumentation_scope is scope  # cached: one masked scope per scope, spans group as before
    assert plain_span is exporter.get_finished_spans()[2]  # nothing to mask: the span itself


def test_a_value_right_after_a_dot_in_a_key_is_masked() -> None:
    masker = Masker(salt="s")
    keys = {"metadata.5555 - 5555 - 5555 - 4444": 1, "metadata.4111111111111111": 2, "v1.2.3456": 3}
    out = masker.mask_attributes(keys)
    card1, card2 = masker.mask_text("5555555555554444"), masker.mask_text("4111111111111111")
    assert out == {f"metadata.{card1}": 1, f"metadata.{card2}": 2, "v1.2.3456": 3}


def test_json_nested_in_json_strings_many_levels_deep() -> None:
    """Each level re-escapes (the text doubles); the size limit bounds the cost, never a raw secret."""
    for levels in (3, 9, 14):
        doc = json.dumps({"password": "PWDEEP123"})
        for _ in range(levels):
            doc = json.dumps({"a": doc})
        out = str(Masker(salt="s").mask_value("input.value", doc))
        assert "PWDEEP" not in out, levels


def test_a_span_with_nothing_to_mask_is_not_copied_when_its_keys_are_new_string_objects() -> None:
    """The key and value memories answer with the first equal object they saw: an equal key or value built
    anew (OpenInference and our IO handler build "input.value" and its JSON per span) read as changed, and
    every span was rebuilt and copied."""
    masker = Masker(salt="s")

    def span() -> ReadableSpan:
        parts = ("input", "value", "mime_type")
        value = " ".join(["nothing", "personal", "here", "at", "all"])
        attrs = {".".join(parts[:2]): value, ".".join(parts[::2]): "text/plain"}
        return ReadableSpan("step", attributes=attrs)

    masker.mask_span(span())
    again = span()
    assert masker.mask_span(again) is again
