"""Where every span the process made went: one ledger, fed only by the road's tallies.

The processor's workers, the overflow and exit paths and every replay record the :class:`Tally`
the road returned, so each span is counted once, in one bucket. A flush report is the difference
between now and the previous report: failures that happened in the background between two flushes
(a per-step export against a dead endpoint) are reported by the next flush, whoever calls it. They
are also logged when they happen: once per reason until the next report.

A reconfiguration keeps the ledger: threads of the pipeline it replaces (an export or a spool replay
still waiting for an answer after the exit deadline) may settle spans after that pipeline's final
report, and a rejection they record must reach the next flush's report, not a ledger nobody reads.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

from otel_basic.road import Tally

_log = logging.getLogger("otel_basic")


@dataclass(frozen=True)
class Totals:
    """Running totals since the pipeline started (or since ``fork()`` in a child)."""

    created: int = 0
    delivered: int = 0
    spooled: int = 0
    rejected: int = 0
    dropped: int = 0
    requests: int = 0
    last_reason: str | None = None

    def minus(self, earlier: Totals) -> Totals:
        return Totals(
            self.created - earlier.created,
            self.delivered - earlier.delivered,
            self.spooled - earlier.spooled,
            self.rejected - earlier.rejected,
            self.dropped - earlier.dropped,
            self.requests - earlier.requests,
            self.last_reason,
        )


class Ledger:
    """Locks are re-entrant everywhere on the flush path: a SIGTERM handler runs in the main thread
    between two bytecodes, possibly while that thread holds this lock (``created`` in ``on_end``);
    a plain lock would make the exit flush wait for itself forever."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._totals = Totals()  # everything but ``created``, which is the counter below
        self._created = 0
        self._reported = Totals()
        self._reasons_since_report: dict[str, None] = {}  # distinct, in order (a dict keeps it)
        self._warned: set[str] = set()

    @property
    def totals(self) -> Totals:
        with self._lock:
            return replace(self._totals, created=self._created)

    def created(self, n: int = 1) -> None:
        """Called for every span that ends: a counter, not a new Totals each time."""
        with self._lock:
            self._created += n

    def record(self, tally: Tally) -> None:
        """Add one tally; log a failure the first time its reason appears in a report period."""
        reason = tally.reason
        with self._lock:
            t = self._totals
            self._totals = Totals(
                t.created,
                t.delivered + tally.delivered,
                t.spooled + tally.spooled,
                t.rejected + tally.rejected,
                t.dropped + tally.dropped,
                t.requests + tally.requests,
                reason if tally.failed and reason else t.last_reason,
            )
            warn = False
            if tally.failed:
                if reason:
                    self._reasons_since_report.pop(reason, None)
                    self._reasons_since_report[reason] = None  # the latest last
                warn = (reason or "") not in self._warned
                self._warned.add(reason or "")
        if warn:
            _log.warning(
                "otel-basic: spans not delivered (%s): %d spooled, %d rejected, %d dropped; "
                "the next flush reports the totals",
                reason or "export failed",
                tally.spooled,
                tally.rejected,
                tally.dropped,
            )

    def since_report(self, *, new_period: bool = True) -> tuple[Totals, str | None]:
        """What changed since the previous report, and the latest failure reason; starts a new period
        unless ``new_period`` is False (a pipeline replaced by ``configure()``: nobody reads its final
        report, so the next pipeline's first flush reports it again)."""
        with self._lock:
            now = self.totals
            diff = now.minus(self._reported)
            reason = _reasons(self._reasons_since_report)
            if not new_period:
                return diff, reason
            self._reported = now
            self._reasons_since_report = {}
            self._warned.clear()
            return diff, reason

    def reset(self) -> None:
        """In a fork child: the parent's history is the parent's to report."""
        self._lock = threading.RLock()
        self._totals = self._reported = Totals()
        self._created = 0
        self._reasons_since_report = {}
        self._warned = set()


def _reasons(reasons: dict[str, None], most: int = 3) -> str | None:
    """The latest distinct failure reasons, newest first: a report that counts spans dropped after a
    shutdown and a later timeout names both (it named only the latest, over spans it did not explain)."""
    latest = list(reasons)[::-1]
    if not latest:
        return None
    more = f"; and {len(latest) - most} more" if len(latest) > most else ""
    return "; ".join(latest[:most]) + more
