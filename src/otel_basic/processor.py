"""The batch span processor: two export workers, counted outcomes, flushes with real deadlines.

Why not the SDK's ``BatchSpanProcessor``: its ``force_flush`` ignores its timeout, exports in the
caller's thread and returns True even when every export failed; a full queue drops the oldest span
with one warning per 20 s and no count; it cannot be asked to "start exporting now" without
blocking. This one keeps the same batching idea with what "nothing lost, nothing hangs" needs:

* every span gets a sequence number; a flush waits until all spans enqueued before it are *done*
  (delivered, or failed and handed on), or until its deadline, and reports which;
* :meth:`kick` wakes the workers without waiting (per-step flush); concurrent flushes share the
  export stream: at most ``workers`` (2) exports are in flight, so a step that ends while one
  export waits for a slow endpoint is sent at once by the other, not a round trip later;
* a full queue hands the oldest batch to ``overflow`` (the spool) or, by choice, blocks the caller
  for a bounded time or drops; every such span is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_basic import deadline as _deadline
from otel_basic.exporters.base import ExportFailure

_log = logging.getLogger("otel_basic")

Overflow = Callable[[Sequence[ReadableSpan], str], bool]
"""Receives spans that cannot stay in memory with a reason; returns True when it kept them."""


@dataclass
class Counters:
    """Running totals since the processor started. Reports are differences of two snapshots."""

    enqueued: int = 0
    exported: int = 0
    failed: int = 0
    dropped: int = 0
    spilled: int = 0
    export_requests: int = 0
    last_error: str | None = None

    def copy(self) -> Counters:
        return Counters(
            self.enqueued,
            self.exported,
            self.failed,
            self.dropped,
            self.spilled,
            self.export_requests,
            self.last_error,
        )


@dataclass
class _Waiter:
    target: int
    deadline: float | None
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[None] | None = None
    done: bool = False


@dataclass
class _State:
    queue: deque[tuple[int, ReadableSpan]] = field(default_factory=deque)
    inflight: dict[int, list[ReadableSpan]] = field(default_factory=dict)  # first seq -> batch
    waiters: list[_Waiter] = field(default_factory=list)
    kicked: bool = False
    shutdown: bool = False


class DeliveryProcessor(SpanProcessor):
    def __init__(
        self,
        exporter: SpanExporter,
        *,
        schedule_delay: float = 1.0,
        max_queue_size: int = 65536,
        max_export_batch_size: int = 512,
        export_timeout: float = 10.0,
        overflow: Overflow | None = None,
        overflow_policy: str = "spool",
        block_timeout: float = 1.0,
        max_force_flush: float = 5.0,
        workers: int = 2,
        idle: Callable[[], None] | None = None,
        idle_interval: float = 5.0,
        failure_probe: Callable[[], ExportFailure | None] | None = None,
        delivered_probe: Callable[[], int] | None = None,
    ) -> None:
        self.exporter = exporter
        self._delay = schedule_delay
        self._max_queue = max_queue_size
        self._batch = max_export_batch_size
        self._export_timeout = export_timeout
        self._overflow = overflow
        self._policy = overflow_policy
        self._block_timeout = block_timeout
        self._max_force_flush = max_force_flush
        self._failure_probe = failure_probe or (lambda: getattr(exporter, "last_failure", None))
        self._delivered_probe = delivered_probe
        self._cond = threading.Condition()
        self._state = _State()
        self.counters = Counters()
        self._overflow_warned = 0
        self._kick_on_end: set[int] = set()
        self._worker_count = max(1, workers)
        self._idle = idle
        self._idle_interval = idle_interval
        self._workers = self._start_workers()
        if hasattr(os, "register_at_fork"):
            ref = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    def _after_fork(self) -> None:
        """The child has no export workers; spans queued before the fork are the parent's to send."""
        self._cond = threading.Condition()
        self._state = _State()
        self._workers = self._start_workers()

    def _start_workers(self) -> list[threading.Thread]:
        workers = [
            threading.Thread(target=self._run, args=(i,), name=f"otel-basic-export-{i}", daemon=True)
            for i in range(self._worker_count)
        ]
        for worker in workers:
            worker.start()
        return workers

    # --- span lifecycle ----------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def kick_when_ended(self, span_id: int) -> None:
        """Kick the worker as soon as the span with ``span_id`` ends (a workflow step's own span)."""
        with self._cond:
            self._kick_on_end.add(span_id)

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context or not span.context.trace_flags.sampled:
            return
        if self._kick_on_end and span.context.span_id in self._kick_on_end:
            self._kick_on_end.discard(span.context.span_id)
            kick = True
        else:
            kick = False
        spill: list[ReadableSpan] = []
        with self._cond:
            state = self._state
            if state.shutdown:
                self.counters.dropped += 1
                return
            if len(state.queue) >= self._max_queue and self._policy == "block":
                self._cond.notify_all()
                end = time.monotonic() + self._block_timeout
                while len(state.queue) >= self._max_queue and (left := end - time.monotonic()) > 0:
                    self._cond.wait(left)
            if len(state.queue) >= self._max_queue:
                take = min(self._batch, len(state.queue))
                spill = [state.queue.popleft()[1] for _ in range(take)]
            self.counters.enqueued += 1
            state.queue.append((self.counters.enqueued, span))
            if kick:
                state.kicked = True
                self._cond.notify_all()
            elif len(state.queue) == 1:  # the worker sleeps while the queue is empty: start its timer
                self._cond.notify_all()
            elif len(state.queue) >= self._batch and not state.kicked:
                state.kicked = True
                self._cond.notify_all()
        if spill:
            self._handle_overflow(spill)

    def _handle_overflow(self, spans: list[ReadableSpan]) -> None:
        kept = False
        if self._overflow is not None and self._policy != "drop":
            try:
                kept = self._overflow(spans, "queue full")
            except Exception:  # the spool must never break the app
                _log.debug("overflow handler failed", exc_info=True)
        with self._cond:
            if kept:
                self.counters.spilled += len(spans)
            else:
                self.counters.dropped += len(spans)
            self._notify_waiters()
            warn = self._overflow_warned == 0
            self._overflow_warned += len(spans)
        if warn:
            _log.warning(
                "otel-basic: span queue full (%d); %s the oldest spans; the flush report has the totals",
                self._max_queue,
                "spooling" if kept else "dropping",
            )

    # --- flushing ----------------------------------------------------------------------------

    def kick(self) -> None:
        """Start exporting everything queued now, without waiting (coalesces with other kicks)."""
        with self._cond:
            if self._state.queue and not self._state.kicked:
                self._state.kicked = True
                self._cond.notify_all()

    def _done_through(self) -> int:
        state = self._state
        firsts = list(state.inflight)
        if state.queue:
            firsts.append(state.queue[0][0])
        return (min(firsts) - 1) if firsts else self.counters.enqueued

    def flush_until(self, deadline: float) -> tuple[int, int]:
        """Block until everything enqueued so far is done or ``deadline``; return (target, pending)."""
        with self._cond:
            target = self.counters.enqueued
            waiter = _Waiter(target, deadline)
            self._add_waiter(waiter)
            while not waiter.done and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            self._remove_waiter(waiter)
            return target, max(0, target - self._done_through())

    def flush_future(self, deadline: float, loop: asyncio.AbstractEventLoop) -> tuple[int, asyncio.Future[None]]:
        """Like :meth:`flush_until` for async callers: a future resolved by an export worker."""
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            waiter = _Waiter(self.counters.enqueued, deadline, loop, future)
            self._add_waiter(waiter)
        return waiter.target, future

    def pending_after(self, target: int) -> int:
        with self._cond:
            return max(0, target - self._done_through())

    def forget_future(self, future: asyncio.Future[None]) -> None:
        with self._cond:
            self._state.waiters = [w for w in self._state.waiters if w.future is not future]

    def _add_waiter(self, waiter: _Waiter) -> None:
        if self._done_through() >= waiter.target:
            self._resolve(waiter)
            return
        self._state.waiters.append(waiter)
        self._state.kicked = True
        self._cond.notify_all()

    def _remove_waiter(self, waiter: _Waiter) -> None:
        if waiter in self._state.waiters:
            self._state.waiters.remove(waiter)

    def _resolve(self, waiter: _Waiter) -> None:
        waiter.done = True
        if waiter.future is not None and waiter.loop is not None:
            future = waiter.future

            def _set() -> None:
                if not future.done():
                    future.set_result(None)

            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                waiter.loop.call_soon_threadsafe(_set)

    def _notify_waiters(self) -> None:
        done = self._done_through()
        still = []
        for waiter in self._state.waiters:
            if done >= waiter.target:
                self._resolve(waiter)
            else:
                still.append(waiter)
        self._state.waiters = still
        self._cond.notify_all()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """OTel's interface (used by ``langfuse.flush()``): True only if everything was delivered."""
        before = self.counters.copy()
        timeout = min(timeout_millis / 1000.0, self._max_force_flush)  # callers pass 30 s by default
        _, pending = self.flush_until(time.monotonic() + timeout)
        after = self.counters
        return pending == 0 and after.failed == before.failed and after.dropped == before.dropped

    # --- worker --------------------------------------------------------------------------------

    def _next_batch(self, index: int) -> list[tuple[int, ReadableSpan]] | None:
        """Wait for work; return the next batch (oldest first), or None to stop.

        While there is nothing to send, the first worker runs ``idle`` every ``idle_interval``
        seconds: the spool is retried even when the app has stopped producing spans.
        """
        with self._cond:
            state = self._state
            timer_end = time.monotonic() + self._delay
            while True:
                if state.queue and (state.kicked or state.shutdown or time.monotonic() >= timer_end):
                    break
                if state.shutdown:
                    return None
                if not state.queue:
                    state.kicked = False
                    if self._idle is None or index != 0:
                        self._cond.wait()
                    elif not self._cond.wait(self._idle_interval) and not state.queue and not state.shutdown:
                        self._cond.release()
                        try:
                            self._run_idle()
                        finally:
                            self._cond.acquire()
                    timer_end = time.monotonic() + self._delay
                    continue
                self._cond.wait(max(0.0, timer_end - time.monotonic()))
            count = min(self._batch, len(state.queue))
            batch = [state.queue.popleft() for _ in range(count)]
            state.inflight[batch[0][0]] = [span for _, span in batch]
            if not state.queue:
                state.kicked = False
            return batch

    def _export_deadline(self) -> float:
        end = time.monotonic() + self._export_timeout
        with self._cond:
            for waiter in self._state.waiters:
                if waiter.deadline is not None:
                    end = min(end, waiter.deadline)
        return end

    def _run_idle(self) -> None:
        try:
            if self._idle is not None:
                self._idle()
        except Exception:  # a failed retry of the spool must not stop the worker
            _log.debug("idle task failed", exc_info=True)

    def _run(self, index: int = 0) -> None:
        while (batch := self._next_batch(index)) is not None:
            spans = [span for _, span in batch]
            ok = False
            try:
                with _deadline.export_deadline(self._export_deadline()):
                    ok = self.exporter.export(spans) == SpanExportResult.SUCCESS
            except Exception as exc:
                _log.debug("exporter raised", exc_info=True)
                self.counters.last_error = f"exporter raised {type(exc).__name__}"
            failure = None if ok else self._failure_probe()
            delivered = len(spans) if ok else self._partial(len(spans))
            with self._cond:
                self.counters.export_requests += 1
                self.counters.exported += delivered
                self.counters.failed += len(spans) - delivered
                if failure is not None:
                    self.counters.last_error = failure.message
                del self._state.inflight[batch[0][0]]
                self._notify_waiters()

    def _partial(self, size: int) -> int:
        """Spans of a failed batch that still arrived (a split batch can half-succeed)."""
        if self._delivered_probe is None:
            return 0
        try:
            return max(0, min(size, self._delivered_probe()))
        except Exception:
            _log.debug("delivered-count probe failed; counting the batch as failed", exc_info=True)
            return 0

    def drain(self) -> list[ReadableSpan]:
        """Take every span not yet delivered: queued, and in flight (at exit, after the flush
        deadline: they go to the spool). An in-flight batch may still be accepted by a slow
        endpoint after all; a duplicate is better than a loss (Langfuse upserts by span id)."""
        with self._cond:
            spans = [span for batch in self._state.inflight.values() for span in batch]
            spans += [span for _, span in self._state.queue]
            self._state.queue.clear()
            self._notify_waiters()
            return spans

    def shutdown(self, timeout_millis: int = 30000) -> None:
        end = time.monotonic() + timeout_millis / 1000.0
        self.flush_until(end)
        with self._cond:
            self._state.shutdown = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(max(0.0, end - time.monotonic()))
        self.exporter.shutdown()

    def queued(self) -> int:
        with self._cond:
            return len(self._state.queue) + sum(len(b) for b in self._state.inflight.values())
