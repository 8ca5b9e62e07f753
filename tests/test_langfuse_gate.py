"""The Langfuse client's span processor runs only where it has work, and what arrives is unchanged.

Why: the processor's ``on_start``/``on_end`` ran for every span although, with its export off, it
only matters for spans started under ``propagate_attributes`` (or Langfuse baggage). The gate skips
the rest; these tests check that the endpoint sees the same attributes with and without the gate
(propagated user/session/metadata/tags, baggage, ``@observe``, LlamaIndex spans), and that the
processor is really skipped for plain spans.
"""

from __future__ import annotations

from typing import Any

import pytest
from langfuse import observe, propagate_attributes
from llama_index.core.llms import MockLLM

import otel_basic
from otel_basic import langfuse as lf
from otel_basic.testing import LangfuseReceiver

_IGNORED = ("langfuse.observation.input", "langfuse.observation.output")  # carry ids/reprs: compared apart


def _scenario(tel: otel_basic.Telemetry) -> None:
    tracer = tel.tracer("tests.gate")
    with tracer.start_as_current_span("plain"):
        MockLLM().complete("no langfuse context")
    with (
        propagate_attributes(
            user_id="user-1", session_id="session-1", metadata={"team": "a"}, tags=["t1"], trace_name="named"
        ),
        tracer.start_as_current_span("propagated"),
    ):
        MockLLM().complete("inside propagate_attributes")
    with propagate_attributes(user_id="user-2", as_baggage=True), tracer.start_as_current_span("baggage"):
        pass

    @observe(name="observed")
    def observed(x: int) -> int:
        with tracer.start_as_current_span("under-observe"):
            return x * 2

    observed(21)


def _attributes(receiver: LangfuseReceiver) -> list[tuple[str, list[tuple[str, Any]]]]:
    rows = []
    for span in receiver.spans:
        attrs = sorted((k, repr(v)) for k, v in span.attributes.items() if k not in _IGNORED)
        rows.append((span.name, attrs))
    return sorted(rows)


def _run(receiver: LangfuseReceiver, *, eager: bool) -> list[tuple[str, list[tuple[str, Any]]]]:
    receiver.clear()
    tel = otel_basic.configure()
    assert tel.enabled and tel.provider is not None, tel.settings.reason
    if eager:
        assert lf.ungate(tel.provider)
    _scenario(tel)
    report = otel_basic.flush(timeout=10)
    assert report, report.summary()
    otel_basic.reset()
    return _attributes(receiver)


def test_gated_processor_gives_the_endpoint_the_same_attributes(langfuse_env: LangfuseReceiver) -> None:
    gated = _run(langfuse_env, eager=False)
    eager = _run(langfuse_env, eager=True)
    assert gated == eager
    by_name = dict(gated)
    propagated = dict(by_name["propagated"])
    assert propagated["user.id"] == "'user-1'" and propagated["session.id"] == "'session-1'"
    assert dict(by_name["baggage"])["user.id"] == "'user-2'"
    assert "user.id" not in dict(by_name["plain"])
    llm = [attrs for name, attrs in gated if dict(attrs).get("openinference.span.kind") == "'LLM'"]
    assert any(dict(a).get("user.id") == "'user-1'" for a in llm), "propagation must reach LlamaIndex spans too"


def test_processor_skipped_without_langfuse_context(telemetry: otel_basic.Telemetry) -> None:
    assert telemetry.provider is not None
    gate = lf._gates[telemetry.provider]
    seen: list[str] = []
    inner_start = gate.inner.on_start
    gate.inner.on_start = lambda span, parent_context=None: (seen.append(span.name), inner_start(span, parent_context))
    tracer = telemetry.tracer("tests.gate")
    for i in range(5):
        with tracer.start_as_current_span(f"plain-{i}"):
            MockLLM().complete("x")
    assert seen == []
    with propagate_attributes(user_id="u"), tracer.start_as_current_span("with-user"):
        pass
    assert seen == ["with-user"]
    assert gate._notes() == 0, "the inner processor forgot the span it saw start"


