"""The one road out: every span that leaves the process, or reaches the disk, takes it.

Read top to bottom; each stage is a small object or function with a typed result::

    1. PREPARE   Langfuse fields, mask, size-limit each span, once  -> list[ReadableSpan] (nothing raw past here)
    2. ENCODE    one OTLP ExportTraceServiceRequest (otlp_encode) -> Batch (message + span count)
    3. SEND      the transport, instrumentation suppressed    -> SendResult (delivered | partial | rejected
                                                                  | retryable | too_large), one deadline
    4. SPLIT     too_large: halve and re-enter 3; a single span is shrunk, then given up as rejected;
                 one over Road.request_limit (a 413 learned) is halved, or shrunk, before it is sent
    5. SETTLE    what was not delivered: retryable -> spool (masked bytes), rejected -> spool's rejected/,
                 no spool or a refusing disk -> dropped with a reason    -> Tally (every span, one bucket)

Every path that moves spans enters at a numbered stage, and none has a copy of a stage:

* live export (the processor's workers):   :meth:`Road.deliver`  = 1 → 5
* an event loop's batch, prepared:          :meth:`Road.ready` = 1, 2; :meth:`Road.send_on_loop` or
  (several joined, on a worker) :meth:`Road.attempt` = 3 once; :meth:`Road.resume` = 3 → 5
* queue overflow and the exit drain:        :meth:`Road.keep`     = 1, 2, then the spool (5)
* spool replay (flush, idle timer, start, ``otel-basic replay``): :meth:`Road.replay` = 3 → 5
* the doctor's canary:                      :meth:`Road.probe`    = 1 → 4, never spooled

So "masked before disk", "never traced by ourselves" (only :meth:`Road._send` calls a transport, inside
``suppress_instrumentation``) and "counted exactly once" (every call returns a :class:`Tally` that puts
each span in one bucket) hold by construction. No stage raises: an exception anywhere is contained,
the batch is spooled (masked) or counted dropped with the reason.
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.instrumentation.utils import _SUPPRESS_INSTRUMENTATION_KEY_PLAIN, suppress_instrumentation
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.util.types import AnyValue

from otel_basic.langfuse_fields import langfuse_visible
from otel_basic.limits import Limiter
from otel_basic.otlp_encode import encode_message
from otel_basic.spool import MASK_LEVELS, ClaimedBatch, Spool

_log = logging.getLogger("otel_basic")

_SHRINK_ROUNDS = 4
_SHRINK_MIN_CHARS = 256
# A 413 teaches a body limit (Road.request_limit) only for a request at least this big: no endpoint refuses
# bodies that small by configuration (nginx's default limit is 1 MiB, the Langfuse SDK's batches go up to
# 64 MiB), so one such refusal is a fluke, and learning from it made every later request a single span.
LEARN_FROM_BYTES = 64 * 1024
# ... and only for this long: the endpoint's limit may be raised, and a request under the learned limit
# never shows it. Once forgotten, the next big request is refused at most once more and teaches it again.
LEARNED_FOR = 60.0
# ... and a later, smaller refusal lowers a known limit at most this many times at once: a fluke on a tiny
# request then costs smaller requests for a while, not single-span ones.
REFINE_AT_MOST = 4


# --- typed results -------------------------------------------------------------------------------------


SendKind = Literal["delivered", "partial", "rejected", "retryable", "too_large"]


@dataclass(frozen=True)
class SendResult:
    """What one request to the endpoint achieved. ``reason`` is redacted (no credential, no header).

    ``partial``: the endpoint answered with OTLP ``partial_success``; ``rejected_spans`` of the batch
    were refused for good, the rest arrived. ``answer_seconds``: how long the endpoint took to answer
    once the request was written, when the transport knows (the processor's "is the endpoint slow?").
    """

    kind: SendKind
    reason: str | None = None
    rejected_spans: int = 0
    status: int | None = None
    answer_seconds: float | None = None
    retry_after: float | None = None  # the endpoint's Retry-After, seconds (an event loop's attempt)

    @staticmethod
    def ok() -> SendResult:
        return _DELIVERED


_DELIVERED = SendResult("delivered")


@dataclass
class Tally:
    """Where the spans of one call went. Each span is in exactly one bucket.

    ``spooled``: written to the spool (masked) to be sent later; ``rejected``: refused for good by the
    endpoint (kept in the spool's ``rejected/`` when there is one); ``dropped``: gone (counted, with a
    reason: no spool, a refusing disk, the spool's size cap evicted them). ``requests``: HTTP/gRPC
    requests made. A replay's ``delivered`` counts spans that were waiting in the spool.
    ``answer_seconds``: the slowest answer time the transport reported (None: none reported).
    """

    delivered: int = 0
    spooled: int = 0
    rejected: int = 0
    dropped: int = 0
    requests: int = 0
    reasons: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # spool/rejected files written (see Road.withdraw)
    answer_seconds: float | None = None

    @property
    def failed(self) -> int:
        return self.spooled + self.rejected + self.dropped

    def add(self, other: Tally) -> Tally:
        self.delivered += other.delivered
        self.spooled += other.spooled
        self.rejected += other.rejected
        self.dropped += other.dropped
        self.requests += other.requests
        self.files += other.files
        if other.answer_seconds is not None:
            self.answer_seconds = max(self.answer_seconds or 0.0, other.answer_seconds)
        for reason in other.reasons:
            self._reason(reason)
        return self

    def _reason(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) if self.reasons else None


@dataclass(frozen=True)
class Batch:
    """An encoded, already masked request and the number of spans in it."""

    message: ExportTraceServiceRequest
    spans: int

    @staticmethod
    def of(message: ExportTraceServiceRequest) -> Batch:
        return Batch(message, count_spans(message))


@dataclass(frozen=True)
class Deadline:
    """When a send ends, as ``time.monotonic()`` values. Two bounds, because cutting a request short is not
    free: ``at`` bounds the request under way (the export's own timeout), so a flush that stops waiting never
    cuts a request the endpoint is about to accept (it would be spooled and sent twice); ``retry_by()`` bounds
    starting another attempt (a retry, a split batch's next part after a failure, the next spooled batch), so a
    flush waiting on a failing endpoint still gets the reason within its own deadline."""

    at: float
    retry_by: Callable[[], float] | None = None
    on_retry: Callable[[str], None] | None = None  # told why before each wait for a retry (a flush reports it)

    def retries_end(self) -> float:
        """No new attempt starts at or after this."""
        return self.at if self.retry_by is None else min(self.at, self.retry_by())

    def wait_to_retry(
        self, seconds: float, stop: threading.Event, end: float | None = None, reason: str | None = None
    ) -> bool:
        """Sleep ``seconds`` before a retry; False (at once) when the retry would start after ``end`` or
        :meth:`retries_end`, or ``stop`` is set. ``retries_end`` is asked afresh every 50 ms: a flush that
        begins during a long backoff (a 503's, a ``Retry-After: 4``) learns the reason within its own
        deadline instead of seeing only "pending". ``reason`` (the failed attempt's) goes to ``on_retry``
        first, so a flush whose deadline comes while the retry is out can say why it is pending."""
        if reason and self.on_retry is not None:
            self.on_retry(reason)
        wake = time.monotonic() + seconds
        while True:
            limit = self.retries_end() if end is None else min(end, self.retries_end())
            if wake > limit:
                return False
            left = wake - time.monotonic()
            if left <= 0:
                return True
            if stop.wait(min(left, 0.05)):
                return False


def as_deadline(deadline: float | Deadline) -> Deadline:
    return deadline if isinstance(deadline, Deadline) else Deadline(deadline)


class Transport(Protocol):
    """Stage 3's peer: sends one request within ``deadline``.

    Implementations retry what is worth retrying inside the deadline and never raise for a failed
    send; :meth:`Road._send` still contains anything they raise.
    """

    endpoint: str

    def send(self, request: ExportTraceServiceRequest, deadline: Deadline) -> SendResult: ...

    def reopen(self) -> None:
        """Re-create sockets and locks after ``fork()``: the parent's are not the child's."""

    def close(self) -> None: ...


# --- stage 1: prepare ----------------------------------------------------------------------------------


class SpanMasker(Protocol):
    @property
    def level(self) -> str: ...

    def mask_span(self, span: ReadableSpan) -> ReadableSpan: ...

    def mask_attributes(self, attrs: Mapping[str, AnyValue] | None) -> dict[str, AnyValue]: ...


@dataclass(frozen=True)
class Prepare:
    """Make each span's facts visible to Langfuse (:func:`~otel_basic.langfuse_fields.langfuse_visible`:
    stack traces, failure location, metadata; before masking, so what it copies is masked too),
    then mask, then size-limit: every span once. Never raises: a span the masker cannot process
    becomes its skeleton (same ids and timing, no attributes)."""

    masker: SpanMasker | None
    limiter: Limiter

    @property
    def mask_level(self) -> str:
        return self.masker.level if self.masker is not None else "off"

    def __call__(self, spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
        return [self.one(span) for span in spans]

    def one(self, span: ReadableSpan) -> ReadableSpan:
        try:
            span = langfuse_visible(span) or span
        except Exception:  # a presentation step must never cost a span
            _log.debug("langfuse_visible failed for %r", span.name, exc_info=True)
        if self.masker is not None:
            span = self.masker.mask_span(span)
        return self.limiter.limit_span(span)


# --- stage 2: encode -----------------------------------------------------------------------------------


def backoff(attempt: int) -> float:
    """The wait before retry ``attempt + 1`` of a retryable answer without ``Retry-After``: exponential
    from 0.25 s, at most 8 s, jittered by ±20% so processes that failed together do not retry together."""
    return min(8.0, 0.25 * 2.0 ** (attempt - 1)) * random.uniform(0.8, 1.2)


def suppressed_context() -> contextvars.Context:
    """A fresh context with instrumentation suppressed, for a task that sends (see
    :meth:`Road.send_on_loop`): never detached, it goes with the task."""
    ctx = contextvars.Context()
    ctx.run(_suppress)
    return ctx


def _suppress() -> None:
    value = otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True)
    otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY_PLAIN, True, value))


def encode(spans: Sequence[ReadableSpan]) -> Batch:
    return Batch(encode_message(spans), len(spans))


def join(batches: Sequence[Batch]) -> Batch:
    """One request for prepared batches that wait together: their resource spans side by side, as an
    OTLP request allows (Langfuse reads each ``ResourceSpans`` with its own resource)."""
    message = ExportTraceServiceRequest()
    for batch in batches:
        message.resource_spans.extend(batch.message.resource_spans)
    return Batch(message, sum(batch.spans for batch in batches))


def resent_at_once(first: SendResult | None) -> bool:
    """Whether :meth:`Road.resume` sends a prepared batch again at once: its first attempt got no answer,
    or no HTTP answer (refused, reset, timed out), so there is no status or ``Retry-After`` to honour."""
    return first is None or (first.kind == "retryable" and first.status is None)


def count_spans(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def split_request(request: ExportTraceServiceRequest) -> tuple[Batch, Batch]:
    """Two requests with half of the spans each, keeping each span's resource and scope."""
    flat = [
        (ri, si, span)
        for ri, rs in enumerate(request.resource_spans)
        for si, ss in enumerate(rs.scope_spans)
        for span in ss.spans
    ]
    mid = len(flat) // 2
    return _build(request, flat[:mid]), _build(request, flat[mid:])


def _build(request: ExportTraceServiceRequest, part: list[tuple[int, int, PbSpan]]) -> Batch:
    out = ExportTraceServiceRequest()
    resources: dict[int, ResourceSpans] = {}
    scopes: dict[tuple[int, int], ScopeSpans] = {}
    for ri, si, span in part:
        if ri not in resources:
            source = request.resource_spans[ri]
            resources[ri] = out.resource_spans.add(resource=source.resource, schema_url=source.schema_url)
        if (ri, si) not in scopes:
            source_ss = request.resource_spans[ri].scope_spans[si]
            scopes[(ri, si)] = resources[ri].scope_spans.add(scope=source_ss.scope, schema_url=source_ss.schema_url)
        scopes[(ri, si)].spans.append(span)
    return Batch(out, len(part))


def shrink_single(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest | None:
    """The one span of ``request`` with its longest string attribute cut to a quarter (and a marker);
    None when nothing long is left to cut."""
    shrunk = ExportTraceServiceRequest()
    shrunk.CopyFrom(request)
    span = shrunk.resource_spans[0].scope_spans[0].spans[0]
    longest = max(
        (kv for kv in span.attributes if kv.value.WhichOneof("value") == "string_value"),
        key=lambda kv: len(kv.value.string_value),
        default=None,
    )
    if longest is None or len(longest.value.string_value) < _SHRINK_MIN_CHARS:
        return None
    value = longest.value.string_value
    longest.value.string_value = (
        value[: len(value) // 4] + f"…[truncated by otel-basic after HTTP 413: original {len(value)} chars]"
    )
    return shrunk


# --- the road ------------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    """Stages 3-4's result for one batch, before settling: what arrived and what is left, by kind."""

    delivered: int = 0
    requests: int = 0
    retryable: list[Batch] = field(default_factory=list)
    rejected: list[tuple[Batch, str]] = field(default_factory=list)
    partial_rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    last: SendResult | None = None
    answer_seconds: float | None = None


class Road:
    """Stages 1-5 wired together for one destination. ``spool`` is None on the file route."""

    def __init__(self, prepare: Prepare, transport: Transport, spool: Spool | None) -> None:
        self.prepare = prepare
        self.transport = transport
        self.spool = spool
        self._replaying = threading.RLock()  # one replay at a time per process: a flush waits for it
        # The smallest request (encoded bytes, before compression) the endpoint refused as too large, and
        # until when it counts: one over half of it is split before it is sent, not after one more round
        # trip of 413 per half (see LEARN_FROM_BYTES, LEARNED_FOR).
        self.refused_bytes: int | None = None
        self._refused_until = 0.0

    @property
    def endpoint(self) -> str:
        return self.transport.endpoint

    # --- entry points ----------------------------------------------------------------------------------

    def deliver(self, spans: Sequence[ReadableSpan], deadline: float | Deadline) -> Tally:
        """Live export: stages 1 → 5."""
        batch = self._prepare(spans)
        if batch is None:
            return self._settle_unencodable(spans)
        return self._settle(self._send_all(batch, as_deadline(deadline)))

    # The event-loop path (see otel_basic.loop_export): stages 1-2, then one attempt of stage 3 sent
    # from the app's event loop; anything but a delivery continues at stage 3 on an export worker.

    @property
    def loop_capable(self) -> bool:
        """Whether the transport can make stage 3's first attempt from an event loop."""
        return bool(getattr(self.transport, "loop_capable", False))

    def ready(self, spans: Sequence[ReadableSpan]) -> Batch | None:
        """Stages 1 and 2 (None: not even the skeletons encode; :meth:`resume` settles that)."""
        return self._prepare(spans)

    async def send_on_loop(self, batch: Batch, timeout: float) -> SendResult:
        """Stage 3, one attempt, from the running event loop; run it in a task made with
        :func:`suppressed_context` (instrumentation suppressed for the task's whole life: a ``with``
        around the await could be left in another context when a loop closes with it pending, and
        logged "Failed to detach context"). Never raises."""
        send = getattr(self.transport, "send_on_loop", None)
        if send is None:
            return SendResult("retryable", "no event-loop path to this endpoint")
        try:
            result: SendResult = await send(batch.message, timeout)
        except Exception as exc:  # a transport bug: the batch goes on to the workers, not lost
            _log.debug("transport raised on the event loop", exc_info=True)
            result = SendResult("retryable", f"sending failed: {type(exc).__name__}")
        return result

    def attempt(self, batch: Batch, deadline: float | Deadline) -> SendResult:
        """Stage 3, one attempt, from an export worker, for a batch the caller may take apart on a 413
        (a joined one: its parts go to several workers at once; halving here sends them one by one);
        anything else goes on with :meth:`resume`."""
        result = self._send(batch, as_deadline(deadline))
        if result.kind == "too_large":
            self._refused(batch)
        return result

    def delivered(self, batch: Batch, result: SendResult) -> Tally:
        """The tally of a first attempt that delivered the whole batch."""
        return Tally(delivered=batch.spans, requests=1, answer_seconds=result.answer_seconds)

    def resume(
        self, spans: Sequence[ReadableSpan], batch: Batch | None, deadline: float | Deadline, first: SendResult | None
    ) -> Tally:
        """Stages 3 → 5 for a batch :meth:`ready` prepared, after its first attempt from an event loop
        (``first``; None: it never got an answer, it is sent again, a duplicate at worst, which Langfuse
        upserts by span id). That answer counts: a refusal or a partial success is settled as it is, a
        413 splits, and a retryable HTTP answer is retried after its ``Retry-After`` or the first backoff
        (a connection error at once: the transport retries once, then the spool keeps the batch)."""
        if batch is None:
            return self._settle_unencodable(spans)
        bound = as_deadline(deadline)
        if first is None or resent_at_once(first):  # (None spelled out: mypy narrows on it)
            # No answer, or no HTTP answer (refused, reset, timed out): the transport's own retry comes
            # at once and then the spool (a backoff first left a killed process's spans nowhere).
            return self._settle(self._send_all(batch, bound))
        if first.kind == "retryable":
            wait = first.retry_after if first.retry_after is not None else backoff(1)
            if not bound.wait_to_retry(wait, threading.Event(), bound.at, first.reason):
                return self._settle(_Outcome(retryable=[batch], requests=1, reasons=[first.reason or "retryable"]))
            return self._settle(self._send_all(batch, bound))
        return self._settle(self._send_all(batch, bound, first))

    def keep(self, spans: Sequence[ReadableSpan], reason: str, *, held: bool = False) -> Tally:
        """Spans that cannot stay in memory (queue overflow, exit drain): stages 1, 2, then the spool.
        ``held`` (a copy of a batch whose request is still out): no replay takes it while this process
        lives; :meth:`withdraw` it once that request is answered (see :meth:`Spool.write`)."""
        batch = self._prepare(spans)
        if batch is None:
            return self._settle_unencodable(spans)
        if held:
            return self._to_spool(batch, held=True).add(Tally(reasons=[reason]))
        return self._settle(_Outcome(retryable=[batch], reasons=[reason]))

    def probe(self, spans: Sequence[ReadableSpan], deadline: float) -> tuple[Tally, SendResult | None]:
        """The doctor's canary: stages 1 → 4, nothing spooled. Returns the tally and the last verdict."""
        batch = self._prepare(spans)
        if batch is None:
            return Tally(dropped=len(spans), reasons=["could not encode the spans"]), None
        outcome = self._send_all(batch, Deadline(deadline))
        tally = Tally(delivered=outcome.delivered, requests=outcome.requests, reasons=list(outcome.reasons))
        tally.rejected = outcome.partial_rejected + sum(b.spans for b, _ in outcome.rejected)
        tally.dropped = sum(b.spans for b in outcome.retryable)
        return tally, outcome.last

    def replay(self, deadline: float | Deadline | None = None, max_batches: int | None = None,
               progress: Callable[[int], None] | None = None,
               record: Callable[[Tally], None] | None = None) -> Tally:
        """Send spooled batches, oldest first, through stages 3 → 5, until one fails for a retryable
        reason (the endpoint is still down), ``deadline`` (no batch starts after its ``retries_end``)
        or ``max_batches``. Returns the total; ``record`` (a ledger's) gets each batch's tally before
        the replay ends, so a flush that waited for this replay to end reports what it settled (the
        caller recording the total afterwards raced such a flush). Pass ``record`` or record the total,
        never both."""
        tally = Tally()
        if self.spool is None:
            return tally
        bound = None if deadline is None else as_deadline(deadline)
        wait = -1.0 if bound is None else max(0.0, bound.retries_end() - time.monotonic())
        if not self._replaying.acquire(timeout=wait):
            return tally  # another replay of ours is still at it
        try:
            for claimed in self.spool.claim(max_batches=max_batches, until=bound.retries_end if bound else None):
                each = bound or Deadline(time.monotonic() + 30.0)  # no deadline: 30 s per batch
                outcome, still_failing = self._replay_one(claimed, each, record)
                tally.add(outcome)
                if progress is not None:
                    progress(tally.delivered)
                if still_failing:
                    break  # the endpoint still fails: leave the rest for later
        finally:
            self._replaying.release()
        return tally

    def withdraw(self, files: Sequence[str]) -> int:
        """Remove spool files whose spans were settled after all (a held copy whose request was then
        answered). Returns the spans withdrawn."""
        return self.spool.withdraw(files) if self.spool is not None else 0

    def held_here(self) -> int:
        """Spans this process holds in the spool while their requests are out (see :meth:`keep`)."""
        return self.spool.held_here() if self.spool is not None else 0

    def spool_waiting(self) -> int:
        """Spans waiting in the spool for this destination (all processes')."""
        return self.spool.waiting_spans() if self.spool is not None else 0

    def reopen(self) -> None:
        self._replaying = threading.RLock()
        self.transport.reopen()
        if self.spool is not None:
            self.spool.reopen()

    def close(self) -> None:
        try:
            self.transport.close()
        except Exception:
            _log.debug("closing the transport failed", exc_info=True)

    # --- stages ----------------------------------------------------------------------------------------

    def _prepare(self, spans: Sequence[ReadableSpan]) -> Batch | None:
        """Stages 1 and 2. None only if even the skeletons cannot be encoded."""
        try:
            return encode(self.prepare(spans))
        except Exception:
            _log.debug("preparing %d spans failed", len(spans), exc_info=True)
            return None

    def _send(self, batch: Batch, deadline: Deadline) -> SendResult:
        """Stage 3: the only place a transport is called, always with instrumentation suppressed."""
        try:
            with suppress_instrumentation():
                result = self.transport.send(batch.message, deadline)
        except Exception as exc:  # a transport bug or an exotic error: the batch is kept, not lost
            _log.debug("transport raised", exc_info=True)
            result = SendResult("retryable", f"sending failed: {type(exc).__name__}")
        return result

    def _send_all(self, batch: Batch, deadline: Deadline, answered: SendResult | None = None) -> _Outcome:
        """Stages 3 and 4: send, splitting on too_large, until every part has an outcome. ``answered``:
        the first part's (not retryable) answer to an attempt made elsewhere (an event loop's)."""
        outcome = _Outcome()
        work: list[Batch] = [batch]
        while work:
            part = work.pop(0)
            if outcome.retryable and time.monotonic() >= deadline.retries_end():
                outcome.retryable.append(part)  # out of time: keep the rest
                continue
            if answered is None and self.too_large(part):  # it would be refused: no round trip for that
                if part.spans > 1:
                    work[:0] = split_request(part.message)
                    continue
                smaller = shrink_single(part.message)
                if smaller is not None:
                    part = Batch(smaller, 1)
            result = outcome.last = answered if answered is not None else self._send(part, deadline)
            answered = None
            outcome.requests += 1
            if result.answer_seconds is not None:
                outcome.answer_seconds = max(outcome.answer_seconds or 0.0, result.answer_seconds)
            if result.reason and result.reason not in outcome.reasons:
                outcome.reasons.append(result.reason)
            if result.kind == "delivered":
                outcome.delivered += part.spans
            elif result.kind == "partial":
                refused = min(part.spans, result.rejected_spans)
                outcome.delivered += part.spans - refused
                outcome.partial_rejected += refused
            elif result.kind == "retryable":
                outcome.retryable.append(part)
            elif result.kind == "rejected":
                outcome.rejected.append((part, result.reason or "rejected"))
            elif part.spans > 1:  # too_large: halve, depth first so order is kept
                self._refused(part)
                work[:0] = split_request(part.message)
            else:
                smaller = shrink_single(part.message)
                if smaller is None or part.message.ByteSize() <= smaller.ByteSize():
                    outcome.rejected.append((part, result.reason or "too large"))
                else:
                    work.insert(0, Batch(smaller, 1))
        return outcome

    def request_limit(self) -> int | None:
        """The largest request to send (encoded bytes): half the smallest one the endpoint refused as too
        large in the last :data:`LEARNED_FOR` seconds (None: none). Halving stops at a part that fits, so
        after one 413 the smallest body refused is at most about twice the endpoint's limit, and half of
        it fits."""
        refused = self.refused_bytes
        if refused is None or time.monotonic() >= self._refused_until:
            return None
        return refused // 2

    def too_large(self, batch: Batch) -> bool:
        """Over :meth:`request_limit`: sent whole, it would most likely be refused (413)."""
        limit = self.request_limit()
        return limit is not None and batch.message.ByteSize() > limit

    def _refused(self, batch: Batch) -> None:
        """Remember a multi-span request refused as too large (one span alone says nothing of the rest).
        The first needs :data:`LEARN_FROM_BYTES`; once the endpoint has shown a limit, a smaller refusal
        (the halves of the first, under 64 KiB) lowers it, at most :data:`REFINE_AT_MOST`-fold at once.
        Without that, the halves' refusals taught nothing, and a later request between the endpoint's
        limit and half the first refusal was sent whole and refused again."""
        size = batch.message.ByteSize()
        now = time.monotonic()
        known = self.refused_bytes if now < self._refused_until else None
        if known is None:
            if size < LEARN_FROM_BYTES:
                return
            self.refused_bytes = size
        elif size < known:
            self.refused_bytes = max(size, known // REFINE_AT_MOST)
        self._refused_until = now + LEARNED_FOR

    def _settle(self, outcome: _Outcome) -> Tally:
        """Stage 5: each span that did not arrive goes to exactly one bucket."""
        tally = Tally(
            delivered=outcome.delivered,
            requests=outcome.requests,
            reasons=list(outcome.reasons),
            answer_seconds=outcome.answer_seconds,
        )
        if outcome.partial_rejected:
            tally.rejected += outcome.partial_rejected  # which spans is not said: nothing to keep
        for batch in outcome.retryable:
            tally.add(self._to_spool(batch))
        for batch, reason in outcome.rejected:
            tally.add(self._to_rejected(batch, reason))
        return tally

    def _to_spool(self, batch: Batch, *, held: bool = False) -> Tally:
        if self.spool is None:
            return Tally(dropped=batch.spans, reasons=["no spool to keep undelivered spans"])
        written = self.spool.write(_serialize(batch), batch.spans, self.prepare.mask_level, held=held)
        if not written.ok:
            return Tally(dropped=batch.spans, reasons=[written.reason or "spool write failed"])
        tally = Tally(spooled=batch.spans, files=[written.name] if written.name else [])
        if written.evicted:  # older batches evicted by the size cap: gone
            tally.add(Tally(dropped=written.evicted, reasons=["spool over its size cap: oldest spans evicted"]))
        return tally

    def _to_rejected(self, batch: Batch, reason: str) -> Tally:
        spool = self.spool
        name = spool.reject(_serialize(batch), batch.spans, reason, self.prepare.mask_level) if spool else None
        if name is not None:
            return Tally(rejected=batch.spans, reasons=[reason], files=[name])
        return Tally(dropped=batch.spans, reasons=[reason])

    def _settle_unencodable(self, spans: Sequence[ReadableSpan]) -> Tally:
        return Tally(dropped=len(spans), reasons=["could not encode the spans"])

    def _replay_one(
        self, claimed: ClaimedBatch, deadline: Deadline, record: Callable[[Tally], None] | None
    ) -> tuple[Tally, bool]:
        """One spooled batch through stages 3 → 5. Returns its tally and whether the endpoint still
        fails (retryable), so the replay stops instead of hammering it. ``record`` gets the tally before
        the file leaves the spool: a flush in between saw neither the file nor the outcome (truthy while
        the batch was refused)."""

        def settle(tally: Tally, file_settles: Callable[[], None], still_failing: bool) -> tuple[Tally, bool]:
            if record is not None:
                record(tally)
            file_settles()
            return tally, still_failing

        if MASK_LEVELS.index(claimed.mask_level) < MASK_LEVELS.index(self.prepare.mask_level):
            why = (
                f"masked at OTEL_BASIC_MASK={claimed.mask_level}, less than this process's "
                f"{self.prepare.mask_level}: not sent (`otel-basic replay --rejected` with that level sends it)"
            )
            # never sent automatically: the process now promises more masking
            return settle(Tally(rejected=claimed.spans, reasons=[why]), lambda: claimed.reject(why), False)
        try:
            message = ExportTraceServiceRequest.FromString(claimed.data)
        except Exception:
            corrupt = Tally(rejected=claimed.spans, reasons=["corrupt spool file"])
            return settle(corrupt, lambda: claimed.reject("not a valid OTLP request (corrupt spool file)"), False)
        batch = Batch(message, claimed.spans or count_spans(message))
        outcome = self._send_all(batch, deadline)
        if outcome.delivered == 0 and not outcome.rejected and not outcome.partial_rejected:
            # nothing arrived: back in place, same name, same order
            return settle(Tally(requests=outcome.requests, reasons=list(outcome.reasons)), claimed.release, True)
        tally = self._settle(outcome)
        tally.spooled = 0  # parts written back were counted as spooled when they first failed
        return settle(tally, claimed.done, bool(outcome.retryable))


def _serialize(batch: Batch) -> bytes:
    data: bytes = batch.message.SerializeToString()
    return data
