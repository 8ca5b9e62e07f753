"""otel-basic: LlamaIndex Workflow traces that arrive in Langfuse, every time.

Public API (nothing else is public)::

    telemetry = otel_basic.configure()          # from OTEL_* / LANGFUSE_* (idempotent)
    report = otel_basic.flush(timeout=5)        # FlushReport: truthy when everything arrived
    report = await otel_basic.aflush(timeout=5) # same, without blocking the event loop
    otel_basic.shutdown()

Importing this package has no side effects; ``basic.observability`` configures on import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Tracer

# First, before anything imports the OpenTelemetry SDK (which crashes on one bad variable).
from otel_basic import sdk_env  # noqa: F401
from otel_basic.flush import DISABLED_REPORT, FlushReport
from otel_basic.runtime import Telemetry, configure, current, reset
from otel_basic.runtime import shutdown as _shutdown
from otel_basic.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:  # loaded lazily at run time (see __getattr__), typed for checkers
    from otel_basic.scores import score_current_trace
    from otel_basic.workflows import (
        TracedWorkflow,
        flush_after_step,
        run_with_flush,
        trace_attributes,
        under_current_span,
    )

__all__ = [
    "ConfigError",
    "FlushReport",
    "Settings",
    "Telemetry",
    "TracedWorkflow",
    "aflush",
    "configure",
    "current",
    "flush",
    "flush_after_step",
    "get_tracer",
    "load_settings",
    "reset",
    "run_with_flush",
    "score_current_trace",
    "shutdown",
    "trace_attributes",
    "under_current_span",
]


def flush(timeout: float | None = None) -> FlushReport:
    """Deliver every span created so far, within ``timeout`` seconds (default
    ``OTEL_BASIC_FLUSH_TIMEOUT``, 5 s). Never raises; a no-op when telemetry is not configured."""
    telemetry = current()
    if telemetry is None:
        return DISABLED_REPORT
    report = telemetry.flush(timeout)
    if not report.enabled and (newer := current()) is not None and newer is not telemetry:
        return newer.flush(timeout)  # a configure() in another thread replaced it meanwhile
    return report


async def aflush(timeout: float | None = None) -> FlushReport:
    """:func:`flush` for async code: waits without blocking the event loop; concurrent callers
    share the export in flight."""
    telemetry = current()
    if telemetry is None:
        return DISABLED_REPORT
    report = await telemetry.aflush(timeout)
    if not report.enabled and (newer := current()) is not None and newer is not telemetry:
        return await newer.aflush(timeout)  # a configure() in another thread replaced it meanwhile
    return report


def shutdown(timeout: float | None = None) -> FlushReport:
    """Flush within ``timeout``, then stop exporting. Safe to call more than once."""
    return _shutdown(timeout)


def get_tracer(name: str, version: str | None = None) -> Tracer:
    """A tracer on otel-basic's provider (the global provider's when otel-basic is not enabled)."""
    telemetry = current()
    if telemetry is None or not telemetry.enabled:
        from opentelemetry import trace

        return trace.get_tracer(name, version)  # the host's global provider, if it set one
    return telemetry.tracer(name, version)


_LAZY = {"TracedWorkflow", "flush_after_step", "run_with_flush", "trace_attributes", "under_current_span"}


def __getattr__(name: str) -> Any:
    # The workflow helpers import llama-index-workflows: load them on first use only, so that
    # importing otel_basic (e.g. its pytest plugin) stays light.
    if name == "score_current_trace":
        from otel_basic import scores

        return scores.score_current_trace
    if name in _LAZY:
        from otel_basic import workflows

        return getattr(workflows, name)
    raise AttributeError(f"module 'otel_basic' has no attribute {name!r}")
