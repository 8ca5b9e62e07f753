"""Builds the export pipeline from Settings: resource, exporter chain, processor, provider.

Exporter chain, outermost first (each a small wrapper with one job)::

    masking -> payload limits -> spool on failure -> split on 413 -> OTLP (http | grpc) | file

Masking comes first so nothing downstream (the spool on disk included) ever sees raw PII.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_basic.exporters.file import OtlpJsonFileExporter
from otel_basic.exporters.limits import LimitingExporter
from otel_basic.exporters.otlp_grpc import OtlpGrpcExporter
from otel_basic.exporters.otlp_http import OtlpHttpExporter
from otel_basic.exporters.split import SplittingExporter
from otel_basic.exporters.spooling import SpoolingExporter, encode_request
from otel_basic.masking import DEFAULT_ALLOW_KEYS, Masker, MaskingExporter, derive_salt
from otel_basic.processor import DeliveryProcessor
from otel_basic.settings import Settings
from otel_basic.spool import Sender, Spool, destination_key


@dataclass
class Pipeline:
    provider: TracerProvider
    processor: DeliveryProcessor
    exporter: SpanExporter
    transport: SpanExporter
    spool: Spool | None = None
    replay_sender: Sender | None = None


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


def build_spool(settings: Settings) -> Spool | None:
    if settings.spool_dir is None or settings.route == "file":
        return None
    key = destination_key(settings.endpoint, settings.langfuse_public_key)
    return Spool(settings.spool_dir, key, max_bytes=settings.spool_max_bytes)


def replay_sender(transport: SpanExporter) -> Sender:
    """Adapts a transport's ``send_request`` to the spool's replay interface."""

    def send(request: bytes) -> tuple[bool, str | None, bool]:
        ok = transport.send_request(request) == SpanExportResult.SUCCESS  # type: ignore[attr-defined]
        failure = getattr(transport, "last_failure", None)
        message = failure.message if failure is not None else None
        return ok, message, bool(failure is not None and failure.kind != "transient")

    return send


def build_masker(settings: Settings) -> Masker:
    allow = tuple(DEFAULT_ALLOW_KEYS) + tuple(settings.mask_allow_keys)
    return Masker(
        level=settings.mask,
        extra_patterns=dict(settings.mask_patterns),
        hook=settings.mask_hook,
        allow_keys=allow,
        # Stable across processes/replicas of one deployment; see otel_basic.masking.masker (Salt).
        salt=settings.mask_salt
        or derive_salt(settings.langfuse_public_key or settings.endpoint, settings.service_name),
        max_chars=settings.max_attribute_chars,
    )


def build_exporter(settings: Settings, transport: SpanExporter, spool: Spool | None) -> SpanExporter:
    """Wrap the transport in the chain described in the module docstring."""
    exporter = transport
    if spool is not None:
        exporter = SpoolingExporter(exporter, spool, replay_sender(transport))
        exporter = SplittingExporter(
            exporter, give_up=lambda spans, why: spool.reject(encode_request(spans), len(spans), why)
        )
    exporter = LimitingExporter(exporter, max_attribute_chars=settings.max_attribute_chars)
    if settings.mask != "off":
        exporter = MaskingExporter(exporter, build_masker(settings))
    return exporter


def build_pipeline(settings: Settings) -> Pipeline:
    transport = build_transport(settings)
    spool = build_spool(settings)
    exporter = build_exporter(settings, transport, spool)
    spooler = _find(exporter, SpoolingExporter)
    splitter = _find(exporter, SplittingExporter)
    processor = DeliveryProcessor(
        exporter,
        schedule_delay=settings.schedule_delay,
        max_queue_size=settings.max_queue_size,
        max_export_batch_size=settings.max_export_batch_size,
        export_timeout=settings.export_timeout,
        overflow=spooler.keep if spooler is not None else None,
        overflow_policy=settings.overflow,
        max_force_flush=settings.flush_timeout,
        workers=settings.export_workers,
        idle=spooler.retry_spool if spooler is not None else None,
        idle_interval=settings.spool_retry_interval,
        failure_probe=lambda: getattr(transport, "last_failure", None),
        delivered_probe=(lambda: splitter.last_delivered) if splitter is not None else None,
    )
    provider = TracerProvider(resource=build_resource(settings), shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return Pipeline(
        provider,
        processor,
        exporter,
        transport,
        spool,
        spooler.sender if spooler is not None else None,
    )


T = TypeVar("T")


def _find(exporter: SpanExporter, kind: type[T]) -> T | None:
    """The first wrapper of ``kind`` in the chain."""
    current: object = exporter
    while current is not None:
        if isinstance(current, kind):
            return current
        current = getattr(current, "inner", None)
    return None
