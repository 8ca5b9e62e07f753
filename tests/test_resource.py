"""The provider's resource hashes once and still equals (and encodes as) the plain resource."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource

from otel_basic.pipeline import build_pipeline
from otel_basic.settings import load_settings


def test_resource_hash_is_computed_once_and_encoding_is_unchanged() -> None:
    settings = load_settings(
        {
            "LANGFUSE_PUBLIC_KEY": "pk-lf-test",
            "LANGFUSE_SECRET_KEY": "sk-lf-test",
            "LANGFUSE_BASE_URL": "http://127.0.0.1:9",
            "OTEL_RESOURCE_ATTRIBUTES": "team=search,region=eu",
            "OTEL_BASIC_SPOOL_DIR": "off",
        }
    )
    pipeline = build_pipeline(settings)
    try:
        resource = pipeline.provider.resource
        plain = Resource(dict(resource.attributes), resource.schema_url)
        calls = 0
        original = Resource.__hash__

        def counting(self: Resource) -> int:
            nonlocal calls
            calls += 1
            return original(self)

        Resource.__hash__ = counting  # type: ignore[method-assign]
        try:
            for _ in range(50):
                hash(resource)
        finally:
            Resource.__hash__ = original  # type: ignore[method-assign]
        assert calls == 0  # never recomputed
        assert resource == plain and hash(resource) == hash(plain)
        assert resource.attributes["team"] == "search"

        tracer = pipeline.provider.get_tracer("t")
        span = tracer.start_span("s")
        span.end()
        request = encode_spans([span])  # type: ignore[list-item]
        assert len(request.resource_spans) == 1
        encoded = {kv.key for kv in request.resource_spans[0].resource.attributes}
        assert encoded == set(plain.attributes)
    finally:
        pipeline.provider.shutdown()
