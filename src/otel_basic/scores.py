"""Langfuse scores on the current run's trace, queued for ``/api/public/scores``.

A score is a quality judgement attached to a trace (e.g. "the reply passed verification"). Scores
are not spans: :class:`~otel_basic.score_sender.ScoreSender` queues them; the export worker posts
them after the next span batch it delivers, and :func:`otel_basic.flush` sends the rest, once. The
trace id is the current OpenTelemetry span's, so the score lands on the run that made it::

    @step
    async def verify(self, ctx: Context, ev: DraftEvent) -> StopEvent:
        ok = check(ev.draft)
        otel_basic.score_current_trace("verification_passed", ok, data_type="BOOLEAN")

Each score is also recorded as a span event named ``otel_basic.score`` on the current span (same
id, name, value, type and comment): Langfuse ignores span events, so nothing is counted twice,
while the OTLP file, other backends and ``otel-basic demo`` still see the score on every route.

A no-op (returns False) when telemetry is disabled or outside any recording span. Without Langfuse
keys (no ``LANGFUSE_PUBLIC_KEY``/``LANGFUSE_SECRET_KEY``: the file or collector route)
only the span event is recorded, and False is returned. The score sent to Langfuse does not go
through the span pipeline's masking: keep personal data out of names, string values and comments.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Literal

from opentelemetry import trace

from otel_basic import active

__all__ = ["SCORE_EVENT", "ScoreDataType", "score_current_trace"]

SCORE_EVENT = "otel_basic.score"

_log = logging.getLogger("otel_basic")

ScoreDataType = Literal["NUMERIC", "BOOLEAN", "CATEGORICAL"]


def score_current_trace(
    name: str,
    value: float | bool | str,
    comment: str | None = None,
    *,
    data_type: ScoreDataType | None = None,
    observation: bool = False,
) -> bool:
    """Score the trace of the current span; ``observation=True`` scores the current span itself.

    ``value``: a number (``NUMERIC``), a bool (1/0, ``BOOLEAN``) or a category string
    (``CATEGORICAL``), unless ``data_type`` says otherwise. Returns True when the score was queued
    for Langfuse (sent with the next export or flush). Never raises.
    """
    try:
        telemetry = active.telemetry()
        if telemetry is None or not telemetry.enabled:
            return False
        span = trace.get_current_span()
        ctx = span.get_span_context()
        if not ctx.is_valid or not span.is_recording():
            _log.debug("score %r not recorded: no current span", name)
            return False
        if isinstance(value, bool):
            data_type = data_type or "BOOLEAN"
            value = 1.0 if value else 0.0
        elif isinstance(value, int | float):
            data_type = data_type or "NUMERIC"
            value = float(value)
            if not math.isfinite(value):  # not JSON: Langfuse would refuse the whole request
                _log.debug("score %r not recorded: %r is not a finite number", name, value)
                return False
        else:
            data_type = data_type or "CATEGORICAL"
        score_id = uuid.uuid4().hex
        observation_id = format(ctx.span_id, "016x") if observation else None
        event: dict[str, str | float] = {"score.id": score_id, "score.name": name, "score.value": value}
        event["score.data_type"] = data_type
        if comment:
            event["score.comment"] = comment
        if observation_id:
            event["score.observation_id"] = observation_id
        span.add_event(SCORE_EVENT, event)
        sender = telemetry.scores
        if sender is None:
            return False
        score: dict[str, str | float] = {"id": score_id, "traceId": format(ctx.trace_id, "032x")}
        if observation_id:
            score["observationId"] = observation_id
        score |= {"name": name, "value": value, "dataType": data_type}
        if comment:
            score["comment"] = comment
        if telemetry.settings.environment:
            score["environment"] = telemetry.settings.environment
        sender.add(score)
        return True
    except Exception:  # scoring is telemetry: it must never fail the step that scores
        _log.debug("score %r not recorded", name, exc_info=True)
        return False
