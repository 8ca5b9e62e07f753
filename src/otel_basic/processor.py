"""The batch span processor: export workers, counted outcomes, flushes with real deadlines.

Why not the SDK's ``BatchSpanProcessor``: its ``force_flush`` ignores its timeout, exports in the
caller's thread and returns True even when every export failed; a full queue drops the oldest span
with one warning per 20 s and no count; it cannot be asked to "start exporting now" without
blocking. This one keeps the same batching idea with what "nothing lost, nothing hangs" needs:

* every span gets a sequence number; a flush waits until all spans enqueued before it are *done*
  (their batch has a :class:`~otel_basic.road.Tally`), or until its deadline, and reports which;
* :meth:`kick` asks for an export without waiting (per-step flush). Kicks *linger*: the export
  starts ``linger`` seconds after the first kick, so the steps that end meanwhile share one
  request (one request per step end was the largest CPU cost we added); a flush, a full batch or
  the exit do not linger, and a run's end (normally nothing more of it comes) only waits for a linger
  to pass since a worker last took a batch. At most ``workers`` exports are in flight, so a step
  that ends while one export waits for a slow endpoint is sent by another;
* a full queue hands the oldest batch to the road's spool entrance (masked first, like every
  span), or, by choice, blocks the caller for a bounded time or drops; every span is counted;
* a kick made while the primary worker waits for the GIL (woken, or its answer in) sleeps 0.1 ms so it
  gets it: CPython lets a thread that waits for the GIL starve while an event loop releases and retakes
  it at every iteration, and wakes it for nothing each time (see :meth:`DeliveryProcessor.kick`);
* side work (scores) rides on a delivered batch at most every :data:`SIDE_WORK_EVERY` seconds, on one
  worker at a time, counted as a send (a spare takes the spans while it waits for a hung scores endpoint).

Everything a batch goes through after it leaves the queue is :class:`~otel_basic.road.Road`'s; the
processor only records the tally it returns in the :class:`~otel_basic.ledger.Ledger`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otel_basic.ledger import Ledger
from otel_basic.loop_export import LOOP_WATCH, LoopExports
from otel_basic.road import Batch, Deadline, Road, SendResult, Tally, join, resent_at_once

_log = logging.getLogger("otel_basic")

REPLAY_BATCHES_PER_SUCCESS = 8
# A spare worker sends only once another has had a batch out this long on a slow endpoint (its last
# three answers each took longer than this): a step that ends during a 50 ms round trip still leaves
# within RTT + 20 ms, with 8 ms left for the GIL waits and the encoding (at 20 ms its p99 was 70-74 ms;
# now 61 ms). "Slow" is judged by the endpoint's answer time as the transport measured it, not by the
# whole export: with the app's thread CPU-bound, an export to a 0 ms endpoint takes tens of
# milliseconds waiting for the GIL, and a second request in flight then only adds GIL round trips
# (email workload: the second worker's CPU went from ~0.9 ms per run to none).
SPARE_AFTER = 0.012
# On an endpoint that answers fast, a spare takes over only when an export has been out this long
# (the endpoint stopped answering; a GIL-starved export on a busy app takes up to a few 100 ms).
STUCK_AFTER = 1.0
# An idle primary worker wakes at least this far apart to start the batch timer of a first span by
# itself (a notify per first span is a GIL round trip); a shorter schedule delay is notified instead.
IDLE_WAKE = 0.25
# How long the app's thread sleeps to hand the GIL to an export worker that waits for it (see kick), and
# how often at most: each hand-off is a few system calls and context switches.
HANDOFF = 0.0001
HANDOFF_EVERY = 0.002
# ... and only this long past the endpoint's usual answer time of the last send: a worker whose answer is
# in gets the GIL within a hand-off or two, so one still out later waits for the endpoint (a request that
# hangs had the app's thread sleep at every other kick, for nothing).
HANDOFF_WINDOW = 0.05
# Side work (scores) rides on a delivered batch at most this often, else on the primary's idle wake: a
# score request after every export cost, on the email workload, more CPU than all its span requests.
# Every flush sends it all before it reports.
SIDE_WORK_EVERY = 0.5


@dataclass
class _Waiter:
    target: int
    deadline: float | None
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[None] | None = None
    done: bool = False


@dataclass(frozen=True)
class _Job:
    """A batch for a worker: ``first`` its first sequence number; ``batch`` already prepared (stages 1-2)
    when an event loop's first attempt did not deliver it (see :mod:`otel_basic.loop_export`)."""

    first: int
    spans: list[ReadableSpan]
    batch: Batch | None = None
    resumed: bool = False
    answer: SendResult | None = None  # the event loop's attempt's answer (None: none came)
    parts: tuple[_Job, ...] = ()  # joined: its parts, each prepared (see DeliveryProcessor._join_resumed_locked)

    @property
    def spans_prepared(self) -> int:
        return self.batch.spans if self.batch is not None else 0

    def bytes_if(self, limit: int | None) -> int:
        """The prepared request's encoded size, only when there is a limit to compare it with."""
        return self.batch.message.ByteSize() if limit is not None and self.batch is not None else 0


