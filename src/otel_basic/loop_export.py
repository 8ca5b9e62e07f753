"""Per-step exports made by the app's event loop itself, not by an export thread (issue 14).

Why: a step's kick used to wake an export worker, which then masked, encoded and sent the batch
beside the running event loop. Each GIL hand-off between the two costs futex calls and context
switches on both sides, and the worker's own work runs slower for it: measured on the email
workflow, the same spans cost the export thread 1.13 ms per run sent per step, 0.75 ms sent once per
block. Here the loop that ended the step does stages 1-2 of the road (mask, limit, encode) in one
callback a linger after the kick, writes the request on a non-blocking connection
(:mod:`otel_basic.transports.loop_http`) and reads the answer through its own selector. Side by side
on the email workflow (``bench/side_by_side.py``, 5 rounds, six runs): 0.89-0.94x of stock
OpenInference's added CPU, against 0.93-0.99x with the export workers in the same runs.

The first attempt is all the loop does. What keeps the guarantees:

* **One road.** The loop calls :meth:`Road.ready` (stages 1-2) and :meth:`Road.send_on_loop` (one
  attempt of stage 3); any answer but a delivery hands the prepared batch to the export workers,
  which go on from that answer (:meth:`Road.resume`: a refusal settled, a 413 split, a retry after
  its ``Retry-After``, the spool). Nothing is masked twice,
  nothing is sent unmasked, and every batch is settled once, through the processor's ledger.
* **Counted and flushed like any batch.** A batch taken by the loop is in the processor's
  ``inflight`` until its tally is recorded: a flush waits for it and never reports it delivered before.
* **A flush that blocks the loop cannot wait for the loop.** A synchronous flush on the loop's own
  thread, any flush once the loop stopped running (``asyncio.run`` ended, the exit flush), and the
  primary worker's watch (below) take the loop's batches over for the workers
  (:meth:`LoopExports.take_over`); an answer that comes later is ignored (the workers' resend is a
  duplicate at worst, which Langfuse upserts by span id). Per-loop state and idle connections live
  on the loop object, so they go when the loop goes.
* **A blocked loop does not hold a step's spans back.** A kick also sets the primary worker's due
  time to the loop's plus :data:`LOOP_GRACE`, and while loops export the primary looks every
  :data:`LOOP_WATCH`: a loop blocked by a synchronous call (or by a request that hangs) has its batch
  taken by the worker within about 0.1 s.
* **A loop that ends does not make the endpoint get a batch twice, where that can be helped.** A
  request out when ``asyncio.run`` cancels its task waits for its answer a little longer
  (:data:`~otel_basic.transports.loop_http.END_WAIT`), and a loop with no task of the app's left
  starts none (:meth:`LoopExports._ending`): a worker would send again what the endpoint already had.
* **No export task is left to the garbage collector.** Every export task is held until it finishes;
  one whose loop was closed while it was pending (``loop.close()`` by hand, a task started during
  ``asyncio.run``'s shutdown) is closed by us, outermost coroutine first (:meth:`LoopExports._close_stranded`):
  collected instead, such tasks crashed CPython 3.11 (SIGSEGV) in a review's stress test. A loop that
  stopped keeps its task (it may run again), up to :data:`KEEP_STOPPED` such loops.
* **Only where it is cheaper.** Only on the HTTP transport's direct path (no proxy), while the
  endpoint's last answer was a delivery (after a failure the workers' retries take over until one
  succeeds), for at most :data:`LOOP_MAX_SPANS` spans, and not on a busy loop: one that runs an export
  timer more than :data:`LOOP_LATE` late (many concurrent runs) would hold spans back and stall its
  runs further, so for :data:`CONGESTED_FOR` its timers wake the workers instead, between two of its
  iterations (:meth:`LoopExports._to_workers_between_bursts`): a worker woken by its own timer took the
  GIL in the middle of one and lengthened it. At most ``workers``
  requests per loop are out; another starts only as a spare worker would (the last one out
  ``SPARE_AFTER`` on an endpoint that answers slowly); otherwise the spans wait for an answer, then a
  linger since the last batch was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan

from otel_basic.loop_slot import LoopSlot
from otel_basic.road import Batch, SendResult, suppressed_context

if TYPE_CHECKING:
    from otel_basic.processor import DeliveryProcessor

#: The most spans one loop callback prepares; a larger queue is the export workers'. An email run's span
#: takes up to ~150 us to mask and encode: 256 of them stalled 50 concurrent runs' loop 40-50 ms more
#: than the workers did; sequential runs queue 10-30 spans per export.
LOOP_MAX_SPANS = 64
#: A loop that runs an export timer this late is busy (many concurrent runs): its timers and answers
#: would hold spans back (measured, 10 concurrent email runs: p99 visibility 146 ms, 28 ms with the
#: workers), so the export workers take its kicks for CONGESTED_FOR. Measured on a slow day: sequential
#: email runs' timers up to 6.4 ms late (one step's synchronous part; at 5 ms, 4% of them sent the next
#: second's exports to the workers, which cost more CPU), 50 concurrent hello runs' 30 ms in the median.
LOOP_LATE = 0.015
CONGESTED_FOR = 1.0
#: The primary worker takes a batch a loop was due to export this long after (the loop is blocked).
LOOP_GRACE = 0.005
#: While loops export, the primary worker looks this often (it is not woken per kick: a notify per kick
#: cost about as much CPU as the loop path saved; looking every 50 ms cost about half of it).
LOOP_WATCH = 0.1
#: Export tasks of loops that stopped (not closed) are kept this many, pending: such a loop may run again
#: and finish its task. Beyond, the oldest is closed like a closed loop's, so that an app that drops
#: loops without closing them does not keep them all open (240 dropped loops kept 257 more fds).
KEEP_STOPPED = 16
#: The coroutines ``asyncio.run`` (and ``uvloop.run``) runs as tasks after the app's main one returned.
_LOOP_SHUTDOWN = frozenset(("shutdown_asyncgens", "shutdown_default_executor"))


@dataclass(eq=False)
class _Loop:
    """One loop's exports; kept on the loop object (:class:`~otel_basic.loop_slot.LoopSlot`)."""

    outs: list[_Out] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    timer_at: float = 0.0
    again: bool = False  # spans were kicked while requests were out: export when one is answered


