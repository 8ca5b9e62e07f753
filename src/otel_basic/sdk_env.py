"""Keep a bad ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` from crashing the import of the OpenTelemetry SDK.

``opentelemetry.sdk.trace`` parses that one variable at import time, module level, and raises
``ValueError`` on anything but a non-negative integer (``1e23``, ``-1``, ``lots``): every import
of the SDK, ours and the host's, would die with a traceback. This module is imported first by
``otel_basic/__init__.py``, before anything imports the SDK. It writes the value the settings table
would use (clamped, or removed to get the default) back into ``os.environ`` with ONE warning that
names the variable and the accepted range. It changes the environment only for a value the SDK
cannot import with; stdlib only, so it is safe to run that early.
"""

from __future__ import annotations

import logging
import math
import os

from opentelemetry.sdk.environment_variables import OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT

RANGE = (0, 100_000)  # the same range as the settings table's row


def sanitize(environ: os._Environ[str] | dict[str, str] = os.environ) -> str | None:
    """Fix the variable in ``environ`` if the SDK would crash on it; return the warning, if any."""
    raw = environ.get(OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT)
    if raw is None:
        return None
    text = raw.strip().lower()
    if text in ("", "unset") or (text.isdigit() and int(text) <= RANGE[1]):
        return None
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    accepted = f"(accepted: {RANGE[0]} – {RANGE[1]})"
    shown = repr(raw.strip()[:40])
    if math.isnan(number) or (number != int(number) if math.isfinite(number) else False):
        del environ[OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT]
        message = (
            f"{OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT}: expected a whole number, got {shown} {accepted}; "
            "using the default `128`"
        )
    else:
        clamped = RANGE[0] if number < RANGE[0] else RANGE[1] if number > RANGE[1] else int(number)
        environ[OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT] = str(clamped)
        message = f"{OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT}: {shown} is out of range {accepted}; using {clamped}"
    logging.getLogger("otel_basic").warning("otel-basic: %s", message)
    return message


sanitize()
