"""OpenInference's LlamaIndex instrumentor on our provider, plus a fast path for LLM spans.

``instrument()`` also installs the generation fixes (:mod:`otel_basic.genai`), the workflow
input/output handler and automatic per-step flushing (:mod:`otel_basic.step_flush`).

Fast path: OpenInference calls ``_detect_llm_provider`` / ``_detect_llm_system`` on every LLM span;
each tries up to four ``import llama_index.llms.*`` and a failed import is not cached by Python,
so ~40% of an LLM span's cost is retried failed imports. The answer depends only on the
instance's class (``isinstance`` against provider classes), so we cache it per class. A provider
package installed later in the process cannot change the answer for a class that already existed
(a class cannot become a subclass of one defined after it), and its own classes are new cache keys,
so caching is exact. Attributes stay identical (tested against the stock functions).
Second, the span object's private-attribute reads skip pydantic's generic ``__getattr__`` (see
:func:`_private_getattr`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

_log = logging.getLogger("otel_basic")
_lock = threading.RLock()
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


def _private_getattr(cls: Any) -> Callable[[Any, str], Any]:
    """A faster ``__getattr__`` for a pydantic model's private attributes.

    OpenInference's span object keeps its state in pydantic private attributes; every read
    (``self._attributes`` on each ``span[key] = value``) misses the normal lookup and runs
    pydantic's generic ``__getattr__`` (~2 µs). Reading ``__pydantic_private__`` directly gives the
    same value for private attributes without a descriptor default (all of ``_Span``'s), ~0.6 µs;
    anything else still goes through pydantic's own ``__getattr__``.
    """
    from pydantic import BaseModel

    fallback = BaseModel.__getattr__  # type: ignore[attr-defined]
    plain = frozenset(k for k, v in cls.__private_attributes__.items() if not hasattr(v, "__get__"))
    get = object.__getattribute__

    def fast(self: Any, item: str) -> Any:
        if item in plain:
            try:
                return get(self, "__pydantic_private__")[item]
            except (KeyError, TypeError):
                pass
        return fallback(self, item)

    return fast


def enable_fast_path() -> bool:
    """Install the per-class cache and the private-attribute read in OpenInference (idempotent)."""
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
        span_cls = getattr(_handler, "_Span", None)
        if (
            span_cls is not None
            and "_Span.__getattr__" not in _originals
            and hasattr(span_cls, "__private_attributes__")
        ):
            _originals["_Span.__getattr__"] = span_cls.__dict__.get("__getattr__")
            span_cls.__getattr__ = _private_getattr(span_cls)
    return True


def disable_fast_path() -> None:
    from openinference.instrumentation.llama_index import _handler

    with _lock:
        for name, fn in _originals.items():
            if name == "_Span.__getattr__":
                if fn is None:
                    delattr(_handler._Span, "__getattr__")
                else:
                    setattr(_handler._Span, "__getattr__", fn)  # noqa: B010
            else:
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
    return inst


def uninstrument() -> None:
    global _instrumentor
    with _lock:
        if _instrumentor is not None and _instrumentor.is_instrumented_by_opentelemetry:
            _instrumentor.uninstrument()
        _instrumentor = None