@dataclass(eq=False)
class _Out:
    """A batch taken by a loop: prepared (``batch``), its first attempt out."""

    first: int
    spans: list[ReadableSpan]
    loop: asyncio.AbstractEventLoop
    mine: _Loop
    thread: int
    since: float
    batch: Batch | None = None
    task: asyncio.Task[None] | None = None
    settled: bool = False  # answered, or taken over for the workers: whichever came first owns it


_log = logging.getLogger(__name__)
#: A fork child's copy of the parent's export tasks: never dropped (see :meth:`LoopExports.keep_forever`).
_KEPT: list[object] = []


class LoopExports:
    """The loop side of :class:`~otel_basic.processor.DeliveryProcessor`; its state is under the
    processor's lock."""

    def __init__(self, processor: DeliveryProcessor, *, enabled: bool = True) -> None:
        self._p = processor
        self._enabled = enabled
        self._slot = LoopSlot(_Loop)  # a fork child's new instance: a new slot
        self._outs: list[_Out] = []  # every loop's batches out (a loop is held only while one is)
        # Every export task not finished yet, held here until it finishes or we close it (_close_stranded).
        self._tasks: dict[asyncio.Task[None], _Out] = {}
        self.healthy = True  # the endpoint's last answer was a delivery
        self.watch_until = 0.0  # the primary worker looks every LOOP_WATCH until then
        self.congested_until = 0.0  # a loop ran an export timer late: the workers export until then

    def watching(self, now: float) -> bool:
        """Whether the primary worker should look every LOOP_WATCH (loops export, have a batch out, or
        a closed loop left an export task to close)."""
        stranded = any(out.loop.is_closed() for out in list(self._tasks.values()))
        return now < self.watch_until or bool(self._outs) or stranded

    def kick(self, at_once: bool) -> bool:
        """A step ended on this thread: export from its running loop (a busy one: wake the workers from
        its timer). False: not here (no running loop, no loop path, the endpoint failing): the caller
        wakes the workers instead."""
        p = self._p
        if not self._enabled or not self.healthy or not p.road.loop_capable:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        with p._cond:
            state = p._state
            if state.shutdown or (mine := self._slot.setdefault(loop, _Loop)[0]) is None:
                return False
            if not state.queue or state.kicked:
                return True  # nothing queued, or the workers were asked for it already
            now = time.monotonic()
            due = now + p._linger if not at_once else max(now, state.taken_at + p._linger)
            self._schedule_locked(loop, mine, due, now)
            # The primary worker takes the batch if this loop has not by then (blocked by a synchronous
            # call): it looks every LOOP_WATCH while loops export (a notify per kick cost the gain). A busy
            # loop's timer comes a burst late by design (see _export): the worker waits longer for it.
            backstop = due + (LOOP_WATCH if now < self.congested_until else LOOP_GRACE)
            self._backstop_locked(backstop)
            self.watch_until = now + 1.0
            # a primary in a long wait begun before the watch: woken once, it waits LOOP_WATCH at most
            if state.idle_until != math.inf and state.idle_until > backstop + LOOP_WATCH:
                p._wake_primary()
        return True

    def _backstop_locked(self, at: float) -> None:
        """The primary worker takes the queue at ``at`` if no loop has by then (one blocked or stuck)."""
        state = self._p._state
        if state.loop_due is None or at < state.loop_due:
            state.loop_due = at

    def _schedule_locked(self, loop: asyncio.AbstractEventLoop, mine: _Loop, due: float, now: float) -> None:
        """Arrange the next export of this loop at ``due``, or once a spare would start, or at an answer."""
        if mine.outs:
            spare_at = self._spare_at(mine)
            if spare_at is None:
                mine.again = True  # sent when an answer comes
                return
            due = max(due, spare_at)
        if mine.timer is not None and mine.timer_at <= due:
            return  # already due as soon
        if mine.timer is not None:
            mine.timer.cancel()
        mine.timer_at = due
        # An empty context: the export neither runs in nor keeps alive the step's (its span, the app's vars).
        mine.timer = loop.call_later(max(0.0, due - now), self._export, loop, mine, context=contextvars.Context())

    def _spare_at(self, mine: _Loop) -> float | None:
        """When another request may start beside those out (None: only after an answer)."""
        p = self._p
        if len(mine.outs) >= p._worker_count or not p._endpoint_slow():
            return None
        return mine.outs[-1].since + p._spare_after()

    def _export(self, loop: asyncio.AbstractEventLoop, mine: _Loop) -> None:
        """The timer: take a batch, prepare it and send it, all on this loop."""
        p = self._p
        with p._cond:
            mine.timer = None
            state = p._state
            now = time.monotonic()
            if now - mine.timer_at > LOOP_LATE:  # a busy loop: its timers (and answers) come late
                self.congested_until = now + CONGESTED_FOR
            if state.shutdown or state.kicked or not state.queue:
                return
            if now < self.congested_until:
                self._to_workers_between_bursts(loop, mine, now)
                return
            if mine.outs and ((spare_at := self._spare_at(mine)) is None or now < spare_at):
                mine.again = True
                return
            if len(state.queue) > LOOP_MAX_SPANS or not self.healthy or self._ending(loop):
                # the workers': too much for one callback, a failing endpoint, a loop that is ending
                p._kick(at_once=True)
                return
            mine.again = False
            first, spans = p._take_locked()
            out = _Out(first, spans, loop, mine, threading.get_ident(), now)
            mine.outs.append(out)
            self._outs.append(out)
        out.batch = p.road.ready(spans)
        if out.batch is None:  # not even the skeletons encode: the workers settle it
            self._hand_over(out, None)
            return
        # instrumentation suppressed for the task's whole life (see Road.send_on_loop)
        task = loop.create_task(self._send(out), name="otel-basic-export", context=suppressed_context())
        # A loop closed with this pending: the watch resends the batch and closes the task, no warning is due.
        with contextlib.suppress(AttributeError):
            task._log_destroy_pending = False  # type: ignore[attr-defined]
        with p._cond:
            out.task = task
            self._tasks[task] = out

    def _ending(self, loop: asyncio.AbstractEventLoop) -> bool:
        """No task of the app's is left on the loop: its main coroutine returned and ``asyncio.run`` (or
        ``run_until_complete``) is ending it. A request started now would likely be out when the loop
        closes, and a worker would send it again (the endpoint would get it twice). The runner's own
        shutdown steps run as tasks too (``shutdown_asyncgens``, ``shutdown_default_executor``): they are
        not the app's (under uvloop a timer often fires during them: 1-32 of 300 spans sent twice)."""
        for task in asyncio.all_tasks(loop):
            if task not in self._tasks and getattr(task.get_coro(), "__name__", "") not in _LOOP_SHUTDOWN:
                return False
        return True

    def _to_workers_between_bursts(self, loop: asyncio.AbstractEventLoop, mine: _Loop, now: float) -> None:
        """A busy loop's batch goes to the export workers, woken from this timer, i.e. between two of the
        loop's iterations; not by the workers' own linger, which ran out in the middle of a burst of
        ready callbacks (50 concurrent runs' steps ending): the worker then took the GIL from that burst
        and lengthened it (measured: 4-7 ms of a 40-50 ms iteration, plus the kicks' GIL hand-off
        sleeps). A worker took a batch less than a linger ago: this timer again a linger after it."""
        p = self._p
        state = p._state
        again_at = state.taken_at + p._linger
        if again_at > now:
            self._schedule_locked(loop, mine, again_at, now)
            self._backstop_locked(again_at + LOOP_WATCH)
            return
        state.kicked = True
        p._wake_workers()

    async def _send(self, out: _Out) -> None:
        try:
            await self._send_once(out)
        finally:
            with self._p._cond:
                if out.task is not None:
                    self._tasks.pop(out.task, None)

    async def _send_once(self, out: _Out) -> None:
        p = self._p
        assert out.batch is not None
        result: SendResult | None = None  # None: over the body limit a 413 taught, the workers split it
        try:
            if not p.road.too_large(out.batch):
                result = await p.road.send_on_loop(out.batch, p._export_timeout)
        except BaseException:  # cancelled: the loop is closing (asyncio.run's end), or closed by us
            self._hand_over(out, None)
            raise
        if result is None or result.kind != "delivered":
            self._hand_over(out, result)
        else:
            with p._cond:
                if not self._release(out):
                    return  # a flush or the watch took it over for the workers
                self.healthy = True
                if result.answer_seconds is not None:
                    p._state.answers.append(result.answer_seconds)
            p._settled(out.first, p.road.delivered(out.batch, result))
            p._after_loop_delivery()
        with p._cond:
            mine = out.mine
            if mine.again and p._state.queue and not p._state.kicked:
                # Kicked while this was out: a linger after the last take (the spans have waited at
                # least the answer); at once after it, each fast answer started a request of one step.
                mine.again = False
                now = time.monotonic()
                self._schedule_locked(out.loop, mine, max(now, p._state.taken_at + p._linger), now)

    def _release(self, out: _Out) -> bool:
        """The batch leaves its loop (lock held); False if it had already (taken over)."""
        if out in out.mine.outs:
            out.mine.outs.remove(out)
        if out in self._outs:
            self._outs.remove(out)
        if out.settled:
            return False
        out.settled = True
        return True

    def _hand_over(self, out: _Out, answer: SendResult | None) -> None:
        """To the workers, with the first attempt's answer (None: none came)."""
        with self._p._cond:
            if not self._release(out):
                return
            if answer is not None:
                self.healthy = False  # the workers' deliveries make it healthy again
        self._p._resume(out.first, out.spans, out.batch, answer)

    def take_over(self, *, blocking: bool) -> None:
        """The batches whose loop cannot answer go to the workers: a loop no longer running (asked by
        every flush and by the primary's watch), and, if a flush blocks this thread, this thread's loop."""
        here = threading.get_ident() if blocking else None
        taken: list[_Out] = []
        if self._outs:
            with self._p._cond:
                for out in list(self._outs):
                    if out.thread != here and out.loop.is_running():
                        continue
                    if self._release(out):
                        taken.append(out)
        for out in taken:
            self._p._resume(out.first, out.spans, out.batch, None)
        self._close_stranded()

    def _close_stranded(self) -> None:
        """Close the export tasks whose loop was closed while they were pending (and the oldest beyond
        :data:`KEEP_STOPPED` whose loop stopped), outermost coroutine first, while we still hold the task.

        Why not leave them to the garbage collector: CPython 3.11 crashes (SIGSEGV) collecting such a
        task when it finalizes an inner coroutine of the task's chain first and, while that one unwinds,
        the task's last reference goes (here: ``asyncio.timeout`` holds its task); the task's own
        coroutine is then closed, walks the chain of awaited coroutines into the frame still unwinding
        and reads a stale pointer from its stack (``gen_close_iter``; seen in gdb, 4 runs in 30 of
        several threads' loops closed with exports out). Held by us, a task is never garbage; closed by
        us from its outermost coroutine, the chain unwinds in order. A loop that stopped keeps its
        task pending (it may run again and finish it), up to :data:`KEEP_STOPPED` such loops."""
        if not self._tasks:
            return
        with self._p._cond:
            stranded = [task for task, out in self._tasks.items() if out.loop.is_closed()]
            stopped = [task for task, out in self._tasks.items() if not (out.loop.is_running() or out.loop.is_closed())]
            stopped = stopped[: max(0, len(stopped) - KEEP_STOPPED)]  # the oldest (insertion order)
            for task in stranded + stopped:
                del self._tasks[task]
        for task in stopped:
            _wind_down(task)
        for task in stranded + stopped:
            try:
                task.get_coro().close()
            except Exception:  # e.g. a transport's close on its closed loop: 'Event loop is closed'
                _log.debug("closing an export task of a closed loop raised", exc_info=True)

    def keep_forever(self) -> None:
        """In a fork child: the parent's export tasks belong to loops of threads the child does not
        have; dropped, the garbage collector could collect them (see :meth:`_close_stranded`)."""
        _KEPT.append(self._tasks)


def _wind_down(task: asyncio.Task[None]) -> None:
    """Before we close the coroutine of a task whose loop stopped but may run again: the future it
    waits for is cancelled when the loop runs (so the loop's own callbacks on it, such as a connect's
    selector registration, are undone there), and the task's end then (its coroutine is closed:
    "cannot reuse already awaited coroutine") is retrieved, not logged as never retrieved."""
    waiter = getattr(task, "_fut_waiter", None)
    if isinstance(waiter, asyncio.Future):
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing of it runs again
            task.get_loop().call_soon_threadsafe(waiter.cancel)
    task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
