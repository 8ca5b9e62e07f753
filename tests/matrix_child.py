"""The child process of the fault matrix: runs a small traced workflow and ends by one exit path.

usage: python tests/matrix_child.py EXIT_PATH SPANS_FILE FLUSHES_FILE

Telemetry comes from the environment (the parent points it at a test receiver). Every finished
span appends one byte to SPANS_FILE (crash-safe count of "spans created"); every flush appends a
JSON line with its duration and deadline to FLUSHES_FILE. For the signal paths the child prints
READY once step two is under way and waits to be signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

import otel_basic
from otel_basic import runtime

EXIT_PATH, SPANS_FILE, FLUSHES_FILE = sys.argv[1], sys.argv[2], sys.argv[3]
SPANS_PER_STEP = 20
PAYLOAD = "x" * 1024  # makes batches big enough for the 413 cell


class _Count(SpanProcessor):
    def __init__(self) -> None:
        self._fd = os.open(SPANS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def on_end(self, span: ReadableSpan) -> None:
        os.write(self._fd, b".")


def _record(kind: str, started: float, timeout: float | None, report: Any, settings: Any) -> None:
    line = {
        "kind": kind,
        "duration": time.monotonic() - started,
        "deadline": settings.flush_timeout if timeout is None else timeout,
        "summary": report.summary(),
    }
    with open(FLUSHES_FILE, "a") as f:
        f.write(json.dumps(line) + "\n")


_flush, _aflush, _shutdown = runtime.Telemetry.flush, runtime.Telemetry.aflush, runtime.Telemetry.shutdown


def _timed_flush(self: runtime.Telemetry, timeout: float | None = None) -> Any:
    started = time.monotonic()
    report = _flush(self, timeout)
    _record("flush", started, timeout, report, self.settings)
    return report


async def _timed_aflush(self: runtime.Telemetry, timeout: float | None = None) -> Any:
    started = time.monotonic()
    report = await _aflush(self, timeout)
    _record("aflush", started, timeout, report, self.settings)
    return report


def _timed_shutdown(self: runtime.Telemetry, timeout: float | None = None) -> Any:
    started = time.monotonic()
    report = _shutdown(self, timeout)
    if report.enabled:
        _record("shutdown", started, timeout, report, self.settings)
    return report


runtime.Telemetry.flush = _timed_flush  # type: ignore[method-assign]
runtime.Telemetry.shutdown = _timed_shutdown  # type: ignore[method-assign]
runtime.Telemetry.aflush = _timed_aflush  # type: ignore[method-assign]

telemetry = otel_basic.configure(install_signal_handlers=True)
assert telemetry.enabled, telemetry.settings.reason
assert telemetry.provider is not None
telemetry.provider.add_span_processor(_Count())

from workflows import Context, step  # noqa: E402
from workflows.events import Event, StartEvent, StopEvent  # noqa: E402

tracer = otel_basic.get_tracer("matrix")
step_two_started = asyncio.Event()


class Mid(Event):
    n: int


class Matrix(otel_basic.TracedWorkflow):
    @step
    @otel_basic.flush_after_step
    async def one(self, ctx: Context, ev: StartEvent) -> Mid:
        for i in range(SPANS_PER_STEP):
            with tracer.start_as_current_span(f"work-1-{i}", attributes={"payload": PAYLOAD}):
                pass
        return Mid(n=1)

    @step
    @otel_basic.flush_after_step
    async def two(self, ctx: Context, ev: Mid) -> StopEvent:
        for i in range(SPANS_PER_STEP):
            with tracer.start_as_current_span(f"work-2-{i}", attributes={"payload": PAYLOAD}):
                pass
        step_two_started.set()
        if EXIT_PATH == "exception":
            raise RuntimeError("step two failed")
        if EXIT_PATH in ("timeout", "cancel"):
            await asyncio.sleep(30)
        if EXIT_PATH in ("sigint", "sigterm", "sigkill"):
            await asyncio.sleep(0.3)  # finished work gets a round trip to leave, as in real life
            print("READY", flush=True)
            await asyncio.sleep(60)
        return StopEvent(result="done")


async def main() -> None:
    wf = Matrix(timeout=1.0 if EXIT_PATH == "timeout" else 120.0)
    if EXIT_PATH == "sys.exit":
        await wf.run()
        sys.exit(0)  # no flush of ours on this path: atexit must deliver
    if EXIT_PATH == "cancel":
        task = asyncio.ensure_future(otel_basic.run_with_flush(wf))
        await step_two_started.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return
    try:
        await otel_basic.run_with_flush(wf)
    except Exception as exc:  # the exception and timeout paths end here
        print(f"run failed: {type(exc).__name__}", flush=True)


asyncio.run(main())