def _sent_at_once(job: _Job) -> bool:
    """A prepared batch whose event loop's attempt left no answer to honour: it can share a request."""
    return job.batch is not None and resent_at_once(job.answer)


@dataclass
class _Held:
    """A batch :meth:`DeliveryProcessor.close` took while its request was out: the held copy's files
    (None while being written) and the request's answer (None until it comes)."""

    files: list[str] | None = None
    answer: Tally | None = None


@dataclass
class _State:
    queue: deque[tuple[int, ReadableSpan]] = field(default_factory=deque)
    inflight: dict[int, list[ReadableSpan]] = field(default_factory=dict)  # first seq -> batch
    drained: dict[int, _Held] = field(default_factory=dict)  # first seq -> batch close() took in flight
    settling: set[int] = field(default_factory=set)  # in-flight batches whose tally is being recorded
    retrying: dict[int, str] = field(default_factory=dict)  # in-flight batch -> why its last attempt failed
    waiters: list[_Waiter] = field(default_factory=list)
    resumed: deque[_Job] = field(default_factory=deque)  # prepared batches an event loop's attempt did not deliver
    replay_soon: bool = False  # an event loop delivered: the primary looks at the spool
    enqueued: int = 0
    first_at: float = 0.0  # when the queue last went from empty to non-empty (the batch timer)
    sending: int = 0  # workers with a batch (or a spool replay) out
    busy_since: float = 0.0  # when ``sending`` last went from 0 to 1
    answers: deque[float] = field(default_factory=lambda: deque(maxlen=3))  # the endpoint's last answer times
    last_send: float = -1e9  # when a send last started (a spare keeps watching for a while after it)
    watching: int = 0  # spares in a timed wait that will look at the sending worker by themselves
    kicked: bool = False  # export now (a flush waits, a batch is full)
    linger_until: float | None = None  # export at this time (a kick: coalesce what ends meanwhile)
    loop_due: float | None = None  # the primary takes the queue then if an event loop has not (loop_export)
    taken_at: float = -1e9  # when a worker last took a batch (a run's end waits a linger after it)
    idle_until: float = math.inf  # the primary waits for work until then (inf: it is not waiting)
    notified: bool = False  # the primary was woken and has not run since
    handed_at: float = -1e9  # when the app's thread last slept to hand over the GIL
    shutdown: bool = False

    def send_started(self) -> None:
        self.last_send = time.monotonic()
        if not self.sending:
            self.busy_since = self.last_send
        self.sending += 1


