"""Scores to Langfuse's ``POST /api/public/scores``: queued under a lock, sent with the next export.

Why not the Langfuse client's ``create_score``: its consumer thread wakes for every score and runs
the generated API client's per-item serialization (``get_type_hints`` per field), about 0.2 ms of
CPU per score on a thread that competes with the app for the GIL; on the email workload the two
scores per run cost more than all its spans (``bench/side_by_side.py``, ``BENCH_REMOVE=scores``).
Here a score is a JSON-ready dict appended to a list; the export worker sends what is queued after
each span batch it delivers (a score is made inside a span, so that span's export follows), and
every flush sends the rest before it reports. The request is what the SDK sends: a JSON array of
camelCase scores, gzip-free, with the same Basic auth.

Delivery: a batch the endpoint refuses for good (4xx other than 408/429) is dropped and counted;
anything else stays queued for the next attempt (a flush retries with backoff within its deadline;
the export worker tries once). At least once, like spans: a timed-out request may have arrived and is
sent again with the same score ids. The queue is bounded (oldest dropped, counted). Scores are not
spooled to disk: a process killed before its next export or flush loses them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from opentelemetry.instrumentation.utils import suppress_instrumentation

from otel_basic.redact import redact_url, redact_urls_in
from otel_basic.settings import Settings, basic_auth
from otel_basic.transport_options import httpx_client_options, proxy_configured
from otel_basic.transports.http_conn import FastConnection

__all__ = ["ScoreSender", "ScoreTally"]

_log = logging.getLogger("otel_basic")

SCORES_PATH = "/api/public/scores"
BATCH = 100  # scores per request; the SDK's 1 MB request limit is far away at this size


@dataclass
class ScoreTally:
    """What one :meth:`ScoreSender.send` did; ``waiting`` scores are still queued afterwards."""

    sent: int = 0
    dropped: int = 0
    waiting: int = 0
    reason: str | None = None


class ScoreSender:
    """A bounded queue of scores and the one place that posts them."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        client_options: dict[str, Any],
        *,
        max_queued: int = 10_000,
        fast: bool = False,
    ) -> None:
        self._url = url
        self._headers = headers
        self._client_options = client_options
        # Re-entrant: a SIGTERM handler's exit flush may run in a thread that holds one of them.
        self._lock = threading.RLock()  # the queue
        self._sending = threading.RLock()  # one sender at a time
        self._queue: deque[dict[str, Any]] = deque()
        self._max = max_queued
        self._overflowed = 0
        self._inflight = 0  # popped for a request that has not ended: still undelivered
        self._added = 0  # scores ever queued: a flush's target (see waiting_through)
        self._client: httpx.Client | None = None
        # no proxy is set: the export transport's keep-alive socket (fewer GIL round trips)
        self._fast = FastConnection.for_client(url, headers, client_options) if fast else None
        self._since_report = ScoreTally()
        if hasattr(os, "register_at_fork"):
            ref = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    @classmethod
    def from_settings(cls, settings: Settings) -> ScoreSender | None:
        if not (settings.langfuse_public_key and settings.langfuse_secret_key):
            return None
        headers = {
            "Authorization": basic_auth(settings.langfuse_public_key, settings.langfuse_secret_key),
            "Content-Type": "application/json",
            "x-langfuse-sdk-name": "otel-basic",
        }
        url = settings.langfuse_base_url.rstrip("/") + SCORES_PATH
        return cls(url, headers, httpx_client_options(settings), fast=not proxy_configured(settings))

    def __repr__(self) -> str:  # no headers (the secret key), no credentials from the URL
        return f"ScoreSender(url={redact_url(self._url)!r}, queued={self.queued()})"

    def _after_fork(self) -> None:
        """A fork child's queue is the parent's to send; its sockets and locks are not usable."""
        self._lock = threading.RLock()
        self._sending = threading.RLock()
        self._queue = deque()
        self._overflowed = 0
        self._inflight = 0
        self._added = 0
        self._client = None
        if self._fast is not None:
            self._fast = self._fast.fresh()
        self._since_report = ScoreTally()

    # --- use -----------------------------------------------------------------------------------

    def add(self, score: dict[str, Any]) -> None:
        """Queue one score (``timestamp`` is set here when missing); never blocks, never raises."""
        score.setdefault("timestamp", datetime.now(UTC).isoformat())
        with self._lock:
            if len(self._queue) >= self._max:
                self._queue.popleft()
                self._overflowed += 1
            self._queue.append(score)
            self._added += 1

    def mark(self) -> int:
        """The number of scores queued so far: a flush reports on those, not on scores made after it began."""
        with self._lock:
            return self._added

    def waiting_through(self, mark: int) -> int:
        """Scores among the first ``mark`` still undelivered. They leave in the order they came (a failed
        request puts its scores back in front), so the undelivered ones are the latest queued."""
        with self._lock:
            undelivered = len(self._queue) + self._inflight
            return max(0, min(undelivered, mark - self._added + undelivered))

    def queued(self) -> int:
        """Scores not delivered yet: queued, and in a request that has not ended."""
        with self._lock:
            return len(self._queue) + self._inflight

    def send(self, deadline: float, *, retry: bool = True) -> ScoreTally:
        """Post what is queued when called (in batches) until done, refused, or ``deadline``.

        Scores queued meanwhile wait for the next call: the export worker that calls this between
        span batches must not be kept from its spans by an app that scores continuously; for the
        same reason it passes ``retry=False`` (one attempt; a flush retries with backoff)."""
        tally = ScoreTally()
        if not self.queued() and not self._overflowed:
            return tally  # (a request in flight counts: waiting for it below is what a flush needs)
        if not self._sending.acquire(timeout=max(0.0, deadline - time.monotonic())):
            tally.waiting = self.queued()
            return tally
        try:
            with self._lock:
                tally.dropped, self._overflowed = self._overflowed, 0
                if tally.dropped:
                    tally.reason = "score queue full"
                budget = len(self._queue)
            backoff = 0.25
            while (left := deadline - time.monotonic()) > 0 and budget > 0:
                with self._lock:
                    batch = [self._queue.popleft() for _ in range(min(BATCH, budget, len(self._queue)))]
                    budget -= len(batch)
                    self._inflight = len(batch)
                if not batch:
                    break
                try:
                    outcome, refused = self._post(batch, left)
                finally:
                    with self._lock:
                        self._inflight = 0
                if outcome == "sent":
                    tally.sent += len(batch) - refused
                    tally.dropped += refused
                    tally.reason = tally.reason or (self._reason if refused else None)
                    continue
                if outcome == "refused":
                    tally.dropped += len(batch)
                    tally.reason = tally.reason or self._reason
                    continue
                with self._lock:  # back to the front, in order, for the next attempt
                    self._queue.extendleft(reversed(batch))
                    budget += len(batch)
                tally.reason = tally.reason or self._reason
                pause = min(backoff, deadline - time.monotonic())
                if not retry or pause <= 0.01:  # retries with backoff while the deadline allows, as spans do
                    break
                time.sleep(pause)
                backoff = min(backoff * 2, 4.0)
            with self._lock:
                self._since_report.sent += tally.sent
                self._since_report.dropped += tally.dropped
                if tally.dropped:
                    self._since_report.reason = tally.reason
            if tally.dropped:
                _log.warning("otel-basic: %d scores dropped: %s", tally.dropped, tally.reason)
        finally:
            self._sending.release()
        tally.waiting = self.queued()
        return tally

    def since_report(self, mark: int | None = None) -> ScoreTally:
        """Scores sent and dropped since the previous call (any sender), and those still queued (of the
        first ``mark``, when given: a flush's, so scores the app makes while it runs do not falsify it)."""
        with self._lock:  # not the sending lock: a report never waits for a slow request
            report, self._since_report = self._since_report, ScoreTally()
        report.waiting = self.queued() if mark is None else self.waiting_through(mark)
        if report.waiting and report.reason is None:
            report.reason = self._reason or "scores not sent before the deadline"
        return report

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        if self._fast is not None:
            self._fast.close()

    # --- one request ------------------------------------------------------------------------

    _reason: str | None = None

    def _post(self, batch: list[dict[str, Any]], timeout: float) -> tuple[str, int]:
        """("sent", scores refused within it: a 207), ("refused", 0) for a 4xx that retrying cannot
        help, or ("retry", 0) for network errors, 408, 429 and 5xx."""
        body = json.dumps(batch, separators=(",", ":"), default=str, allow_nan=False).encode()
        try:
            seconds = max(0.05, min(timeout, 30.0))
            with suppress_instrumentation():  # our own request is not the app's to trace
                if self._fast is not None:
                    response = self._fast.post(body, seconds, {})
                else:
                    if self._client is None:
                        self._client = httpx.Client(headers=self._headers, **self._client_options)
                    response = self._client.post(self._url, content=body, timeout=seconds)
        except Exception as exc:
            self._reason = redact_urls_in(f"scores not sent ({type(exc).__name__} sending to {self._url})")
            return "retry", 0
        status = response.status_code
        if status == 207:  # Langfuse accepted some and rejected others; rejected ones are not retried
            refused = _rejected(response, len(batch))
            self._reason = f"{refused} scores rejected by Langfuse (HTTP 207)"
            return "sent", refused
        if 200 <= status < 300:
            return "sent", 0
        self._reason = redact_urls_in(f"scores not sent (HTTP {status} from {self._url})")
        return ("retry" if status in (408, 429) or status >= 500 else "refused"), 0


def _rejected(response: httpx.Response, size: int) -> int:
    try:
        count = int(response.json().get("rejected", 0))
    except Exception:  # a 207 without the documented body: count nothing refused, say so
        _log.debug("207 from the scores endpoint without a readable rejected count", exc_info=True)
        return 0
    return max(0, min(count, size))
