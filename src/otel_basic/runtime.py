"""The one global object: configure -> use -> flush -> shutdown, and ``reset`` for tests.

``Telemetry`` owns the provider, the processor, the Langfuse client, the instrumentor and the log
bridge of one configuration. A disabled Telemetry (nothing configured, ``OTEL_SDK_DISABLED``,
``LANGFUSE_TRACING_ENABLED=false``, or a configuration error) has all of them None and flushes
return at once.

Global tracer provider: if the host has not set one, ours becomes the global, so
``opentelemetry.trace.get_tracer()`` and Langfuse's ``@observe`` land in our pipeline. If the host
already set an SDK provider, we leave it alone (never "Overriding of current TracerProvider"),
instrument LlamaIndex on our own provider, and log that once: the host's own spans keep going
where the host sends them, and :func:`otel_basic.get_tracer` gives a tracer on ours.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from otel_basic import (
    active,
    fast_io,
    genai,
    global_provider,
    instrumentation,
    lifecycle,
    log_bridge,
    sdk_env,
    step_flush,
    workflows,
)
from otel_basic import langfuse as _langfuse
from otel_basic.flush import DISABLED_REPORT, Flusher, FlushReport
from otel_basic.ledger import Ledger
from otel_basic.pipeline import Pipeline, build_pipeline
from otel_basic.processor import DeliveryProcessor
from otel_basic.score_sender import ScoreSender
from otel_basic.settings import ConfigError, Settings, load_settings

_log = logging.getLogger("otel_basic")


class Telemetry:
    """One configured (or disabled) telemetry pipeline."""

    def __init__(self, settings: Settings, *, error: str | None = None) -> None:
        self.settings = settings
        self.error = error
        self.pipeline: Pipeline | None = None
        self.langfuse: Any | None = None
        self.instrumentor: Any | None = None
        self._log_handler: log_bridge.SpanEventHandler | None = None
        self._flusher: Flusher | None = None
        self._shutdown = False
        self._superseded = False  # replaced by configure(): the new pipeline reports (it has the ledger)

    @property
    def flush_timeout(self) -> float:
        return self.settings.flush_timeout

    def __repr__(self) -> str:
        return f"Telemetry(route={self.settings.route!r}, reason={self.settings.reason!r})"

    @property
    def enabled(self) -> bool:
        return self.pipeline is not None and not self._shutdown

    @property
    def provider(self) -> TracerProvider | None:
        return self.pipeline.provider if self.pipeline else None

    @property
    def scores(self) -> ScoreSender | None:
        return self.pipeline.scores if self.pipeline else None

    @property
    def processor(self) -> DeliveryProcessor | None:
        return self.pipeline.processor if self.pipeline else None

    def start(self, ledger: Ledger | None = None) -> None:
        """``ledger``: the previous Telemetry's, so what its threads still settle is reported (see :class:`Ledger`)."""
        settings = self.settings
        if not settings.enabled:
            return
        self.pipeline = build_pipeline(settings, ledger)
        provider = self.pipeline.provider
        if not global_provider.install_global(provider):
            _log.info("otel-basic: the host set its own tracer provider; LlamaIndex spans use otel-basic's")
        self.langfuse = _langfuse.create_client(settings, provider)
        self.instrumentor = instrumentation.instrument(provider)
        workflows.install_io_handler()  # clean run/step input and output (before OpenInference ends spans)
        fast_io.install()  # skip OpenInference's JSON of the inputs the IO handler replaces
        genai.install()  # one right generation per LLM call
        step_flush.install()  # after OpenInference's handler: every workflow's steps flush as they end
        if settings.log_level is not None:
            self._log_handler = log_bridge.install(
                provider.get_tracer("otel_basic.logging"), settings.log_level, trace_level=settings.log_trace_level
            )
        self._start_replay()
        self._flusher = Flusher(
            self.pipeline.processor,
            self.pipeline.road,
            self.pipeline.ledger,
            default_timeout=settings.flush_timeout,
            langfuse_flush=self.langfuse.flush if self.langfuse is not None else None,
            scores=self.pipeline.scores,
        )

    def _start_replay(self) -> None:
        """Send what earlier runs left in the spool, in the background, once per start."""
        pipeline = self.pipeline
        if pipeline is None or pipeline.spool is None:
            return
        road, ledger, spool = pipeline.road, pipeline.ledger, pipeline.spool

        def replay() -> None:
            try:
                spool.recover_claims()
                if spool.pending():
                    tally = road.replay(deadline=time.monotonic() + 60.0, record=ledger.record)
                    if tally.delivered:
                        _log.info("otel-basic: replayed %d spooled spans", tally.delivered)
            except Exception:
                _log.debug("spool replay at start failed", exc_info=True)

        threading.Thread(target=replay, name="otel-basic-replay", daemon=True).start()

    # --- use -------------------------------------------------------------------------------

    def tracer(self, name: str, version: str | None = None) -> Tracer:
        provider = self.provider
        if provider is None:
            return trace.NoOpTracer()
        return provider.get_tracer(name, version)

    def flush(self, timeout: float | None = None) -> FlushReport:
        if self._flusher is None:
            return DISABLED_REPORT
        if self._shutdown:
            return DISABLED_REPORT if self._superseded else self._flusher.after_shutdown()
        started = time.monotonic()
        try:
            return self._flusher.flush(timeout)
        except Exception as exc:  # a flush never raises: the report carries the failure
            return _failed_report(exc, started)

    def _final_flush(self, timeout: float | None, new_period: bool) -> FlushReport:
        """Flush, then hand whatever is still in memory to the road's spool entrance; report both."""
        if self._flusher is None:
            return DISABLED_REPORT
        started = time.monotonic()
        try:
            return self._flusher.flush(timeout, final=True, new_period=new_period)
        except Exception as exc:  # a flush never raises: the report carries the failure
            return _failed_report(exc, started)

    async def aflush(self, timeout: float | None = None) -> FlushReport:
        if self._flusher is None:
            return DISABLED_REPORT
        if self._shutdown:
            return DISABLED_REPORT if self._superseded else self._flusher.after_shutdown()
        started = time.monotonic()
        try:
            return await self._flusher.aflush(timeout)
        except Exception as exc:  # a flush never raises: the report carries the failure
            return _failed_report(exc, started)

    def kick(self, *, at_once: bool = False) -> None:
        """Start exporting what is queued, without waiting (per-step flush, background mode); after the
        linger that lets the steps ending meanwhile share the request, or ``at_once`` (a run ended: now, unless
        an export started less than a linger ago; see :meth:`DeliveryProcessor.kick`)."""
        if self.pipeline is not None and not self._shutdown:
            self.pipeline.processor.kick(at_once=at_once)

    # --- end -------------------------------------------------------------------------------

    def shutdown(self, timeout: float | None = None) -> FlushReport:
        """Flush within ``timeout``, then release everything; later calls are no-ops."""
        return self._stop(timeout, new_period=True)

    def _replaced(self) -> None:
        """``configure()`` builds a new pipeline: stop this one, and leave what its final flush found to the
        new one's first report (it carries the ledger on): nobody reads this final report."""
        self._superseded = True
        self._stop(None, new_period=False)

    def _stop(self, timeout: float | None, *, new_period: bool) -> FlushReport:
        if self._shutdown or self.pipeline is None:
            self._shutdown = True
            return DISABLED_REPORT
        report = self._final_flush(timeout, new_period)
        self._shutdown = True
        if self._log_handler is not None:
            log_bridge.uninstall(self._log_handler)
        genai.uninstall()
        step_flush.uninstall()
        fast_io.uninstall()
        instrumentation.uninstrument()
        _langfuse.release_client(self.settings)
        global_provider.release_global(self.pipeline.provider)
        try:
            self.pipeline.provider.shutdown()
        except Exception:
            _log.debug("provider shutdown failed", exc_info=True)
        if self.pipeline.scores is not None:
            self.pipeline.scores.close()
        return report


