"""Builds one pipeline from Settings: resource, the road (masker, limiter, transport, spool), the
ledger, the batch processor and the provider. What happens to a span after it ends is
:mod:`otel_basic.road`'s; this module only wires the parts."""

from __future__ import annotations

# Imported before any TracerProvider exists, on purpose: the SDK's provider registers an at-fork hook
# that, in the child, submits to a ThreadPoolExecutor; concurrent.futures re-initialises its global
# lock in the child through its own at-fork hook, which must therefore be registered first (hooks run
# in registration order). The SDK gets that order by accident from Resource.create(); we build the
# resource from Settings, so we import it here, or every fork() child would hang.
import concurrent.futures.thread  # noqa: F401
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.resources import TELEMETRY_SDK_LANGUAGE, TELEMETRY_SDK_NAME, TELEMETRY_SDK_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.version import __version__ as _sdk_version

from otel_basic.context_attributes import ContextAttributes
from otel_basic.ledger import Ledger
from otel_basic.limits import Limiter
from otel_basic.masking import DEFAULT_ALLOW_KEYS, Masker, derive_salt
from otel_basic.processor import DeliveryProcessor
from otel_basic.road import Prepare, Road, Transport
from otel_basic.score_sender import ScoreSender
from otel_basic.settings import Settings
from otel_basic.spool import Spool, destination_key
from otel_basic.transport_options import httpx_client_options, proxy_configured
from otel_basic.transports.console import ConsoleTransport
from otel_basic.transports.file import FileTransport
from otel_basic.transports.otlp_http import HttpTransport


@dataclass
class Pipeline:
    provider: TracerProvider
    processor: DeliveryProcessor
    road: Road
    ledger: Ledger
    scores: ScoreSender | None = None

    @property
    def spool(self) -> Spool | None:
        return self.road.spool


class FixedResource(Resource):
    """A resource that hashes once: the SDK's OTLP encoder hashes every span's resource (a sorted
    JSON dump of its attributes, ~5 µs) to group spans, and ours never changes."""

    def __init__(self, attributes: Mapping[str, Any], schema_url: str | None = None) -> None:
        super().__init__(dict(attributes), schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def build_resource(settings: Settings) -> Resource:
    attrs: dict[str, str] = dict(settings.resource_attributes)
    attrs["service.name"] = settings.service_name
    if settings.environment:
        attrs["deployment.environment.name"] = settings.environment
        attrs["langfuse.environment"] = settings.environment
    if settings.release:
        attrs["service.version"] = settings.release
        attrs["langfuse.release"] = settings.release
    # Not Resource.create: it would read OTEL_RESOURCE_ATTRIBUTES again (Settings already did, once).
    sdk = {TELEMETRY_SDK_LANGUAGE: "python", TELEMETRY_SDK_NAME: "opentelemetry", TELEMETRY_SDK_VERSION: _sdk_version}
    return Resource({**sdk, **attrs})


def build_transport(settings: Settings, *, timeout: float | None = None) -> Transport:
    """The transport that talks to the destination; ``timeout`` bounds one request."""
    seconds = settings.export_timeout if timeout is None else timeout
    if settings.route == "file":
        assert settings.file_path is not None
        return FileTransport(settings.file_path)
    if settings.route == "console":  # OTEL_TRACES_EXPORTER=console (spec): print each request
        return ConsoleTransport()
    if settings.protocol == "grpc":
        # grpcio is the optional [grpc] extra (settings checks it is installed): import on use.
        from otel_basic.transport_options import grpc_channel
        from otel_basic.transports.otlp_grpc import GrpcTransport

        return GrpcTransport(
            settings.endpoint,
            headers=settings.headers,
            channel=lambda: grpc_channel(settings),
            compression=settings.compression,
            timeout=seconds,
        )
    return HttpTransport(
        settings.endpoint,
        headers=settings.headers,
        compression=settings.compression,
        timeout=seconds,
        encoding="json" if settings.protocol == "http/json" else "protobuf",
        client_options=httpx_client_options(settings),
        fast=not proxy_configured(settings),
    )


def build_spool(settings: Settings) -> Spool | None:
    if settings.spool_dir is None or settings.route in ("file", "console"):
        return None
    key = destination_key(settings.endpoint, settings.langfuse_public_key)
    return Spool(settings.spool_dir, key, max_bytes=settings.spool_max_bytes)


def build_masker(settings: Settings) -> Masker | None:
    if settings.mask == "off":
        return None
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


def build_prepare(settings: Settings) -> Prepare:
    """The road's first stage alone: what any span looks like when it leaves (the demo shows it)."""
    return Prepare(build_masker(settings), Limiter(max_attribute_chars=settings.max_attribute_chars))


def build_road(settings: Settings, *, timeout: float | None = None, spool: bool = True) -> Road:
    """The road for ``settings``; ``spool=False`` for a probe that must leave no trace on disk."""
    transport = build_transport(settings, timeout=timeout)
    return Road(build_prepare(settings), transport, build_spool(settings) if spool else None)


def build_pipeline(settings: Settings, ledger: Ledger | None = None) -> Pipeline:
    """``ledger``: the previous pipeline's, when reconfiguring (see :class:`Ledger`)."""
    road = build_road(settings)
    resource = build_resource(settings)
    if road.prepare.masker is not None:  # what we add to every span's resource is masked like the rest
        resource = Resource(road.prepare.masker.mask_attributes(resource.attributes), resource.schema_url)
    resource = FixedResource(resource.attributes, resource.schema_url)
    ledger = ledger or Ledger()
    scores = ScoreSender.from_settings(settings)
    processor = DeliveryProcessor(
        road,
        ledger,
        schedule_delay=settings.schedule_delay,
        max_queue_size=settings.max_queue_size,
        max_export_batch_size=settings.max_export_batch_size,
        export_timeout=settings.batch_export_timeout,  # OTEL_BSP_EXPORT_TIMEOUT: one batch export
        overflow_policy=settings.overflow,
        max_force_flush=settings.flush_timeout,
        workers=settings.export_workers,
        idle_interval=settings.spool_retry_interval,
        linger=settings.export_linger,
        loop_export=settings.loop_export,
        after_delivery=functools.partial(scores.send, retry=False) if scores is not None else None,
    )
    provider = TracerProvider(
        resource=resource,
        shutdown_on_exit=False,
        sampler=settings.sampler(),
        span_limits=settings.span_limits(),
    )
    provider.add_span_processor(ContextAttributes())  # the run's session/user/tags on every span
    provider.add_span_processor(processor)
    return Pipeline(provider, processor, road, ledger, scores)
