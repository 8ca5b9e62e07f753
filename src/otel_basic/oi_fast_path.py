"""OpenInference's LlamaIndex span handler, minus its per-call overheads; attributes unchanged.

Every patch here keeps OpenInference's own code computing every attribute value and only removes
work whose answer is already known (issue 14; ``tests/test_fast_path.py`` compares the exported
spans key for key against the stock handler, with hiding configs, images, tools, streams and errors):

* ``_detect_llm_provider`` / ``_detect_llm_system``: each tries up to four ``import llama_index.llms.*``
  per LLM span and a failed import is not cached by Python. The answer depends only on the instance's
  class (``isinstance`` against provider classes), so it is cached per class: a provider package
  installed later cannot make an existing class its subclass, and its own classes are new keys.
* ``_Span.__getattr__``: the span keeps its state in pydantic private attributes; every read missed
  the normal lookup and ran pydantic's generic ``__getattr__`` (~2 µs); reading
  ``__pydantic_private__`` directly gives the same value (~0.6 µs). The same for OpenInference's span
  and event handlers (their lock, tracer and export queue: ~10 reads per LLM call).
* ``_Span._process_event`` / ``_Span.process_instance``: ``functools.singledispatchmethod`` builds a
  bound closure and copies the wrapper's metadata on every access (Python 3.11); a plain function
  asks the same dispatcher for the same implementation. ``register`` still works.
* ``OpenInferenceSpan.set_attributes``: with a stock ``TraceConfig`` that hides nothing, its ``mask`` returns
  every value unchanged except image URLs (base64 size limit) and lazy values, and the span kind is
  book-kept for the end; those keys still take OpenInference's path, every other run of keys goes to
  the SDK span in one call, in the same order. Any ``hide_*`` flag set: the stock path for every key.
* OpenInference's span and trace ids: ``secrets.randbits`` makes an ``os.urandom`` system call per id,
  and every system call on the app's thread hands the GIL to a waiting export thread. OpenInference
  wants ids that the app's ``random.seed`` cannot repeat; a private generator seeded from
  ``os.urandom`` (re-seeded in a forked child) gives that without a call per id. It is a Mersenne
  Twister, like the SDK's own default id generator: unpredictable to the app, not cryptographically
  secure (trace ids travel in plain ``traceparent`` headers anyway).
* LlamaIndex's instrumentation ids (the dispatcher's span ids, event and span model ids, the legacy
  callback manager's event ids, the workflow runner's run-span id) come from ``uuid.uuid4()``, an
  ``os.urandom`` call, four or five per LLM call: the same private generator makes them (same format,
  version-4 UUIDs). They only key LlamaIndex's and OpenInference's bookkeeping of open spans, so a
  non-cryptographic generator is enough for them (ids an app sees: next item). With an export thread
  waiting for the GIL, these calls were two thirds of the LLM span's GIL hand-offs (each ~15 µs of CPU).
* Workflow run ids (``workflows.utils._nanoid``, ten ``secrets.choice`` calls) made ten ``os.urandom``
  calls per run, ten more GIL hand-offs. Apps see these ids and may use them as unguessable handles,
  so they stay kernel randomness: :class:`_BufferedSecrets` draws the same characters, uniformly,
  from ``os.urandom`` bytes fetched 1 KB at a time (never reused in a forked child).
* ``_Span(...)`` builds a :func:`light span <_light_span_class>` instead of a pydantic model: the same
  state in slots, the same exports (every method is ``_Span``'s own, looked up when called,
  so later patches of ``_Span`` apply). Constructing the pydantic model and reading or writing its
  private attributes cost ~40 µs per span. It replays ``_Span.__init__`` of the OpenInference
  version it was checked against (a fingerprint of that function's source and the declared fields);
  any other version keeps the pydantic span. ``disable()`` leaves ``_Span.__new__`` as
  ``object.__new__`` (deleting an assigned ``__new__`` breaks the class in CPython).

A TraceConfig subclass (its own ``mask``) keeps OpenInference's path; ``None`` values are skipped,
as its ``mask`` check skips them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import os
import random
import secrets
import threading
import uuid
import weakref
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from time import time
from types import FunctionType
from typing import Any

_log = logging.getLogger("otel_basic")

_lock = threading.RLock()
#: (owner, attribute) -> what was there before (``None``: nothing in the owner's own ``__dict__``)
_originals: dict[tuple[Any, str], Any] = {}


def _cached(fn: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    cache: weakref.WeakKeyDictionary[type, str | None] = weakref.WeakKeyDictionary()  # classes may come and go

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
    """A faster ``__getattr__`` for a pydantic model's private attributes without descriptor defaults."""
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


