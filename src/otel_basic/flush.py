"""Flush with one deadline and the whole truth: provider first, then the spool, then the Langfuse client.

``flush`` blocks the calling thread until every span created before the call is done or the deadline
passes; ``aflush`` does the same without blocking the event loop (an export worker resolves an asyncio
future). Then spans waiting in the spool get one more attempt. The report covers everything since the
previous report (:class:`~otel_basic.ledger.Ledger`), so background failures are never lost between
flushes, and it is truthy only if nothing the process made before it began is undelivered when it
returns: queued scores (:mod:`otel_basic.score_sender`) are sent next, and one made before the flush
that is dropped or still queued makes the report false (one made meanwhile is the next flush's). The
Langfuse client's own flush (``@observe`` users' scores, media) has unbounded joins, so it runs in one
shared helper thread that callers wait on with their remaining time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.instrumentation.utils import suppress_instrumentation

from otel_basic.ledger import Ledger
from otel_basic.processor import DeliveryProcessor
from otel_basic.road import Deadline, Road
from otel_basic.score_sender import ScoreSender

_log = logging.getLogger("otel_basic")


@dataclass(frozen=True)
class FlushReport:
    """What happened to the process's spans since the previous report, and what is still waiting.

    Since the previous report: ``exported`` arrived (including spans replayed from the spool);
    ``rejected`` were refused for good by the endpoint (kept in the spool's ``rejected/``);
    ``dropped`` are gone (a reason is in ``error``); ``spooled`` went to the on-disk spool after a
    failed attempt. At the moment of return: ``pending`` are still in memory (the deadline came
    first); ``in_spool`` wait on disk for a later attempt. Truthy only when nothing was rejected or
    dropped and nothing is pending or waiting in the spool. ``error`` is a redacted reason.
    """

    exported: int = 0
    rejected: int = 0
    dropped: int = 0
    spooled: int = 0
    pending: int = 0
    in_spool: int = 0
    duration: float = 0.0
    error: str | None = None
    enabled: bool = True

    def __bool__(self) -> bool:
        return (
            self.rejected == 0 and self.dropped == 0 and self.pending == 0 and self.in_spool == 0 and self.error is None
        )

    @property
    def ok(self) -> bool:
        return bool(self)

    @property
    def failed(self) -> int:
        """Spans not delivered: rejected and dropped since the previous report, and those waiting in the spool."""
        return self.rejected + self.dropped + self.in_spool

    def summary(self) -> str:
        if not self.enabled and self == DISABLED_REPORT:
            return "telemetry disabled: nothing to flush"
        text = ("telemetry shut down: " if not self.enabled else "") + (
            f"exported={self.exported} rejected={self.rejected} dropped={self.dropped} "
            f"spooled={self.spooled} pending={self.pending} in_spool={self.in_spool} in {self.duration:.3f}s"
        )
        return text + (f" ({self.error})" if self.error else "")


DISABLED_REPORT = FlushReport(enabled=False)


class _SideFlush:
    """Runs a blocking callable in at most one helper thread at a time; callers share it."""

    def __init__(self, target: Callable[[], None]) -> None:
        self._target = target
        self._lock = threading.RLock()
        self._done: threading.Event | None = None
        self.error: str | None = None

    def start(self) -> threading.Event:
        with self._lock:
            if self._done is not None and not self._done.is_set():
                return self._done
            done = self._done = threading.Event()

        def run() -> None:
            try:
                with suppress_instrumentation():  # the client's own HTTP is not the app's to trace
                    self._target()
                self.error = None
            except Exception as exc:
                self.error = f"Langfuse client flush failed: {type(exc).__name__}"
            finally:
                done.set()

        threading.Thread(target=run, name="otel-basic-langfuse-flush", daemon=True).start()
        return done


class Flusher:
    """Flushes one pipeline: its processor, its road's spool, and the optional Langfuse client."""

    def __init__(
        self,
        processor: DeliveryProcessor,
        road: Road,
        ledger: Ledger,
        *,
        default_timeout: float,
        langfuse_flush: Callable[[], None] | None = None,
        scores: ScoreSender | None = None,
    ) -> None:
        self.processor = processor
        self.scores = scores
        self.road = road
        self.ledger = ledger
        self.default_timeout = default_timeout
        self._side = _SideFlush(langfuse_flush) if langfuse_flush is not None else None

    def _deadline(self, started: float, timeout: float | None) -> float:
        seconds = self.default_timeout if timeout is None else timeout
        if math.isnan(seconds) or seconds < 0:  # NaN or negative: no waiting
            seconds = 0.0
        return started + min(seconds, 1e6)

    def _score_mark(self) -> int | None:
        return self.scores.mark() if self.scores is not None else None

    def _score_error(self, mark: int | None) -> str | None:
        if self.scores is None:
            return None
        tally = self.scores.since_report(mark)
        if tally.dropped or tally.waiting:
            return f"{tally.dropped} scores dropped, {tally.waiting} still queued ({tally.reason})"
        return None

    def _report(
        self,
        target: int,
        started: float,
        side_error: str | None,
        *,
        new_period: bool = True,
        score_mark: int | None = None,
    ) -> FlushReport:
        """What the flush achieved for the spans enqueued before ``target`` and the scores before
        ``score_mark`` (None: every score queued now)."""
        pending = self.processor.pending_after(target)
        in_spool = self.road.spool_waiting()
        diff, reason = self.ledger.since_report(new_period=new_period)
        report = FlushReport(
            exported=diff.delivered,
            rejected=diff.rejected,
            dropped=diff.dropped,
            spooled=diff.spooled,
            pending=pending,
            in_spool=in_spool,
            duration=time.monotonic() - started,
        )
        if diff.rejected or diff.dropped:
            error: str | None = reason or "export failed"
        elif pending:
            error = "flush deadline reached with spans still pending"
            if (why := self.processor.retry_reason()) is not None:
                error += f" (an export is retrying after: {why})"
            elif (out := self.processor.unanswered_for()) >= 1.0:
                error += f" (a request has been out {out:.1f} s without an answer)"
        elif in_spool:
            error = f"{in_spool} spans wait in the spool ({reason or diff.last_reason or 'endpoint unavailable'})"
        else:
            error = self._score_error(score_mark) or side_error
        return FlushReport(**{**report.__dict__, "error": error})

    def _start_replay(self, end: float) -> threading.Event | None:
        """Earlier failures wait in the spool: if the endpoint is back, a flush sends them too.

        On a thread of its own (never a shared executor, where a short ``aflush`` would queue behind
        long ones), waited for until ``end``: no batch starts after the flush's deadline, but a request
        under way is not cut by it (a request cut short that the endpoint then accepts would go back
        to the spool and be sent twice); what it settles later is recorded in the ledger and reported
        by the next flush, and this flush counts its batch as still in the spool. Copies an exit drain
        holds while their requests are out (a pipeline this one replaced) are waited for too: the answer
        settles them. None: nothing to do."""
        if end - time.monotonic() <= 0 or not self.road.spool_waiting():
            return None

        def replay() -> None:
            self.road.replay(deadline=Deadline(math.inf, lambda: end), record=self.ledger.record)
            while self.road.held_here() and time.monotonic() < end:
                time.sleep(0.01)

        return _on_thread("otel-basic-flush-replay", replay, "spool replay in a flush")

    def _start_scores(self, end: float) -> threading.Event | None:
        """Queued scores go out on a thread of their own, bounded by ``end``. None: nothing queued."""
        if self.scores is None or not self.scores.queued():
            return None
        scores = self.scores
        return _on_thread("otel-basic-flush-scores", lambda: scores.send(end), "sending scores in a flush")

    def _side_started(self, end: float) -> threading.Event | None:
        """Start the Langfuse client's flush (scores, media) if there is time left for it."""
        if self._side is None or end - time.monotonic() <= 0:
            return None
        return self._side.start()

    def _side_error(self, finished: bool) -> str | None:
        if not finished:
            return "Langfuse client flush did not finish before the deadline"
        return self._side.error if self._side is not None else None

    def after_shutdown(self) -> FlushReport:
        """A flush of a shut-down pipeline sends nothing. It reports like any flush: what was settled since
        the last report (a span that ended after the shutdown is dropped; a held batch's late answer) and
        what still waits (in the spool, held copies included), so it is truthy only if all of that is
        nothing: ``DISABLED_REPORT`` said "nothing to flush" over dropped and spooled spans."""
        report = self._report(sys.maxsize, time.monotonic(), None)
        return dataclasses.replace(report, enabled=False, duration=0.0)

    def flush(self, timeout: float | None = None, *, final: bool = False, new_period: bool = True) -> FlushReport:
        """``final`` (shutdown, exit): after the deadline, spans still in memory go to the spool.
        ``new_period=False``: the report does not start a new period (see :meth:`Ledger.since_report`)."""
        started = time.monotonic()
        end = self._deadline(started, timeout)
        score_mark = None if final else self._score_mark()  # at exit no flush comes next: every score counts
        target = self.processor.flush_until(end)
        for start in (self._start_replay, self._start_scores):
            started_work = start(end)
            if started_work is not None:
                started_work.wait(max(0.0, end - time.monotonic()))
        side = self._side_started(end)
        side_error = None if side is None else self._side_error(side.wait(max(0.0, end - time.monotonic())))
        if final:
            self.processor.close()
        return self._report(target, started, side_error, new_period=new_period, score_mark=score_mark)

    async def aflush(self, timeout: float | None = None) -> FlushReport:
        """As :meth:`flush`, and the event loop never blocks: it awaits the workers and helper threads."""
        started = time.monotonic()
        end = self._deadline(started, timeout)
        loop = asyncio.get_running_loop()
        score_mark = self._score_mark()
        target, future = self.processor.flush_future(end, loop)
        try:
            await asyncio.wait_for(asyncio.shield(future), max(0.0, end - time.monotonic()))
        except TimeoutError:
            pass
        finally:
            self.processor.forget_future(future)
        for start in (self._start_replay, self._start_scores):
            started_work = start(end)
            if started_work is not None:
                await _wait_event(started_work, max(0.0, end - time.monotonic()), loop)
        side = self._side_started(end)
        side_error = None
        if side is not None:
            side_error = self._side_error(await _wait_event(side, max(0.0, end - time.monotonic()), loop))
        return self._report(target, started, side_error, score_mark=score_mark)


def _on_thread(name: str, target: Callable[[], object], what: str) -> threading.Event:
    """Run ``target`` on a daemon thread of its own; the event is set when it ends, however it ends."""
    done = threading.Event()

    def run() -> None:
        try:
            target()
        except Exception:  # the road and the score sender contain their errors; this guards their bugs
            _log.debug("%s failed", what, exc_info=True)
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    return done


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
