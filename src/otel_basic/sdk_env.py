"""Keep OpenTelemetry variables that the SDK itself reads from crashing or disabling anything.

Some SDK code reads ``os.environ`` on its own, whatever otel-basic's settings say:

* ``opentelemetry.sdk.trace`` parses ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` at import time and raises
  ``ValueError`` on anything but a non-negative integer: every import of the SDK would die;
* every ``BatchSpanProcessor`` reads ``OTEL_BSP_*`` when it is built: the Langfuse client's processor
  on our provider, and the SDK's own under ``opentelemetry-instrument``. ``OTEL_BSP_MAX_QUEUE_SIZE=100``
  (smaller than the default batch) or ``0`` makes it raise, and that used to turn tracing off;
  ``1e308`` or ``nan`` make it log a traceback.

:func:`sanitize` writes the value the settings table would use (clamped, or removed to get the
default) back into the environment, with ONE warning naming the variable and the accepted range, so
the SDK and otel-basic see the same numbers. It changes only values the SDK cannot use as they are.
It runs when ``otel_basic`` is imported (before anything imports the SDK) and again in
``configure()``; stdlib only, so it is safe to run that early.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import MutableMapping

from opentelemetry.sdk.environment_variables import (
    OTEL_BSP_EXPORT_TIMEOUT,
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY,
    OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT,
)

# (variable, low, high, default): the same ranges as the settings table's rows.
_INTEGERS = (
    (OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT, 0, 100_000, 128),
    (OTEL_BSP_SCHEDULE_DELAY, 1, 3_600_000, 1000),
    (OTEL_BSP_EXPORT_TIMEOUT, 1, 3_600_000, 30_000),
    (OTEL_BSP_MAX_QUEUE_SIZE, 1, 1_000_000, 65536),
    (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 1, 1_000_000, 512),
)


def _fix(environ: MutableMapping[str, str], name: str, low: int, high: int, default: int) -> str | None:
    raw = environ.get(name)
    if raw is None:
        return None
    text = raw.strip().lower()
    if text in ("", "unset") or (text.isdigit() and low <= int(text) <= high):
        return None
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    accepted = f"(accepted: {low} – {high})"
    shown = repr(raw.strip()[:40])
    if math.isnan(number):
        del environ[name]
        return f"{name}: expected a whole number, got {shown} {accepted}; using the default `{default}`"
    clamped = low if number < low else high if number > high else int(number)
    environ[name] = str(clamped)
    return f"{name}: {shown} is out of range {accepted}; using {clamped}"


applied: list[str] = []
"""What :func:`sanitize` changed in this process's environment (``otel-basic doctor`` reports it)."""


def sanitize(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Fix the variables in ``environ`` the SDK would crash or misbehave on; return the warnings."""
    messages = [m for name, low, high, default in _INTEGERS if (m := _fix(environ, name, low, high, default))]
    queue = environ.get(OTEL_BSP_MAX_QUEUE_SIZE)
    batch = environ.get(OTEL_BSP_MAX_EXPORT_BATCH_SIZE)
    queue_size = int(queue) if queue and queue.strip().isdigit() else 65536
    if batch and batch.strip().isdigit() and int(batch) > queue_size:
        environ[OTEL_BSP_MAX_EXPORT_BATCH_SIZE] = str(queue_size)
        messages.append(
            f"{OTEL_BSP_MAX_EXPORT_BATCH_SIZE}: must not exceed {OTEL_BSP_MAX_QUEUE_SIZE} "
            f"(accepted: 1 – queue size); using {queue_size}"
        )
    elif not batch and queue_size < 512:  # the SDK's default batch (512) would exceed the queue
        environ[OTEL_BSP_MAX_EXPORT_BATCH_SIZE] = str(queue_size)
    for message in messages:
        logging.getLogger("otel_basic").warning("otel-basic: %s", message)
    if environ is os.environ:
        applied.extend(m for m in messages if m not in applied)
    return messages


sanitize()