def test_carries_langfuse_state_reads_context_and_baggage() -> None:
    from opentelemetry import baggage, context

    assert not lf.carries_langfuse_state(context.Context())
    assert not lf.carries_langfuse_state(baggage.set_baggage("other", "x", context.Context()))
    assert lf.carries_langfuse_state(baggage.set_baggage("langfuse_user_id", "u", context.Context()))
    assert lf.carries_langfuse_state(context.set_value("langfuse.propagated.user_id", "u", context.Context()))


# --- the client's own batch processor must accept whatever environment ours accepts ----------------

HOSTILE_BATCH_ENV = [
    {"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"},  # valid with our 65536 queue; the SDK's default is 2048
    {"OTEL_BSP_MAX_QUEUE_SIZE": "100"},  # valid for us; the SDK's batch default (512) exceeds it
    {"LANGFUSE_FLUSH_AT": "abc"},
    {"LANGFUSE_FLUSH_AT": "99999"},
    {"LANGFUSE_FLUSH_AT": "-3"},
    {"LANGFUSE_FLUSH_INTERVAL": "nan"},
    {"LANGFUSE_FLUSH_INTERVAL": "soon"},
    {"OTEL_BSP_SCHEDULE_DELAY": "0"},
    {"OTEL_BSP_MAX_QUEUE_SIZE": "0"},
    {"OTEL_BSP_MAX_QUEUE_SIZE": "unset", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"},
]


@pytest.mark.parametrize("env", HOSTILE_BATCH_ENV, ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()))
def test_batch_settings_the_sdk_refuses_never_stop_tracing(
    env: dict[str, str],
    langfuse_env: LangfuseReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The Langfuse client's processor reads OTEL_BSP_*/LANGFUSE_FLUSH_* itself and raised on these,
    which turned all tracing off ("could not start telemetry (ValueError)")."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    tel = otel_basic.configure()
    assert tel.enabled, tel.settings.reason
    with tel.tracer("tests.gate").start_as_current_span("still-traced"):
        pass
    assert otel_basic.flush(timeout=10)
    assert "still-traced" in [s.name for s in langfuse_env.spans]
    assert tel.langfuse is not None  # bound: @observe and propagate_attributes work
    assert "Traceback" not in caplog.text  # the SDK logs one for a number it cannot parse


def test_a_langfuse_client_that_cannot_start_leaves_tracing_on(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever makes the client's constructor raise (a future SDK's check, a setting we do not know),
    spans still export; the warning says why, without the secret key the error may quote."""
    import langfuse

    secret = "sk-lf-test"  # the receiver's (LangfuseReceiver default)

    def broken(**kwargs: Any) -> None:
        raise ValueError(f"cannot start with secret {kwargs['secret_key']} at http://u:{secret}@host/")

    monkeypatch.setattr(langfuse, "Langfuse", broken)
    tel = otel_basic.configure()
    assert tel.enabled and tel.langfuse is None, tel.settings.reason
    with tel.tracer("tests.gate").start_as_current_span("traced-without-client"):
        pass
    assert otel_basic.flush(timeout=10)
    assert "traced-without-client" in [s.name for s in langfuse_env.spans]
    assert "the Langfuse client could not start (ValueError" in caplog.text
    assert secret not in caplog.text


def _client_timer_seconds(tel: otel_basic.Telemetry) -> float:
    assert tel.provider is not None
    gates = [p for p in tel.provider._active_span_processor._span_processors if isinstance(p, lf.LangfuseGate)]
    assert len(gates) == 1
    seconds: float = gates[0].inner._batch_processor._schedule_delay  # the SDK's private field
    return seconds


def test_the_client_processor_timer_does_not_follow_a_short_batch_delay(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its processor exports nothing; at OTEL_BSP_SCHEDULE_DELAY=1 it woke ~900 times a second in an idle
    app. LANGFUSE_FLUSH_INTERVAL, the client's own setting, still applies."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "1")
    tel = otel_basic.configure()
    assert tel.settings.schedule_delay == 0.001  # ours follows the variable
    assert _client_timer_seconds(tel) == 1.0
    otel_basic.shutdown()  # not one of our settings: configure() alone would keep the running pipeline
    monkeypatch.setenv("LANGFUSE_FLUSH_INTERVAL", "7")
    assert _client_timer_seconds(otel_basic.configure()) == 7.0