def _plain_dispatch(method: Any) -> Callable[[Any, Any], Any]:
    """What ``singledispatchmethod.__get__(obj)(arg)`` calls, without building a closure per call."""
    dispatch = method.dispatcher.dispatch

    def call(self: Any, arg: Any) -> Any:
        return dispatch(arg.__class__)(self, arg)

    call.register = method.register  # type: ignore[attr-defined]
    call.dispatcher = method.dispatcher  # type: ignore[attr-defined]
    call.__wrapped__ = method  # type: ignore[attr-defined]
    return call


def _hides_nothing(config: Any) -> bool:
    """A stock ``TraceConfig`` with every ``hide_*`` off (a subclass may mask in its own ``mask``)."""
    from openinference.instrumentation import TraceConfig

    if type(config) is not TraceConfig:
        return False
    return not any(getattr(config, f.name, False) for f in dataclasses.fields(config) if f.name.startswith("hide_"))


def _direct_set_attributes(original: Callable[[Any, Mapping[str, Any]], None]) -> Callable[..., None]:
    from openinference.instrumentation import _spans
    from openinference.semconv.trace import ImageAttributes

    important = frozenset(_spans._IMPORTANT_ATTRIBUTES)  # type: ignore[attr-defined]
    image_url = ImageAttributes.IMAGE_URL
    verdicts: dict[int, tuple[Any, bool]] = {}  # id(config) -> (config kept alive, hides nothing)

    def set_attributes(self: Any, attributes: Mapping[str, Any]) -> None:
        config = self._self_config
        try:
            kept, plain = verdicts[id(config)]
            if kept is not config:
                raise KeyError
        except KeyError:
            plain = _hides_nothing(config)
            if len(verdicts) > 64:
                verdicts.clear()
            verdicts[id(config)] = (config, plain)
        if not plain or not self.is_recording():
            original(self, attributes)
            return
        span = self.__wrapped__
        run: dict[str, Any] = {}
        for key, value in attributes.items():
            if value is None:  # what mask() returns None for is not set
                continue
            if key in important or callable(value) or key.endswith(image_url):
                if run:
                    span.set_attributes(run)
                    run = {}
                self.set_attribute(key, value)
            else:
                run[key] = value
        if run:
            span.set_attributes(run)

    set_attributes.__wrapped__ = original  # type: ignore[attr-defined]
    return set_attributes


#: ``_Span.__init__`` (source) and declared state that :func:`_light_new` replays
#: (openinference-instrumentation-llama-index 4.6.1)
_KNOWN_SPAN_INIT = "a11c3a35d288eb1e"


def _fingerprint(span_cls: Any) -> str:
    """The source of ``_Span.__init__`` and the span's declared state (stable across Python versions)."""
    try:
        source = inspect.getsource(span_cls.__init__)
    except (OSError, TypeError):
        return "no source"
    declared = (sorted(span_cls.__private_attributes__), sorted(span_cls.model_fields))
    return hashlib.sha256((source + repr(declared)).encode()).hexdigest()[:16]


def _bound(span_cls: Any, name: str, self: Any) -> Any:
    """``name`` as ``_Span`` has it now (a later patch included), bound to ``self``."""
    for klass in span_cls.__mro__:
        if name in klass.__dict__:
            attr = klass.__dict__[name]
            return attr.__get__(self, span_cls) if hasattr(attr, "__get__") else attr
    raise AttributeError(name)


def _delegate(span_cls: Any, name: str, value: Any) -> Any:
    """A method or property of the light span that runs ``_Span``'s current one on it."""
    own = span_cls.__dict__  # a live view: a later patch of _Span shows here
    if isinstance(value, property):

        def get(self: Any) -> Any:
            attr = own.get(name)
            if type(attr) is property and attr.fget is not None:
                return attr.fget(self)
            return _bound(span_cls, name, self)

        return property(get)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        attr = own.get(name)
        if type(attr) is FunctionType:  # the common case, without building a bound method
            return attr(self, *args, **kwargs)
        return _bound(span_cls, name, self)(*args, **kwargs)

    method.__name__ = name
    return method


