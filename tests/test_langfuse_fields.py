"""langfuse_visible: finished SDK spans -> what Langfuse shows, checked through the view.

Real SDK spans (a real TracerProvider, real ``record_exception``), encoded to OTLP and decoded
as a backend would receive them; the assertions are on the Langfuse view, so each test fails if
the transform leaves something invisible.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from otel_basic.langfuse_fields import langfuse_visible
from otel_basic.testing.langfuse_view import LangfuseView, langfuse_view
from otel_basic.trace_tree import from_readable


@pytest.fixture
def recorded() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def shown(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], *, transform: bool = True) -> LangfuseView:
    out = [(langfuse_visible(s) or s) if transform else s for s in spans]
    return langfuse_view(from_readable(out))


def fail_in_helper() -> None:
    raise ValueError("the model said no")


def test_failed_span_shows_where_it_failed_and_the_stack_trace(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    tracer = provider.get_tracer("app")
    with pytest.raises(ValueError), tracer.start_as_current_span("verify"):
        fail_in_helper()
    before = shown(exporter.get_finished_spans(), transform=False).trace("verify").observation("verify")
    assert "Traceback" not in json.dumps(before.metadata)  # the stack trace only lived in an event

    obs = shown(exporter.get_finished_spans()).trace("verify").observation("verify")
    assert obs.level == "ERROR"
    assert obs.status_message is not None
    assert obs.status_message.startswith("ValueError: the model said no")
    assert "in fail_in_helper" in obs.status_message and "test_langfuse_fields.py:" in obs.status_message
    assert obs.metadata["exception.type"] == "ValueError"
    assert "Traceback (most recent call last)" in obs.metadata["exception.stacktrace"]
    assert "fail_in_helper" in obs.metadata["exception.stacktrace"]


def test_handled_recorded_exception_keeps_its_level_but_shows_the_stack_trace(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    with provider.get_tracer("app").start_as_current_span("tool") as span:
        try:
            fail_in_helper()
        except ValueError as exc:
            span.record_exception(exc)
    obs = shown(exporter.get_finished_spans()).trace("tool").observation("tool")
    assert obs.level == "DEFAULT" and obs.status_message is None
    assert "fail_in_helper" in obs.metadata["exception.stacktrace"]


def test_error_status_outranks_an_earlier_warning(recorded: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = recorded
    with provider.get_tracer("app").start_as_current_span("step") as span:
        span.set_attribute("langfuse.observation.level", "WARNING")
        span.set_attribute("langfuse.observation.status_message", "slow answer")
        span.set_status(Status(StatusCode.ERROR, "RuntimeError: gave up"))
    raw = shown(exporter.get_finished_spans(), transform=False).trace("step").observation("step")
    assert raw.level == "WARNING"  # what Langfuse would show without the transform: the error hidden
    obs = shown(exporter.get_finished_spans()).trace("step").observation("step")
    assert (obs.level, obs.status_message) == ("ERROR", "RuntimeError: gave up")


def test_an_error_logged_first_keeps_its_message(recorded: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = recorded
    with provider.get_tracer("app").start_as_current_span("step") as span:
        span.set_attribute("langfuse.observation.level", "ERROR")
        span.set_attribute("langfuse.observation.status_message", "payment API refused")
        span.set_status(Status(StatusCode.ERROR, "RuntimeError: gave up"))
    assert langfuse_visible(exporter.get_finished_spans()[0]) is None
    obs = shown(exporter.get_finished_spans()).trace("step").observation("step")
    assert (obs.level, obs.status_message) == ("ERROR", "payment API refused")


def test_run_metadata_becomes_top_level_trace_metadata(recorded: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = recorded
    tracer = provider.get_tracer("openinference.instrumentation.llama_index")
    meta = json.dumps({"tenant": "acme", "priority": 2, "flags": {"beta": True}})
    step_attrs = {"metadata": meta, "langfuse.trace.metadata.tenant": "x"}
    with (
        tracer.start_as_current_span("Workflow.run", attributes={"metadata": meta}),
        tracer.start_as_current_span("step", attributes=step_attrs),
    ):
        pass
    before = shown(exporter.get_finished_spans(), transform=False).trace("Workflow.run")
    assert before.metadata["attributes"]["metadata"] == meta  # today: a string, unfilterable
    trace = shown(exporter.get_finished_spans()).trace("Workflow.run")
    assert trace.metadata["priority"] == "2"
    assert json.loads(trace.metadata["flags"]) == {"beta": True}
    # the step's explicit langfuse.trace.metadata.tenant wins over its lifted value, and, being the
    # later trace event, over the root's lifted "acme"
    assert trace.metadata["tenant"] == "x"
    step_span = next(s for s in exporter.get_finished_spans() if s.name == "step")
    lifted = langfuse_visible(step_span)
    assert lifted is not None and lifted.attributes is not None
    assert lifted.attributes["langfuse.trace.metadata.tenant"] == "x"


def test_langfuse_sdk_quoted_metadata_is_decoded(recorded: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Langfuse SDK 5 JSON-encodes metadata values; the server stores what it gets."""
    provider, exporter = recorded
    sdk = provider.get_tracer("langfuse-sdk", "5.0.4")
    with sdk.start_as_current_span(
        "observed",
        attributes={
            "langfuse.trace.metadata.org": '"acme"',
            "langfuse.trace.metadata.count": "3",
            "langfuse.observation.metadata.stage": '"draft"',
        },
    ), provider.get_tracer("other").start_as_current_span(
        "child", attributes={"langfuse.trace.metadata.org": '"acme"', "langfuse.observation.metadata.raw": '"q"'}
    ):
        pass
    before = shown(exporter.get_finished_spans(), transform=False).trace("observed")
    assert before.metadata["org"] == '"acme"'  # the bug a Langfuse user sees today
    trace = shown(exporter.get_finished_spans()).trace("observed")
    assert trace.metadata["org"] == "acme"
    assert trace.metadata["count"] == "3"
    assert trace.observation("observed").metadata["stage"] == "draft"
    assert trace.observation("child").metadata["raw"] == '"q"'  # not SDK-written: left alone


def test_plain_span_is_not_copied(recorded: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = recorded
    with provider.get_tracer("app").start_as_current_span("plain", attributes={"a": 1}) as span:
        span.add_event("log", {"log.message": "hi"})
    assert langfuse_visible(exporter.get_finished_spans()[0]) is None