class DeliveryProcessor(SpanProcessor):
    def __init__(
        self,
        road: Road,
        ledger: Ledger,
        *,
        schedule_delay: float = 1.0,
        max_queue_size: int = 65536,
        max_export_batch_size: int = 512,
        export_timeout: float = 10.0,
        overflow_policy: str = "spool",
        block_timeout: float = 1.0,
        max_force_flush: float = 5.0,
        workers: int = 4,
        idle_interval: float = 5.0,
        linger: float = 0.015,
        loop_export: bool = True,
        after_delivery: Callable[[float], object] | None = None,
    ) -> None:
        self.road = road
        self.ledger = ledger
        self._delay = schedule_delay
        self._linger = max(0.0, linger)
        self._max_queue = max_queue_size
        self._batch = max_export_batch_size
        self._export_timeout = export_timeout
        self._policy = overflow_policy
        self._block_timeout = block_timeout
        self._max_force_flush = max_force_flush
        self._new_conditions()
        self._state = _State()
        self._kick_on_end: set[int] = set()
        self._worker_count = max(1, workers)
        self._idle_interval = idle_interval
        self._after_delivery = after_delivery  # side work that rides on a delivered batch (scores)
        self._next_side_work = 0.0
        self._side_work_due = False
        self._side_busy = False  # a worker is doing the side work (one at a time)
        self._spooled_seen = -1
        self._next_spool_look = 0.0
        self._loop_export = loop_export
        self._loop_exports = LoopExports(self, enabled=loop_export)
        self._workers = self._start_workers()
        if hasattr(os, "register_at_fork"):
            ref = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    def _after_fork(self) -> None:
        """In a fork child: new locks, sockets and workers; spans queued before the fork are the
        parent's to send, and the parent's counts are the parent's to report. A processor the parent had
        shut down stays shut down (its workers were restarted, and sent spans no report counted)."""
        closed = self._state.shutdown
        self._new_conditions()
        self._state = _State(shutdown=closed)
        self._kick_on_end = set()
        self._side_busy = False  # the parent's worker doing it is not in the child
        self._loop_exports.keep_forever()
        self._loop_exports = LoopExports(self, enabled=self._loop_export)
        self.ledger.reset()
        self.road.reopen()
        self._workers = [] if closed else self._start_workers()

    def _new_conditions(self) -> None:
        """One re-entrant lock, three conditions, so a notify wakes only who it is for: flushers and
        blocked callers (``_cond``), the primary worker (``_work``), spare workers (``_spare``).
        A thread woken for nothing still costs a GIL round trip with the app's thread."""
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        self._work = threading.Condition(lock)
        self._spare = threading.Condition(lock)

    def _wake_workers(self) -> None:
        """Work is due: the primary worker, and a spare if the one sending may be stuck."""
        self._wake_primary()
        self._wake_spare()

    def _wake_primary(self) -> None:
        """Noted, so a kick knows the primary is runnable (and may hand it the GIL, see :meth:`kick`)."""
        self._work.notify()
        self._state.notified = True

    def _wake_spare(self) -> None:
        state = self._state
        if not state.sending or self._worker_count == 1:
            return
        if self._endpoint_slow():  # a spare may take the next batch after SPARE_AFTER
            self._spare.notify()
        elif not state.watching or time.monotonic() >= state.busy_since + STUCK_AFTER:
            # Fast: one spare times STUCK_AFTER itself (the primary is busy, nobody else would wake it),
            # and keeps watching while a send is out or sends keep starting: a wake per send was a GIL
            # round trip with the app's thread each, and each cost the app's thread tens of futile
            # wake-ups. Nobody watching: the spares are asleep (idle before), or all sending (stuck).
            # A send out longer than STUCK_AFTER: a spare takes each batch as the primary would (left to
            # the watch's timer, every span waited up to a second while a request hung).
            self._spare.notify()

    def _endpoint_slow(self) -> bool:
        """Each of the last answers was slow (unknown until the first: assume slow). The fastest, not an
        average: a slow endpoint is slow every time, a GIL stall of the export thread is not."""
        answers = self._state.answers
        return not answers or min(answers) > SPARE_AFTER

    def _spare_after(self) -> float:
        return SPARE_AFTER if self._endpoint_slow() else STUCK_AFTER

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
        with self._cond:
            state = self._state
            if state.shutdown:
                self.ledger.created()
                self.ledger.record(Tally(dropped=1, reasons=["span ended after shutdown"]))
                return
            if len(state.queue) >= self._max_queue and self._policy == "block":
                state.kicked = True
                self._wake_workers()
                end = time.monotonic() + self._block_timeout
                while len(state.queue) >= self._max_queue and (left := end - time.monotonic()) > 0:
                    self._cond.wait(left)
            closed = state.shutdown  # close() woke us: the span ended before it, it goes where the queue went
            spill = [] if closed else self._enqueue_locked(span, kick)
            if closed:
                self.ledger.created()
        if closed:
            self.ledger.record(self.road.keep([span], "span queue full at shutdown"))
        elif spill:
            self._overflow(spill[0][0], [span for _, span in spill])

    def _enqueue_locked(self, span: ReadableSpan, kick: bool) -> list[tuple[int, ReadableSpan]]:
        """Queue the span (counted as created); returns the oldest batch if the queue was full (to spool)."""
        state = self._state
        self.ledger.created()
        spill: list[tuple[int, ReadableSpan]] = []
        if len(state.queue) >= self._max_queue:
            take = min(self._batch, len(state.queue))
            spill = [state.queue.popleft() for _ in range(take)]
            state.inflight[spill[0][0]] = [queued for _, queued in spill]  # pending until it is on disk
        state.enqueued += 1
        state.queue.append((state.enqueued, span))
        if len(state.queue) == 1:  # the batch timer starts; the primary worker wakes for it by itself
            state.first_at = time.monotonic()
            if self._delay < IDLE_WAKE:  # too short for the primary's own idle timeout
                self._work.notify()
            self._wake_spare()  # ... unless it is busy sending to a slow endpoint
        if kick:
            self._linger_locked()
        elif len(state.queue) >= self._batch and not state.kicked:
            state.kicked = True
            self._wake_workers()
        return spill

    def _overflow(self, first: int, spans: list[ReadableSpan]) -> None:
        """The oldest batch leaves a full queue for the spool (masked first, in the caller's thread). It is
        in flight until it is on disk: a flush meanwhile waits for it, as for an export (it used to be in
        neither the queue nor the spool, and a flush was truthy while it was being written)."""
        if self._policy == "drop":
            tally = Tally(dropped=len(spans), reasons=["span queue full (OTEL_BASIC_OVERFLOW=drop)"])
        else:
            tally = self.road.keep(spans, "span queue full")
        self._settled(first, tally)

    # --- flushing ----------------------------------------------------------------------------

    def kick(self, *, at_once: bool = False) -> None:
        """Export what is queued soon, without waiting; kicks coalesce (see :meth:`_kick`). Then, if the
        primary export worker waits for the GIL, sleep :data:`HANDOFF` so it gets it.

        Why: in CPython (3.11, 3.12) a thread waiting for the GIL asks its holder to drop it only after a
        switch interval (5 ms) without a release; an event loop releases it at every iteration (its
        ``epoll_wait``), so a worker whose answer had come waited for the GIL tens of milliseconds while
        the app's thread woke it, for nothing, at each release (two futex calls and a context switch
        each, on both sides): measured, about 200 futex calls of the app's thread per export request, which
        cost more CPU than the export itself. The sleep gives the worker its turn at once.

        On a thread with a running event loop, that loop exports instead (:mod:`otel_basic.loop_export`),
        and no worker is woken."""
        if self._loop_exports.kick(at_once):
            return
        self._kick(at_once=at_once)
        state = self._state
        now = time.monotonic()
        if now - state.handed_at >= HANDOFF_EVERY and self._waits_for_gil(now):
            state.handed_at = now
            time.sleep(HANDOFF)

    def _kick(self, *, at_once: bool = False) -> None:
        """Export what is queued soon, without waiting; kicks coalesce. A step's kick: after the linger, so
        the steps ending meanwhile share the request. ``at_once`` (a run's end: normally nothing more of it
        comes): now, or, if a worker took a batch less than a linger ago, a linger after that, so back-to-back
        runs still share requests (run ends alone never start two exports within a linger)."""
        with self._cond:
            state = self._state
            if not state.queue or state.kicked:
                return
            if not at_once:
                self._linger_locked()
                return
            due = state.taken_at + self._linger
            if due <= time.monotonic():
                state.kicked = True
            elif state.linger_until is None or due < state.linger_until:
                state.linger_until = due
            else:
                return  # already due sooner
            self._wake_workers()

    def _linger_locked(self) -> None:
        state = self._state
        if state.kicked or state.linger_until is not None:
            return  # an export is already due: this kick rides along
        state.linger_until = time.monotonic() + self._linger
        self._wake_workers()

    def _done_through(self) -> int:
        state = self._state
        firsts = list(state.inflight)
        if state.queue:
            firsts.append(state.queue[0][0])
        return (min(firsts) - 1) if firsts else state.enqueued

    def flush_until(self, deadline: float) -> int:
        """Block until everything enqueued so far is done or ``deadline``; return the target."""
        self._loop_exports.take_over(blocking=True)  # this thread's loop cannot answer while we wait
        with self._cond:
            target = self._state.enqueued
            waiter = _Waiter(target, deadline)
            self._add_waiter(waiter)
            while not waiter.done and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            self._remove_waiter(waiter)
            return target

    def flush_future(self, deadline: float, loop: asyncio.AbstractEventLoop) -> tuple[int, asyncio.Future[None]]:
        """Like :meth:`flush_until` for async callers: a future resolved by an export worker."""
        future: asyncio.Future[None] = loop.create_future()
        self._loop_exports.take_over(blocking=False)
        with self._cond:
            waiter = _Waiter(self._state.enqueued, deadline, loop, future)
            self._add_waiter(waiter)
        return waiter.target, future

    def pending_after(self, target: int) -> int:
        """Spans up to ``target`` still in memory (queued or in flight)."""
        with self._cond:
            state = self._state
            queued = sum(1 for seq, _ in state.queue if seq <= target)
            inflight = sum(len(b) for first, b in state.inflight.items() if first <= target)
            return queued + inflight

    def forget_future(self, future: asyncio.Future[None]) -> None:
        with self._cond:
            self._state.waiters = [w for w in self._state.waiters if w.future is not future]

    def _add_waiter(self, waiter: _Waiter) -> None:
        if self._done_through() >= waiter.target:
            self._resolve(waiter)
            return
        self._state.waiters.append(waiter)
        self._state.kicked = True
        self._wake_workers()

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
        """OTel's interface (used by ``langfuse.flush()``): True only if everything enqueued so far
        was delivered. Does not start a new report period: ``otel_basic.flush`` still reports."""
        before = self.ledger.totals
        timeout = min(timeout_millis / 1000.0, self._max_force_flush)  # callers pass 30 s by default
        target = self.flush_until(time.monotonic() + timeout)
        meanwhile = self.ledger.totals.minus(before)
        return self.pending_after(target) == 0 and meanwhile.spooled == meanwhile.rejected == meanwhile.dropped == 0

    # --- workers -------------------------------------------------------------------------------

    def _next_batch(self, index: int) -> _Job | None:
        """Wait for work; return the next batch (oldest first), or None to stop.

        Worker 0 (primary) sends when the batch timer (``schedule_delay`` after the first queued
        span), a kick's linger, a flush or a full batch makes the queue due; it is not woken for
        each first span, it wakes by its own timeout instead. Spare workers (``workers`` > 1) only
        send while another worker has a batch or a spool replay out, so a slow endpoint does not hold up the steps
        that end meanwhile, and otherwise sleep. While there is nothing to send, the primary
        retries the spool every ``idle_interval`` seconds: an outage that ends while the app is
        idle still drains.
        """
        primary = index == 0
        with self._cond:
            state = self._state
            next_replay = time.monotonic() + self._idle_interval
            while True:
                if state.resumed:
                    job = self._join_resumed_locked(state.resumed.popleft())
                    state.send_started()
                    return job
                if state.shutdown and (not state.queue or not primary):
                    return None
                now = time.monotonic()
                if state.queue:
                    due = state.first_at + self._delay
                    if state.linger_until is not None:
                        due = min(due, state.linger_until)
                    if state.loop_due is not None:
                        due = min(due, state.loop_due)
                    ready = state.kicked or state.shutdown or now >= due
                    if primary:
                        if ready:
                            break
                        self._primary_wait(now, due)
                    elif not state.sending:
                        self._spare_wait(now)  # the primary's job; a spare watches while sends keep starting
                    else:
                        stuck_at = state.busy_since + self._spare_after()
                        if ready and now >= stuck_at:
                            break
                        self._spare_wait(now, max(due, stuck_at))
                    continue
                state.kicked = False
                state.linger_until = state.loop_due = None
                if not primary:
                    self._spare_wait(now)  # nothing to take: spans that end meanwhile are looked at by a watch
                    continue
                if self.road.spool is not None and (now >= next_replay or state.replay_soon):
                    state.replay_soon = False
                    self._cond.release()
                    try:
                        self._replay(None)
                    finally:
                        self._cond.acquire()
                    next_replay = time.monotonic() + self._idle_interval
                    continue
                side_due = self._side_work_due and not self._side_busy
                if self._after_delivery is not None and side_due and now >= self._next_side_work:
                    self._cond.release()
                    try:
                        self._side_work()
                    finally:
                        self._cond.acquire()
                    continue
                idle = max(self._delay, IDLE_WAKE)
                wait = idle if self.road.spool is None else min(idle, next_replay - now)
                if side_due:  # skipped after a delivery: sent at its due time, whatever the delay
                    wait = min(wait, self._next_side_work - now)
                self._primary_wait(now, now + max(0.0, wait))
            first, spans = self._take_locked()
            state.send_started()
            if state.queue and self._worker_count > 1:  # more than one batch is due: a spare takes the next
                self._spare.notify()
            return _Job(first, spans)

    def _take_locked(self) -> tuple[int, list[ReadableSpan]]:
        """The oldest batch leaves the queue for ``inflight`` (a worker's, or an event loop's)."""
        state = self._state
        count = min(self._batch, len(state.queue))
        taken = [state.queue.popleft() for _ in range(count)]
        first, spans = taken[0][0], [span for _, span in taken]
        state.inflight[first] = spans
        state.taken_at = time.monotonic()
        if not state.queue:
            state.kicked = False
            state.linger_until = state.loop_due = None
        return first, spans

    def _resume(self, first: int, spans: list[ReadableSpan], batch: Batch | None, answer: SendResult | None) -> None:
        """An event loop's batch its first attempt did not deliver (or a flush took over): a worker goes on
        at stage 3. One :meth:`close` took meanwhile stays held in the spool (its copy is the truth now)."""
        with self._cond:
            if first not in self._state.inflight:
                return
            self._state.resumed.append(_Job(first, spans, batch, resumed=True, answer=answer))
            self._wake_primary()
            if self._worker_count > 1:
                self._spare.notify()

    def _join_resumed_locked(self, job: _Job) -> _Job:
        """Prepared batches that wait together leave in one request, up to a batch's size. A script that
        makes one run per ``asyncio.run`` hands each run's small batch over as its loop ends; one request
        each, they took 2-3 round trips of a slow endpoint where the workers alone needed one. Only
        batches that are sent at once (no answer of their event loop's attempt to honour) are joined,
        under the lowest sequence number, so a flush waits for all of them; each stays counted once.
        Once the endpoint refused a request as too large (413), a join stays within
        :meth:`Road.request_limit`, and a joined request it refuses is taken apart again (:meth:`_unjoin`)."""
        state = self._state
        if not _sent_at_once(job) or job.first not in state.inflight:
            return job
        limit = self.road.request_limit()  # a joined request's size is the sum of its parts'
        jobs, count, size = [job], job.spans_prepared, job.bytes_if(limit)
        while state.resumed and _sent_at_once(state.resumed[0]) and state.resumed[0].first in state.inflight:
            after = size + state.resumed[0].bytes_if(limit)
            if count + state.resumed[0].spans_prepared > self._batch or (limit is not None and after > limit):
                break
            jobs.append(state.resumed.popleft())
            count, size = count + jobs[-1].spans_prepared, after
        if len(jobs) == 1:
            return job
        for one in jobs:
            del state.inflight[one.first]
            state.retrying.pop(one.first, None)
        first = min(one.first for one in jobs)
        spans = [span for one in jobs for span in one.spans]
        state.inflight[first] = spans
        return _Job(first, spans, resumed=True, parts=tuple(jobs))  # joined by the worker, off the lock

    def _unjoin(self, job: _Job) -> bool:
        """A joined request the endpoint refused as too large: its parts wait again apart, each under its
        own sequence number, for any worker to join anew within the new limit. Halved by the road
        instead, the halves went one after another on one worker (a 50 KB body limit: the final flush of 20
        runs took 5.7-7 s, against 1.2-1.6 s for the same batches sent apart). False: :meth:`close` took
        the batch meanwhile (the road settles it as it is)."""
        with self._cond:
            state = self._state
            if state.shutdown or job.first not in state.inflight:
                return False
            del state.inflight[job.first]
            state.retrying.pop(job.first, None)
            for part in job.parts:
                state.inflight[part.first] = part.spans
            state.resumed.extendleft(reversed(job.parts))
            state.sending -= 1
            self._wake_primary()
            if self._worker_count > 1:
                self._spare.notify_all()
        return True

    def _after_loop_delivery(self) -> None:
        """What a worker does after a delivery, for an event loop's: the spool and side work are the
        primary's, which is woken only when either is due."""
        spool = self.road.spool is not None and self._spool_may_wait()
        with self._cond:
            if spool:
                self._state.replay_soon = True
                self._wake_primary()
        if self._after_delivery is not None:
            self._side_work_later()

    def _primary_wait(self, now: float, until: float) -> None:
        """The primary's wait, published so the app's thread can tell whether it waits for the GIL."""
        state = self._state
        watch = self._loop_exports.watching(now)
        if watch:  # a blocked or stopped event loop's batch is taken within LOOP_WATCH
            until = min(until, now + LOOP_WATCH)
        state.idle_until, state.notified = until, False
        try:
            self._work.wait(max(0.0, until - now))
        finally:
            state.idle_until, state.notified = math.inf, False
        if watch:
            self._loop_exports.take_over(blocking=False)

    def _waits_for_gil(self, now: float) -> bool:
        """Whether the primary worker is (probably) runnable, i.e. waiting for the GIL the caller holds:
        woken or its wait over, or between batches, or its request out longer than the endpoint's usual
        answer time (its answer is in) by at most :data:`HANDOFF_WINDOW`. Not while it waits for work or,
        probably, for the endpoint."""
        state = self._state
        if state.shutdown:
            return False
        if state.idle_until != math.inf:
            return state.notified or now >= state.idle_until
        if state.sending:  # a batch, a spool replay or side work out: hand over once its answer is due
            late = now - state.last_send - (min(state.answers) if state.answers else 0.0)
            return 0.0 <= late <= HANDOFF_WINDOW
        return True  # preparing a batch, or between batches

    def _spare_wait(self, now: float, until: float | None = None) -> None:
        """A spare's wait: until ``until`` (a sending worker may be stuck by then), or, while a send is out
        or sends keep starting (the last one less than 2 x STUCK_AFTER ago), for STUCK_AFTER at most, as the
        watchdog that :meth:`_wake_spare` then need not wake; otherwise until woken. (Untimed while a request
        hung, the spares slept through it, and the spans of later steps waited for its timeout.)"""
        state = self._state
        if state.sending or state.last_send + 2 * STUCK_AFTER > now:
            until = now + STUCK_AFTER if until is None else min(until, now + STUCK_AFTER)
        if until is None:
            self._spare.wait()
            return
        state.watching += 1
        try:
            self._spare.wait(max(0.0, until - now))
        finally:
            state.watching -= 1

    def _export_deadline(self, first: int | None = None) -> Deadline:
        """An export's request runs to the export timeout even when a flush stops waiting sooner (cut short,
        a request the endpoint then accepts is spooled and sent twice; the flush just reports it pending,
        and an exit drains it to the spool); retries stop at the earliest waiting flush's deadline, asked
        afresh before each, so that flush learns why the endpoint fails. The batch starting at ``first``
        notes why it retries until it settles: a flush whose deadline comes while a retry is out says why."""
        if first is None:
            return Deadline(time.monotonic() + self._export_timeout, self._flush_deadline)

        def retrying(reason: str) -> None:
            with self._cond:
                if first in self._state.inflight:
                    self._state.retrying[first] = reason

        return Deadline(time.monotonic() + self._export_timeout, self._flush_deadline, retrying)

    def unanswered_for(self) -> float:
        """How long requests have been out without a break (0 when none is): a flush that runs out of time
        says so when it is long, rather than only "pending" (an endpoint that holds requests open)."""
        with self._cond:
            state = self._state
            return time.monotonic() - state.busy_since if state.sending else 0.0

    def retry_reason(self) -> str | None:
        """Why a batch still in memory is being retried (its last failed attempt), if one is."""
        with self._cond:
            reasons = list(self._state.retrying.values())
        return reasons[-1] if reasons else None

    def _flush_deadline(self) -> float:
        with self._cond:
            return min((w.deadline for w in self._state.waiters if w.deadline is not None), default=math.inf)

    def _replay(self, max_batches: int | None) -> None:
        """Retry the spool (after a success, or while idle); the road never raises, this guards bugs.

        A replay is a send like any other: counted in ``sending``, so spare workers take the spans that end
        meanwhile under the usual rules (a replay of 8 batches to a slow endpoint otherwise held them for
        8 round trips, with the spares asleep)."""
        try:
            if not self.road.spool_waiting():
                return
        except Exception:
            _log.debug("spool look failed", exc_info=True)
            return
        with self._cond:
            state = self._state
            state.send_started()
            if state.queue:
                self._wake_spare()
        try:
            self.road.replay(deadline=self._export_deadline(), max_batches=max_batches or 64, record=self.ledger.record)
        except Exception:
            _log.debug("spool retry failed", exc_info=True)
        finally:
            with self._cond:
                state.sending -= 1

    def _run(self, index: int = 0) -> None:
        while (job := self._next_batch(index)) is not None:
            spans = job.spans
            started = time.monotonic()
            try:
                deadline = self._export_deadline(job.first)
                if job.parts:  # joined: one attempt, then apart on a 413, else on like any resumed batch
                    joined = join([part.batch for part in job.parts if part.batch is not None])
                    tried = self.road.attempt(joined, deadline)
                    if tried.kind == "too_large" and self._unjoin(job):
                        continue
                    tally = self.road.resume(spans, joined, deadline, tried)
                elif job.resumed:
                    tally = self.road.resume(spans, job.batch, deadline, job.answer)
                else:
                    tally = self.road.deliver(spans, deadline)
            except Exception as exc:  # the road contains its stages' errors; this guards its own bugs
                _log.debug("delivery raised", exc_info=True)
                tally = self._keep_after_error(spans, exc)
            answer = tally.answer_seconds if tally.answer_seconds is not None else time.monotonic() - started
            self._settled(job.first, tally, answer)
            if tally.delivered and not tally.failed:
                self._loop_exports.healthy = True
            if tally.delivered and not tally.failed:
                if self._spool_may_wait():
                    self._replay(REPLAY_BATCHES_PER_SUCCESS)
                if time.monotonic() >= self._next_side_work:
                    self._side_work()
                else:
                    self._side_work_later()

    def _settled(self, first: int, tally: Tally, answer: float | None = None) -> None:
        """A batch in flight (an export, with the endpoint's ``answer`` time; or an overflow on its way to
        the spool) has its tally. Recorded in the ledger while the batch still counts as in flight, and only
        then are the flushes waiting for it woken: a flush woken first reported from a ledger without it
        (truthy while the batch was refused). Never with the processor's lock held while waiting for the
        ledger's: a signal handler's exit flush in a thread that holds the ledger's lock would wait for
        itself. If :meth:`close` took the batch meanwhile, it holds a copy: whichever is second settles it."""
        held = None
        with self._cond:
            state = self._state
            if answer is not None:
                state.sending -= 1
                state.answers.append(answer)
            mine = first in state.inflight
            if mine:
                state.settling.add(first)  # close() leaves it: it is being recorded
            elif (held := state.drained.get(first)) is not None:
                held.answer = tally
                if held.files is None:
                    held = None  # the copy is still being written: close() settles it
                else:
                    del state.drained[first]
        if mine:
            self.ledger.record(tally)
            with self._cond:
                state.settling.discard(first)
                state.inflight.pop(first, None)
                state.retrying.pop(first, None)
                self._notify_waiters()
        elif held is not None:
            self._settle_late(held)

    def _spool_may_wait(self) -> bool:
        """Look at the spool after a success when this process spooled since the last look, or
        every ``idle_interval`` (other processes' leftovers): listing a directory after every
        export was a GIL round trip with the app's thread per request."""
        spooled, now = self.ledger.totals.spooled, time.monotonic()
        if spooled == self._spooled_seen and now < self._next_spool_look:
            return False
        self._spooled_seen, self._next_spool_look = spooled, now + self._idle_interval
        return True

    def _side_work(self) -> None:
        """Side work is a send like a batch: counted in ``sending``, so a spare takes the spans that end
        while it waits for a slow or hung endpoint (it ran uncounted on the primary, and a scores request
        that hung held every span until its timeout). One worker at a time: the others skip it and leave it
        due (each worker that delivered went on to wait for the hung request, until none was left for spans)."""
        if self._after_delivery is None:
            return
        with self._cond:
            if self._side_busy:
                self._side_work_due = True
                return
            self._side_busy = True
            self._next_side_work = time.monotonic() + SIDE_WORK_EVERY
            self._side_work_due = False
            self._state.send_started()
            if self._state.queue:
                self._wake_spare()
        try:
            self._after_delivery(self._export_deadline().retries_end())
        except Exception:  # side work never stops the worker
            _log.debug("after-delivery work failed", exc_info=True)
        finally:
            with self._cond:
                self._state.sending -= 1
                self._side_busy = False
                if self._side_work_due:  # skipped meanwhile: the primary sends it at its due time
                    self._wake_primary()

    def _side_work_later(self) -> None:
        """Skipped after a delivery (too soon since the last): the primary sends it at its due time, woken
        now if its idle wait would outlast that (a spare's delivery does not end the primary's wait)."""
        with self._cond:
            self._side_work_due = True
            if self._state.idle_until > self._next_side_work and self._state.idle_until != math.inf:
                self._wake_primary()

    def _keep_after_error(self, spans: list[ReadableSpan], exc: Exception) -> Tally:
        try:
            return self.road.keep(spans, f"delivery failed: {type(exc).__name__}")
        except Exception:  # counted dropped, with the first failure's reason
            _log.debug("keeping %d spans after a delivery failure failed too", len(spans), exc_info=True)
            return Tally(dropped=len(spans), reasons=[f"delivery failed: {type(exc).__name__}"])

    def close(self) -> None:
        """Shutdown and exit, after the flush deadline: in one step under the lock, stop taking spans
        (one that ends later is dropped and counted) and take everything not yet delivered, so no span
        slips in between to be sent after the final report; then hand it to the road's spool entrance.

        A batch whose request is still out is kept *held* (:meth:`Road.keep`): no replay sends that copy
        while its request may still be answered. Whichever comes second, the copy on disk or the answer
        (:meth:`_settle_late`), withdraws the copy and records the answer: a batch the endpoint accepted
        after all is not sent twice, and a refusal is reported. If the process ends first, the next one
        replays the copy (a duplicate at worst, never a loss: Langfuse upserts by span id)."""
        reason = "not delivered before the exit deadline"
        with self._cond:
            state = self._state
            if state.shutdown:
                return
            state.shutdown = True
            inflight = {first: spans for first, spans in state.inflight.items() if first not in state.settling}
            queued = [span for _, span in state.queue]
            state.queue.clear()
            for first in inflight:
                del state.inflight[first]
                state.retrying.pop(first, None)
                state.drained[first] = _Held()
            self._work.notify_all()
            self._spare.notify_all()
        if queued:
            self.ledger.record(self.road.keep(queued, reason))
        for first, spans in inflight.items():
            kept = self.road.keep(spans, reason, held=True)
            with self._cond:
                held = state.drained[first]
                held.files = kept.files
                answered = held.answer is not None
                if answered:
                    del state.drained[first]
            if answered:
                self._settle_late(held)  # the request was answered while its copy was being written
            else:
                self.ledger.record(kept)
        with self._cond:
            self._notify_waiters()  # flushes waiting for these spans see them recorded, never before

    def _settle_late(self, held: _Held) -> None:
        """A held batch's request was answered: that answer is the truth, the copy goes. Recorded first: a
        flush between the two saw neither the copy nor the answer (truthy while it was a refusal)."""
        if held.answer is not None:
            self.ledger.record(held.answer)
        self.road.withdraw(held.files or [])

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """The SDK's ``provider.shutdown()``: stop the workers. After ``Telemetry.shutdown`` the processor is
        already closed and this does not wait for anything (it used to flush again for up to 30 s, waiting
        for spans other threads kept ending); called on its own, it flushes first, bounded like
        :meth:`force_flush`. A worker still waiting for a slow endpoint is a daemon thread and is not
        waited for (its batch is held in the spool)."""
        with self._cond:
            closed = self._state.shutdown
        if not closed:
            self.flush_until(time.monotonic() + min(timeout_millis / 1000.0, self._max_force_flush))
            self.close()
        self.road.close()
        end = time.monotonic() + 0.1
        for worker in self._workers:
            worker.join(max(0.0, end - time.monotonic()))

    def queued(self) -> int:
        with self._cond:
            return len(self._state.queue) + sum(len(b) for b in self._state.inflight.values())