def _failed_report(exc: BaseException, started: float) -> FlushReport:
    return FlushReport(error=f"flush failed: {type(exc).__name__}", duration=time.monotonic() - started)


# --- the global ----------------------------------------------------------------------------

_lock = threading.RLock()
_current: Telemetry | None = None
_current_args: dict[str, Any] | None = None


def configure(**overrides: Any) -> Telemetry:
    """Configure from the environment plus ``overrides``; idempotent while both stay the same.

    Calling again with different arguments, or after the environment changed, shuts the previous
    pipeline down (flushing it) and builds a new one. Never raises for bad configuration: it logs
    one warning naming the variable and returns a disabled Telemetry, so the host keeps running
    untraced.
    """
    global _current, _current_args
    with _lock:
        sdk_env.sanitize()  # the SDK's own readers of OTEL_BSP_* (Langfuse's processor) see valid values
        try:
            settings: Settings | None = load_settings(**overrides)
            error = None
        except ConfigError as exc:
            settings, error = None, str(exc)
        if (
            _current is not None
            and not _current._shutdown
            and _current_args == overrides
            and (_current.settings == settings or (settings is None and _current.error == error))
        ):
            return _current  # same arguments, same environment: the same pipeline
        ledger = _current.pipeline.ledger if _current is not None and _current.pipeline is not None else None
        if _current is not None:
            _current._replaced()
        if settings is None:
            _log.warning("otel-basic: tracing disabled: %s", error)
            telemetry = Telemetry(Settings(route="disabled", reason=str(error)), error=error)
        else:
            telemetry = Telemetry(settings)
            try:
                telemetry.start(ledger)
            except Exception as exc:  # never crash the host at import/configure time
                reason = type(exc).__name__
                _log.warning("otel-basic: tracing disabled: could not start telemetry (%s)", reason)
                _log.debug("configure failed", exc_info=True)
                telemetry.shutdown()
                telemetry = Telemetry(Settings(route="disabled", reason=reason), error=reason)
        _current, _current_args = telemetry, dict(overrides)
        active.activate(telemetry)
        if telemetry.enabled:
            lifecycle.install(current, telemetry.settings.install_signal_handlers)
        return telemetry


def current() -> Telemetry | None:
    return _current


def get() -> Telemetry:
    """The current Telemetry, configuring from the environment on first use."""
    return _current if _current is not None else configure()


def shutdown(timeout: float | None = None) -> FlushReport:
    with _lock:
        if _current is None:
            return DISABLED_REPORT
        return _current.shutdown(timeout)


def reset() -> None:
    """For tests: shut down and forget the current Telemetry (the next call configures anew)."""
    global _current, _current_args
    with _lock:
        if _current is not None:
            _current.shutdown(timeout=2.0)
        _current, _current_args = None, None
        active.activate(None)
