"""Process exit paths: atexit, SIGTERM and SIGINT deliver the queued spans.

A default SIGTERM kills the process without running atexit (the seed's lost container-stop
spans), so we install a handler for SIGTERM and SIGINT that flushes within the configured
deadline and then does what the signal would have done: it calls the handler that was there
before us (the host's, or Python's KeyboardInterrupt), or re-delivers the signal with the default
action (so the exit status stays "killed by SIGTERM"). A handler the host installs later replaces
ours; the atexit flush still runs if that handler exits through ``sys.exit``.

What cannot be flushed: ``os._exit()`` and SIGKILL end the process at once. Per-step flushing
bounds the loss to the spans of the step in progress; spans that were handed to the spool are
replayed on the next start.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

_log = logging.getLogger("otel_basic")
_installed_atexit = False
_previous: dict[int, Any] = {}
_lock = threading.Lock()


def _flush_all(reason: str) -> None:
    from otel_basic import runtime

    telemetry = runtime.current()
    if telemetry is None or not telemetry.enabled:
        return
    report = telemetry.flush()
    if not report:
        _log.warning("otel-basic: flush at %s: %s", reason, report.summary())


def _at_exit() -> None:
    from otel_basic import runtime

    telemetry = runtime.current()
    if telemetry is None or not telemetry.enabled:
        return
    report = telemetry.shutdown()
    if not report:
        _log.warning("otel-basic: flush at exit: %s", report.summary())


def _handler(signum: int, frame: FrameType | None) -> None:
    previous = _previous.get(signum, signal.SIG_DFL)
    try:
        if callable(previous):
            _flush_all(signal.Signals(signum).name)  # the process may go on: keep exporting
        else:
            _at_exit()  # the default action ends the process: flush, then spool what is left
    except Exception:  # never turn a signal into a traceback of ours
        _log.debug("flush on signal failed", exc_info=True)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def install(signals: bool = True) -> None:
    """Register the atexit flush, and (from the main thread) the SIGTERM/SIGINT handlers. Idempotent."""
    global _installed_atexit
    with _lock:
        if not _installed_atexit:
            atexit.register(_at_exit)
            _installed_atexit = True
        if not signals or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            current = signal.getsignal(sig)
            if current is _handler:
                continue
            if current == signal.SIG_IGN or current is None:
                continue  # the host chose to ignore it (or it was set outside Python): leave it
            _previous[sig] = current
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