def _light_span_class(span_cls: Any) -> type:
    """``_Span`` without pydantic: its private attributes and fields as slots, its methods delegated.

    Its exports are the pydantic span's; the object itself is not a pydantic model (no ``model_dump``,
    its own ``repr``), which nothing in OpenInference or otel_basic uses.
    """
    slots = (*span_cls.__private_attributes__, "id_", "parent_id", "tags", "_list_attr_len", "__weakref__")
    namespace: dict[str, Any] = {"__slots__": slots, "__module__": __name__, "__doc__": _light_span_class.__doc__}
    for name, value in vars(span_cls).items():
        if (name.startswith("__") and name != "__setitem__") or name in ("_", "model_post_init"):
            continue
        if isinstance(value, property) or callable(value) or hasattr(value, "dispatcher"):
            namespace[name] = _delegate(span_cls, name, value)

    def __getattr__(self: Any, name: str) -> Any:  # a method added to _Span after enable()
        if name.startswith("__"):
            raise AttributeError(name)
        return _bound(span_cls, name, self)

    namespace["__getattr__"] = __getattr__
    return type("LightSpan", (), namespace)


def _light_new(_: Any) -> Callable[..., Any]:
    """``_Span.__new__`` that returns a light span for OpenInference's own call (keywords only)."""
    from openinference.instrumentation.llama_index import _handler

    span_cls = _handler._Span
    light = _light_span_class(span_cls)
    current_span = _handler._CurrentSpan
    expected = frozenset(("otel_span", "span_kind", "parent", "id_", "parent_id"))

    def __new__(cls: Any, *args: Any, **kwargs: Any) -> Any:
        if cls is not span_cls or args or not expected.issuperset(kwargs) or not isinstance(kwargs.get("id_"), str):
            return object.__new__(cls)
        otel_span = kwargs["otel_span"]
        span: Any = object.__new__(light)
        span.id_ = kwargs["id_"]
        span.parent_id = kwargs.get("parent_id")
        span.tags = {}
        span._otel_span = otel_span
        span._active = otel_span.is_recording()
        span._span_kind = kwargs.get("span_kind")
        span._parent = kwargs.get("parent")
        span._first_token_timestamp = None
        span._attributes = {}
        span._end_time = None
        span._last_updated_at = time()
        span._current_span = current_span(otel_span)
        span._context_token = None
        span._list_attr_len = defaultdict(int)
        return span

    return staticmethod(__new__)


_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def _private_randbits(_: Any) -> Callable[[int], int]:
    return _ids.getrandbits


def _private_uuid4() -> uuid.UUID:
    return uuid.UUID(int=_ids.getrandbits(128), version=4)


class _UuidModule:
    """The ``uuid`` module with :func:`_private_uuid4` as its ``uuid4``; anything else is the real module's."""

    uuid4 = staticmethod(_private_uuid4)

    def __getattr__(self, name: str) -> Any:
        return getattr(uuid, name)


_uuid_module = _UuidModule()


_STOCK_CHOICE = secrets.choice
_READ_BYTES = 1024  # about a hundred run ids per system call


