"""The Langfuse client's span processor runs only where it has work, and what arrives is unchanged.

Why: the processor's ``on_start``/``on_end`` ran for every span although, with its export off, it
only matters for spans started under ``propagate_attributes`` (or Langfuse baggage). The gate skips
the rest; these tests check that the endpoint sees the same attributes with and without the gate
(propagated user/session/metadata/tags, baggage, ``@observe``, LlamaIndex spans), and that the
processor is really skipped for plain spans.
"""

from __future__ import annotations

from typing import Any

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
