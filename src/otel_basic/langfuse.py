"""The Langfuse client, bound to OUR provider with its own export turned off.

``Langfuse(tracer_provider=ours)`` adds a LangfuseSpanProcessor to our provider; left alone it
would POST every span a second time. ``should_export_span=lambda s: False`` keeps that processor
for what it is good at (stamping propagated attributes, scores, ``@observe``) while our pipeline
stays the only exporter. ``langfuse.flush()`` still flushes our spans because it calls
``provider.force_flush()``. (Not ``tracing_enabled=False``: then flush never touches the provider.)

Langfuse keeps one client per public key and silently ignores later ones, so ours must be created
before anything calls ``get_client()``/``@observe``; we warn when we find we were too late.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from otel_basic.settings import Settings

_log = logging.getLogger("otel_basic")


def _never_export(span: ReadableSpan) -> bool:
    return False


def create_client(settings: Settings, provider: TracerProvider) -> Any | None:
    """A Langfuse client on ``provider``, or None when no Langfuse keys are configured."""
    if not (settings.langfuse_public_key and settings.langfuse_secret_key):
        return None
    try:
        from langfuse import Langfuse
    except ImportError:  # pragma: no cover - langfuse is a dependency
        return None
    kwargs: dict[str, Any] = {
        "public_key": settings.langfuse_public_key,
        "secret_key": settings.langfuse_secret_key,
        "base_url": settings.langfuse_base_url,
        "tracer_provider": provider,
        "should_export_span": _never_export,
        "timeout": max(1, int(settings.export_timeout)),
    }
    if settings.environment:
        kwargs["environment"] = settings.environment
    if settings.release:
        kwargs["release"] = settings.release
    client = Langfuse(**kwargs)
    bound = getattr(getattr(client, "_resources", None), "tracer_provider", provider)
    if bound is not provider:
        _log.warning(
            "otel-basic: a Langfuse client for this public key existed before otel_basic.configure(); "
            "langfuse.flush() will not flush otel-basic's spans. Import basic.observability (or call "
            "otel_basic.configure()) before get_client()/@observe."
        )
    return client


def release_client(settings: Settings) -> None:
    """Forget Langfuse's per-key singleton so a later configure() can bind a new provider."""
    if not settings.langfuse_public_key:
        return
    try:
        from langfuse._client.resource_manager import LangfuseResourceManager
    except ImportError:  # pragma: no cover
        return
    with LangfuseResourceManager._lock:
        instance = LangfuseResourceManager._instances.pop(settings.langfuse_public_key, None)
    if instance is not None:
        try:
            instance.shutdown()
        except Exception:
            _log.debug("Langfuse client shutdown failed", exc_info=True)