class _BufferedSecrets:
    """The ``secrets`` module as ``workflows.utils`` sees it: ``choice`` without a system call per character.

    ``secrets.choice`` asks ``os.urandom`` for a byte per character; this hands out the bytes of one
    1 KB ``os.urandom`` read, each once (under a lock, so also without a GIL), uniformly (rejection
    sampling). A forked child never hands out the parent's bytes (an at-fork hook empties its buffer;
    checking ``os.getpid()`` per character was a system call each). The price: up to 1 KB of the next
    ids' randomness sits in this process's memory before use, as in any user-space random buffer. If the
    app replaced ``secrets.choice`` (a test pinning ids), its function is used; anything but ``choice`` is
    the real module's.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """In a fork child: the parent's bytes are never handed out; a new lock (a parent's thread may
        have held it at the fork)."""
        self._lock = threading.Lock()
        self._buffer, self._at = b"", 0

    def choice(self, seq: Sequence[Any]) -> Any:
        size = len(seq)
        if not 0 < size <= 256 or secrets.choice is not _STOCK_CHOICE:
            return secrets.choice(seq)
        limit = 256 - 256 % size
        with self._lock:
            while True:
                if self._at >= len(self._buffer):
                    self._buffer, self._at = os.urandom(_READ_BYTES), 0
                byte = self._buffer[self._at]
                self._at += 1
                if byte < limit:
                    return seq[byte % size]

    def __getattr__(self, name: str) -> Any:
        return getattr(secrets, name)


_buffered_secrets = _BufferedSecrets()


def _patches() -> list[tuple[Any, str, Callable[[Any], Any]]]:
    """(owner, attribute, make replacement from the current value) for everything we speed up."""
    from llama_index.core.callbacks import base as callbacks_base
    from llama_index.core.callbacks import schema as callbacks_schema
    from llama_index_instrumentation import dispatcher
    from llama_index_instrumentation.base import event
    from llama_index_instrumentation.span import base as span_base
    from openinference.instrumentation import _spans, _tracers
    from openinference.instrumentation.llama_index import _handler

    span = _handler._Span
    patches: list[tuple[Any, str, Callable[[Any], Any]]] = [
        (_handler, "_detect_llm_provider", _cached),
        (_handler, "_detect_llm_system", _cached),
        (span, "__getattr__", lambda _: _private_getattr(span)),
        (_handler._SpanHandler, "__getattr__", lambda _: _private_getattr(_handler._SpanHandler)),
        (_handler.EventHandler, "__getattr__", lambda _: _private_getattr(_handler.EventHandler)),
        (span, "_process_event", _plain_dispatch),
        (span, "process_instance", _plain_dispatch),
        (_spans.OpenInferenceSpan, "set_attributes", _direct_set_attributes),
        (_tracers, "randbits", _private_randbits),
        (dispatcher, "uuid", lambda _: _uuid_module),
        (callbacks_base, "uuid", lambda _: _uuid_module),
        (callbacks_schema, "uuid", lambda _: _uuid_module),
        (event, "uuid4", lambda _: _private_uuid4),
        (span_base, "uuid4", lambda _: _private_uuid4),
    ]
    try:  # llama-index-workflows: the run span's id
        from workflows.runtime.types import step_function

        patches.append((step_function, "uuid", lambda _: _uuid_module))
    except ImportError:
        pass
    try:  # llama-index-workflows: run ids
        from workflows import utils as workflow_utils

        # an app's own replacement (deterministic ids in its tests) stays
        patches.append((workflow_utils, "secrets", lambda own: _buffered_secrets if own is secrets else own))
    except ImportError:
        pass
    if _fingerprint(span) == _KNOWN_SPAN_INIT:
        patches.append((span, "__new__", _light_new))
    else:
        _log.debug("OpenInference's _Span.__init__ is not the one checked; spans stay pydantic models")
    return patches


def enable() -> bool:
    """Install every patch once (idempotent); False when OpenInference is not importable."""
    try:
        patches = _patches()
    except ImportError:
        return False
    except Exception:  # an OpenInference we do not know: run it stock, never break configure()
        _log.warning("OpenInference fast path not installed", exc_info=True)
        return False
    with _lock:
        for owner, name, make in patches:
            if (owner, name) in _originals:
                continue
            own = vars(owner).get(name)  # the class's own, not an inherited one
            if name == "__new__" and isinstance(own, staticmethod) and own.__func__ is _object_new:
                own = None  # what an earlier disable() left
            if own is None and name not in ("__getattr__", "__new__"):
                continue
            _originals[owner, name] = own
            setattr(owner, name, make(own))
    return True


def _object_new(cls: Any, *args: Any, **kwargs: Any) -> Any:
    return object.__new__(cls)


def disable() -> None:
    """Put back exactly what :func:`enable` replaced."""
    with _lock:
        for (owner, name), original in _originals.items():
            if original is None and name == "__new__":
                # Deleting an assigned __new__ leaves CPython's slot calling object.__new__ with the
                # constructor's arguments (TypeError); this is what the class did before.
                owner.__new__ = staticmethod(_object_new)
            elif original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        _originals.clear()
