"""A per-thread export deadline, so a flush's deadline reaches the exporter doing the work.

The batch processor's worker sets it around each ``export()``; exporters read it to bound their
HTTP timeouts and retry backoff. Wrappers in between need not know about it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


@contextmanager
def export_deadline(deadline: float | None) -> Iterator[None]:
    """Run the block with ``deadline`` (a ``time.monotonic()`` value) as the export deadline."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = previous


def remaining(default: float) -> float:
    """Seconds left before the current deadline, at most ``default``; never negative."""
    deadline: float | None = getattr(_local, "deadline", None)
    if deadline is None:
        return default
    return max(0.0, min(default, deadline - time.monotonic()))
