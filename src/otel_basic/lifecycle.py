"""Process exit paths: atexit, SIGTERM, SIGINT and multiprocessing's fork children deliver the
queued spans, under ONE exit deadline.

A default SIGTERM kills the process without running atexit (the seed's lost container-stop
spans), so we install a handler for SIGTERM and SIGINT that flushes within the configured
deadline and then does what the signal would have done: it calls the handler that was there
before us (the host's, or Python's KeyboardInterrupt), or re-delivers the signal with the default
action (so the exit status stays "killed by SIGTERM"). A handler the host installs later replaces
ours; the atexit flush still runs if that handler exits through ``sys.exit``.

One deadline: the first signal starts the exit deadline (the flush timeout); the atexit shutdown
that follows soon after (Python's SIGINT → KeyboardInterrupt → exit) only gets what is left of it,
so an endpoint that never answers costs one flush timeout, not two.

``multiprocessing`` children started with fork end with ``os._exit()``, which skips atexit; they do
run multiprocessing's own exit finalizers, so a child registers one there (through
``register_after_fork``, because the child clears the finalizers it inherits).

What cannot be flushed: ``os._exit()`` in a plain fork child and SIGKILL end the process at once.
Per-step flushing bounds the loss to the step in progress; spooled batches are replayed later.

This module knows nothing of the pipeline: :func:`install` takes a getter for the current
:class:`Exitable` (``otel_basic.runtime`` passes its own), so there is no import cycle.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

_log = logging.getLogger("otel_basic")

_STALE_AFTER = 30.0
"""An exit that comes this long after a signal's deadline is a new exit (the app went on)."""


class Report(Protocol):
    def __bool__(self) -> bool: ...

    def summary(self) -> str: ...


class Exitable(Protocol):
    @property
    def enabled(self) -> bool: ...

    @property
    def flush_timeout(self) -> float: ...

    def flush(self, timeout: float | None = None) -> Report: ...

    def shutdown(self, timeout: float | None = None) -> Report: ...


Getter = Callable[[], "Exitable | None"]

_lock = threading.Lock()
_current: Getter | None = None
_installed_atexit = False
_previous: dict[int, Any] = {}
_exit_deadline: float | None = None
_exiting = False  # the exit shutdown is running in the main thread (a signal handler may interrupt it)
_deferred: list[int] = []  # signals that arrived meanwhile: delivered once it is done


class _Anchor:
    """A weak-referenceable owner for multiprocessing's after-fork registry."""


_ANCHOR = _Anchor()


def _target() -> Exitable | None:
    target = _current() if _current is not None else None
    return target if target is not None and target.enabled else None


def _start_exit_deadline(timeout: float) -> float:
    global _exit_deadline
    now = time.monotonic()
    if _exit_deadline is None or now > _exit_deadline + _STALE_AFTER:
        _exit_deadline = now + timeout
    return max(0.0, _exit_deadline - now)


def _exit_timeout(default: float) -> float:
    """What is left of a signal's exit deadline, or the full timeout for a plain exit."""
    now = time.monotonic()
    if _exit_deadline is None or now > _exit_deadline + _STALE_AFTER:
        return default
    return max(0.0, _exit_deadline - now)


def _flush_on_signal(target: Exitable, name: str) -> None:
    report = target.flush(_start_exit_deadline(target.flush_timeout))
    if not report:
        _log.warning("otel-basic: flush at %s: %s", name, report.summary())


def _at_exit() -> None:
    """The exit shutdown. A SIGTERM/SIGINT that arrives while it spools what is left waits for it: acted on at
    once, the signal ended the process mid-drain and every queued span was lost (a hostile review: 60,000 of
    60,000). The drain is bounded by what is in memory, not by the endpoint."""
    global _exiting
    target = _target()
    if target is None or _exiting:
        return
    _exiting = True
    try:
        report = target.shutdown(_exit_timeout(target.flush_timeout))
        if not report:
            _log.warning("otel-basic: flush at exit: %s", report.summary())
    finally:
        _exiting = False
        if _deferred:  # the first signal that waited: what it would have done (ends the process, mostly)
            signum = _deferred[0]
            _deferred.clear()
            _act_as_the_signal(signum, None)


def _handler(signum: int, frame: FrameType | None) -> None:
    if _exiting:
        _deferred.append(signum)  # the exit shutdown this interrupted is spooling: it delivers the signal after
        return
    previous = _previous.get(signum, signal.SIG_DFL)
    try:
        target = _target()
        if target is not None:
            if callable(previous):
                _flush_on_signal(target, signal.Signals(signum).name)  # the process may go on
            else:
                _start_exit_deadline(target.flush_timeout)
                _at_exit()  # the default action ends the process: flush, then spool what is left
    except Exception:  # never turn a signal into a traceback of ours
        _log.debug("flush on signal failed", exc_info=True)
    _act_as_the_signal(signum, frame)


def _act_as_the_signal(signum: int, frame: FrameType | None) -> None:
    """What the signal would have done without us: the previous handler, or the default action."""
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _child_after_fork(_anchor: _Anchor) -> None:
    """In a multiprocessing fork child: run the exit flush from multiprocessing's own finalizers."""
    global _exit_deadline
    _exit_deadline = None
    multiprocessing.util.Finalize(_anchor, _at_exit, exitpriority=100)


def install(current: Getter, signals: bool = True) -> None:
    """Register the atexit flush, the multiprocessing-child flush, and (from the main thread) the
    SIGTERM/SIGINT handlers for the telemetry ``current()`` returns at exit time. Idempotent."""
    global _installed_atexit, _current
    with _lock:
        _current = current
        if not _installed_atexit:
            atexit.register(_at_exit)
            multiprocessing.util.register_after_fork(_ANCHOR, _child_after_fork)
            _installed_atexit = True
        if not signals or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            current_handler = signal.getsignal(sig)
            if current_handler is _handler:
                continue
            if current_handler == signal.SIG_IGN or current_handler is None:
                continue  # the host chose to ignore it (or it was set outside Python): leave it
            _previous[sig] = current_handler
            signal.signal(sig, _handler)


def uninstall() -> None:
    """Restore the handlers we replaced (tests, or hosts that manage signals themselves)."""
    with _lock:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in list(_previous.items()):
            if signal.getsignal(sig) is _handler:
                signal.signal(sig, previous)
            del _previous[sig]
