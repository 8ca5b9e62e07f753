"""The seed's observability API, kept: importing this module configures telemetry from the
environment (``OTEL_*`` / ``LANGFUSE_*``); with nothing configured everything here is a no-op.

Troubleshooting attributes (None when unconfigured): ``_tracer_provider`` (our TracerProvider),
``_langfuse_client`` (the Langfuse client bound to it, exporting nothing itself) and
``_langfuse_handler`` (the OpenInference LlamaIndex instrumentor).
"""

from __future__ import annotations

import logging
from typing import Any

import otel_basic
from otel_basic import FlushReport

_log = logging.getLogger("basic.observability")

_telemetry = otel_basic.configure()
_tracer_provider: Any = _telemetry.provider
_langfuse_client: Any = _telemetry.langfuse
_langfuse_handler: Any = _telemetry.instrumentor


def flush_langfuse(timeout: float | None = None) -> FlushReport:
    """Block until every span so far is delivered or the deadline passes (default
    ``OTEL_BASIC_FLUSH_TIMEOUT``, 5 s). Safe to call any number of times; never raises; a failure
    is one warning and a falsy report."""
    report = otel_basic.flush(timeout)
    if report.enabled and not report:
        _log.warning("otel-basic: flush_langfuse: %s", report.summary())
    return report


async def run_workflow_with_flush(workflow: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``workflow`` with the given arguments, flush in ``finally``, return its result and
    re-raise its error unchanged."""
    return await otel_basic.run_with_flush(workflow, *args, **kwargs)


__all__ = ["flush_langfuse", "run_workflow_with_flush"]
