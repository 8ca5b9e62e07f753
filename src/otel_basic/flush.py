"""Flush with one deadline and a truthful report: provider first, then the Langfuse client.

``flush`` blocks the calling thread until every span created before the call is delivered or the
deadline passes; ``aflush`` does the same without blocking the event loop (an export worker
resolves an asyncio future). The Langfuse client's own flush (scores, media) has unbounded joins,
so it runs in one shared helper thread that callers wait on with their remaining time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from otel_basic.deadline import export_deadline
from otel_basic.processor import Counters, DeliveryProcessor


class SpoolStats(Protocol):
    def spooled_total(self) -> int: ...

    def pending(self) -> bool: ...


@dataclass(frozen=True)
class FlushReport:
    """What a flush achieved. Truthy only when nothing failed, was dropped or is left pending.

    ``failed`` spans were not accepted by the endpoint; ``spooled`` of them (and of queue overflow)
    are safe on disk for a later replay; ``dropped`` are gone; ``pending`` were still queued or in
    flight when the deadline came. ``error`` is a redacted reason (never a credential).
    """

    exported: int = 0
    failed: int = 0
    dropped: int = 0
    spooled: int = 0
    pending: int = 0
    duration: float = 0.0
    error: str | None = None
    enabled: bool = True

    def __bool__(self) -> bool:
        return self.failed == 0 and self.dropped == 0 and self.pending == 0 and self.error is None

    @property
    def ok(self) -> bool:
        return bool(self)

    def summary(self) -> str:
        if not self.enabled:
            return "telemetry disabled: nothing to flush"
        text = (
            f"exported={self.exported} failed={self.failed} dropped={self.dropped} "
            f"spooled={self.spooled} pending={self.pending} in {self.duration:.3f}s"
        )
        return text + (f" ({self.error})" if self.error else "")


DISABLED_REPORT = FlushReport(enabled=False)


class _SideFlush:
    """Runs a blocking callable in at most one helper thread at a time; callers share it."""

    def __init__(self, target: Callable[[], None]) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._done: threading.Event | None = None
        self.error: str | None = None

    def start(self) -> threading.Event:
        with self._lock:
            if self._done is not None and not self._done.is_set():
                return self._done
            done = self._done = threading.Event()

        def run() -> None:
            try:
                self._target()
                self.error = None
            except Exception as exc:
                self.error = f"Langfuse client flush failed: {type(exc).__name__}"
            finally:
                done.set()

        threading.Thread(target=run, name="otel-basic-langfuse-flush", daemon=True).start()
        return done


class Flusher:
    """Flushes one pipeline. ``spool`` and ``langfuse_flush`` are optional parts."""

    def __init__(
        self,
        processor: DeliveryProcessor,
        *,
        default_timeout: float,
        langfuse_flush: Callable[[], None] | None = None,
        spool: SpoolStats | None = None,
        replay: Callable[[float], object] | None = None,
    ) -> None:
        self.processor = processor
        self.default_timeout = default_timeout
        self._spool = spool
        self._replay = replay
        self._side = _SideFlush(langfuse_flush) if langfuse_flush is not None else None

    def _spooled(self) -> int:
        return self._spool.spooled_total() if self._spool is not None else 0

    def _report(
        self, before: Counters, spooled_before: int, target: int, started: float, side_error: str | None
    ) -> FlushReport:
        pending = self.processor.pending_after(target)  # now, so a batch is never failed AND pending
        after = self.processor.counters.copy()
        failed = after.failed - before.failed
        dropped = after.dropped - before.dropped
        if failed or dropped:
            error: str | None = after.last_error or "export failed"
        elif pending:
            error = "flush deadline reached with spans still pending"
        else:
            error = side_error
        return FlushReport(
            exported=after.exported - before.exported,
            failed=failed,
            dropped=dropped,
            spooled=self._spooled() - spooled_before,
            pending=pending,
            duration=time.monotonic() - started,
            error=error,
        )

    def _spool_waiting(self, end: float) -> bool:
        return (
            self._replay is not None
            and self._spool is not None
            and end - time.monotonic() > 0
            and self._spool.pending()
        )

    def _replay_spool(self, end: float) -> None:
        """Earlier failures wait in the spool: if the endpoint is back, a flush sends them too."""
        if self._replay is not None and self._spool_waiting(end):
            with export_deadline(end):
                self._replay(end)

    def _side_started(self, end: float) -> threading.Event | None:
        """Start the Langfuse client's flush (scores, media) if there is time left for it."""
        if self._side is None or end - time.monotonic() <= 0:
            return None
        return self._side.start()

    def _side_error(self, finished: bool) -> str | None:
        if not finished:
            return "Langfuse client flush did not finish before the deadline"
        return self._side.error if self._side is not None else None

    def flush(self, timeout: float | None = None) -> FlushReport:
        started = time.monotonic()
        end = started + (self.default_timeout if timeout is None else max(0.0, timeout))
        before, spooled_before = self.processor.counters.copy(), self._spooled()
        target, _ = self.processor.flush_until(end)
        self._replay_spool(end)
        side_error = None
        done = self._side_started(end)
        if done is not None:
            side_error = self._side_error(done.wait(max(0.0, end - time.monotonic())))
        return self._report(before, spooled_before, target, started, side_error)

    async def aflush(self, timeout: float | None = None) -> FlushReport:
        started = time.monotonic()
        end = started + (self.default_timeout if timeout is None else max(0.0, timeout))
        before, spooled_before = self.processor.counters.copy(), self._spooled()
        loop = asyncio.get_running_loop()
        target, future = self.processor.flush_future(end, loop)
        try:
            await asyncio.wait_for(asyncio.shield(future), max(0.0, end - time.monotonic()))
        except TimeoutError:
            pass
        finally:
            self.processor.forget_future(future)
        if self._spool_waiting(end):  # rare: only after failures; file and network I/O off the loop
            await asyncio.to_thread(self._replay_spool, end)
        side_error = None
        done = self._side_started(end)
        if done is not None:
            finished = done.is_set() or await _wait_event(done, max(0.0, end - time.monotonic()), loop)
            side_error = self._side_error(finished)
        return self._report(before, spooled_before, target, started, side_error)


async def _wait_event(event: threading.Event, timeout: float, loop: asyncio.AbstractEventLoop) -> bool:
    """Wait for a threading.Event from async code without a thread per waiter (polls cheaply)."""
    end = loop.time() + timeout
    delay = 0.001
    while not event.is_set():
        left = end - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, 0.05)
    return True
