"""Which Telemetry is active: the one place the process's current telemetry is kept.

``otel_basic.runtime`` sets it (configure, reset); the parts that act on the running pipeline from
inside LlamaIndex's hooks (per-step flush, generations, scores, resumed runs, the workflow helpers)
read it here, so none of them imports ``runtime`` and ``runtime`` can wire them without a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: importing runtime at run time would bring the cycle back
    from otel_basic.runtime import Telemetry

_telemetry: Telemetry | None = None


def telemetry() -> Telemetry | None:
    """The telemetry ``configure()`` built last (None before the first call and after ``reset``)."""
    return _telemetry


def activate(telemetry: Telemetry | None) -> None:
    global _telemetry
    _telemetry = telemetry
