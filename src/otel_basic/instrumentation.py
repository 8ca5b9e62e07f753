"""OpenInference's LlamaIndex instrumentor on our provider, with the fast path of :mod:`otel_basic.oi_fast_path`.

The generation fixes, the workflow input/output handler and per-step flushing are installed by
``otel_basic.configure`` (:mod:`otel_basic.runtime`), not here.
"""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from otel_basic import oi_fast_path

_lock = threading.RLock()
_instrumentor: Any = None


def enable_fast_path() -> bool:
    """Speed up OpenInference's span handler without changing its attributes (idempotent)."""
    return oi_fast_path.enable()


def disable_fast_path() -> None:
    """Restore OpenInference's own functions."""
    oi_fast_path.disable()


def instrument(provider: TracerProvider, *, fast_path: bool = True) -> Any:
    """Instrument LlamaIndex on ``provider``; returns the instrumentor (re-instruments if needed)."""
    global _instrumentor
    from openinference.instrumentation import TraceConfig
    from openinference.instrumentation.llama_index import LlamaIndexInstrumentor

    with _lock:
        inst = LlamaIndexInstrumentor()
        if inst.is_instrumented_by_opentelemetry:
            inst.uninstrument()
        # TraceConfig() reads the OPENINFERENCE_HIDE_* variables, so those keep working.
        inst.instrument(tracer_provider=provider, config=TraceConfig())
        _instrumentor = inst
    if fast_path:
        enable_fast_path()
    return inst


def uninstrument() -> None:
    global _instrumentor
    with _lock:
        if _instrumentor is not None and _instrumentor.is_instrumented_by_opentelemetry:
            _instrumentor.uninstrument()
        _instrumentor = None
