"""The global forwarding provider behaves like the SDK's for the common idioms."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_basic
from otel_basic import global_provider
from otel_basic.testing import LangfuseReceiver


def test_add_span_processor_and_force_flush_on_the_global_provider(langfuse_env: LangfuseReceiver) -> None:
    tel = otel_basic.configure()
    assert tel.enabled
    provider = trace.get_tracer_provider()
    assert provider is global_provider.GLOBAL
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))  # type: ignore[attr-defined]
    with trace.get_tracer("host").start_as_current_span("host-span"):
        pass
    assert provider.force_flush(5000) is True  # type: ignore[attr-defined]
    assert [s.name for s in memory.get_finished_spans()] == ["host-span"]
    assert "host-span" in langfuse_env.span_names()  # and the pipeline still got it
    assert provider.resource.attributes["service.name"]  # type: ignore[attr-defined]

    # a reconfigure builds a new pipeline: the host's processor follows it and was not shut down
    otel_basic.reset()
    assert otel_basic.configure(service_name="second").enabled
    with trace.get_tracer("host").start_as_current_span("after-reconfigure"):
        pass
    assert provider.force_flush(5000) is True  # type: ignore[attr-defined]
    assert [s.name for s in memory.get_finished_spans()] == ["host-span", "after-reconfigure"]
    provider.shutdown()  # type: ignore[attr-defined]
