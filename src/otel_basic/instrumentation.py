"""OpenInference's LlamaIndex instrumentor on our provider, plus a fast path for LLM spans.

Fast path: OpenInference calls ``_detect_llm_provider`` / ``_detect_llm_system`` on every LLM span;
each tries up to four ``import llama_index.llms.*`` and a failed import is not cached by Python,
so ~40% of an LLM span's cost is retried failed imports. The answer depends only on the
instance's class (``isinstance`` against provider classes), so we cache it per class. A provider
package installed later in the process cannot change the answer for a class that already existed
(a class cannot become a subclass of one defined after it), and its own classes are new cache keys,
so caching is exact. Attributes stay identical (tested against the stock functions).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

_log = logging.getLogger("otel_basic")
_lock = threading.Lock()
_instrumentor: Any = None
_originals: dict[str, Callable[[Any], str | None]] = {}


def _cached(fn: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    cache: dict[type, str | None] = {}

    def detect(instance: Any) -> str | None:
        cls = type(instance)
        try:
            return cache[cls]
        except KeyError:
            value = cache[cls] = fn(instance)
            return value

    detect.__wrapped__ = fn  # type: ignore[attr-defined]
    return detect


def enable_fast_path() -> bool:
    """Install the per-class cache in OpenInference's handler module (idempotent)."""
    try:
        from openinference.instrumentation.llama_index import _handler
    except ImportError:
        return False
    with _lock:
        for name in ("_detect_llm_provider", "_detect_llm_system"):
            current = getattr(_handler, name, None)
            if current is None or name in _originals:
                continue
            _originals[name] = current
            setattr(_handler, name, _cached(current))
    return True


def disable_fast_path() -> None:
    from openinference.instrumentation.llama_index import _handler

    with _lock:
        for name, fn in _originals.items():
            setattr(_handler, name, fn)
        _originals.clear()


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
    from otel_basic.workflows import install_io_handler

    install_io_handler()
    return inst


def uninstrument() -> None:
    global _instrumentor
    with _lock:
        if _instrumentor is not None and _instrumentor.is_instrumented_by_opentelemetry:
            _instrumentor.uninstrument()
        _instrumentor = None
