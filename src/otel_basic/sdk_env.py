"""Keep OpenTelemetry variables that the SDK itself reads from crashing or disabling anything.

Some SDK code reads ``os.environ`` on its own, whatever otel-basic's settings say:

* ``opentelemetry.sdk.trace`` parses ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` at import time and raises
  ``ValueError`` on anything but a non-negative integer: every import of the SDK would die;
* every ``BatchSpanProcessor`` reads ``OTEL_BSP_*`` when it is built: the Langfuse client's processor
  on our provider, and the SDK's own under ``opentelemetry-instrument``. ``OTEL_BSP_MAX_QUEUE_SIZE=100``
  (smaller than the default batch) or ``0`` makes it raise, and that used to turn tracing off;
  ``1e308``, ``nan``, a blank value or ``unset`` make it log a traceback (a blank or ``unset`` value
  is removed: it means "not set" to otel-basic). Its queue defaults to 2048, ours to 65536: a batch
  size between the two, valid for us, made it raise too;
* that Langfuse processor also reads ``LANGFUSE_FLUSH_AT`` (``int()``, its batch size) and
  ``LANGFUSE_FLUSH_INTERVAL`` (``float()``): a word, a non-positive value or a batch above the queue
  raised in the client's constructor.

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
import re
from collections.abc import MutableMapping

from opentelemetry.sdk.environment_variables import (
    OTEL_BSP_EXPORT_TIMEOUT,
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY,
    OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT,
)

LANGFUSE_FLUSH_AT = "LANGFUSE_FLUSH_AT"  # names as langfuse/_client/environment_variables.py spells them
LANGFUSE_FLUSH_INTERVAL = "LANGFUSE_FLUSH_INTERVAL"

# (variable, low, high, default): the same ranges as the settings table's rows.
_INTEGERS = (
    (OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT, 0, 100_000, 128),
    (OTEL_BSP_SCHEDULE_DELAY, 1, 3_600_000, 1000),
    (OTEL_BSP_EXPORT_TIMEOUT, 0, 3_600_000, 30_000),  # 0 is valid (the spec: indefinite)
    (OTEL_BSP_MAX_QUEUE_SIZE, 1, 1_000_000, 65536),
    (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 1, 1_000_000, 512),
)


def _whole(text: str) -> int | None:
    """``text`` as the SDK's ``int()`` reads it, or None. ASCII digits only: ``"²".isdigit()`` is true
    but ``int("²")`` raises."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def _fix(environ: MutableMapping[str, str], name: str, low: int, high: int, default: int) -> str | None:
    raw = environ.get(name)
    if raw is None:
        return None
    text = raw.strip().lower()
    if text in ("", "unset"):  # "not set" for us; the SDK would log a traceback parsing it
        del environ[name]
        return None
    whole = _whole(text)
    if whole is not None and low <= whole <= high:
        return None
    try:
        number = float(text) if text.isascii() else math.nan
    except ValueError:
        number = math.nan
    accepted = f"(accepted: {low} – {high})"
    shown = repr(raw.strip()[:40])
    if math.isnan(number):
        del environ[name]
        return f"{name}: expected a whole number, got {shown} {accepted}; using the default `{default}`"
    clamped = low if number < low else high if number > high else int(number)
    environ[name] = str(clamped)
    if low <= number <= high:
        return f"{name}: expected a whole number, got {shown} {accepted}; using {clamped}"
    return f"{name}: {shown} is out of range {accepted}; using {clamped}"


_NUMBER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_SDK_QUEUE = 2048  # the SDK's BatchSpanProcessor default queue (ours: 65536)


def _fix_langfuse(environ: MutableMapping[str, str], sdk_queue: int) -> list[str]:
    """``LANGFUSE_FLUSH_AT``/``LANGFUSE_FLUSH_INTERVAL`` as the Langfuse client's processor can take them."""
    messages = []
    raw = environ.get(LANGFUSE_FLUSH_AT)
    if raw is not None:
        text = raw.strip()
        accepted = f"(accepted: 1 – {sdk_queue}, the SDK's span queue)"
        flush_at = _whole(text)
        if flush_at is None or flush_at < 1:
            del environ[LANGFUSE_FLUSH_AT]
            why = "out of range:" if _NUMBER.fullmatch(text) else "expected a whole number, got"
            messages.append(f"{LANGFUSE_FLUSH_AT}: {why} {text[:40]!r} {accepted}; using Langfuse's default")
        elif flush_at > sdk_queue:
            environ[LANGFUSE_FLUSH_AT] = str(sdk_queue)
            messages.append(f"{LANGFUSE_FLUSH_AT}: {text[:40]!r} is out of range {accepted}; using {sdk_queue}")
    raw = environ.get(LANGFUSE_FLUSH_INTERVAL)
    if raw is not None:
        try:
            seconds = float(raw.strip()) if raw.isascii() else math.nan
        except ValueError:
            seconds = math.nan
        if not 0 < seconds <= 3600:  # NaN too
            del environ[LANGFUSE_FLUSH_INTERVAL]
            why = "expected seconds, got" if math.isnan(seconds) else "out of range:"
            messages.append(
                f"{LANGFUSE_FLUSH_INTERVAL}: {why} {raw.strip()[:40]!r} "
                "(accepted: above 0, up to 3600); using Langfuse's default"
            )
    return messages


applied: list[str] = []
"""What :func:`sanitize` changed in this process's environment (``otel-basic doctor`` reports it)."""


def sanitize(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Fix the variables in ``environ`` the SDK would crash or misbehave on; return the warnings."""
    messages = [m for name, low, high, default in _INTEGERS if (m := _fix(environ, name, low, high, default))]
    queue = _whole(environ.get(OTEL_BSP_MAX_QUEUE_SIZE, ""))
    batch = _whole(environ.get(OTEL_BSP_MAX_EXPORT_BATCH_SIZE, ""))
    queue_size = 65536 if queue is None else queue
    if batch is not None and batch > queue_size:
        environ[OTEL_BSP_MAX_EXPORT_BATCH_SIZE] = str(queue_size)
        messages.append(
            f"{OTEL_BSP_MAX_EXPORT_BATCH_SIZE}: must not exceed {OTEL_BSP_MAX_QUEUE_SIZE} "
            f"(accepted: 1 – queue size); using {queue_size}"
        )
    elif batch is None and queue_size < 512:  # the SDK's default batch (512) would exceed the queue
        environ[OTEL_BSP_MAX_EXPORT_BATCH_SIZE] = str(queue_size)
    batch = _whole(environ.get(OTEL_BSP_MAX_EXPORT_BATCH_SIZE, ""))
    if queue is None and batch is not None and batch > _SDK_QUEUE:
        environ[OTEL_BSP_MAX_QUEUE_SIZE] = str(queue_size)  # ours, which the SDK's 2048 would not hold
    sdk_queue = _whole(environ.get(OTEL_BSP_MAX_QUEUE_SIZE, ""))
    messages += _fix_langfuse(environ, _SDK_QUEUE if sdk_queue is None else sdk_queue)
    for message in messages:
        logging.getLogger("otel_basic").warning("otel-basic: %s", message)
    if environ is os.environ:
        applied.extend(m for m in messages if m not in applied)
    return messages


sanitize()
