"""Several worker processes on one listening socket: ``python -m basic.server --workers N``.

Why not ``uvicorn.run(workers=N)``: uvicorn's workers run a stock ``uvicorn.Server`` and then
re-raise the stop signal with its default action, which kills the worker before any telemetry flush.
Here every worker runs exactly what a single-process server runs (its own telemetry pipeline,
configured when the worker imports the app; the grace period; the flush on the way out, logged with
its report) and exits 0. The workers are *spawned*, not forked, so no exporter thread, lock or
queue of the parent is ever copied into a child.

The supervisor (the parent process) binds the socket, starts the workers, prints the ready line
once every worker accepts connections, restarts a worker that dies while serving, and on
SIGTERM/SIGINT asks every worker to stop (SIGTERM), waits for them, and exits 0 when they all did.
A worker that fails before serving stops the whole server (exit 3): a bad configuration would fail
the same way on every restart.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

_log = logging.getLogger("basic.server")

STARTUP_FAILURE = 3
READY_TIMEOUT = 60.0
"""Seconds a worker may take to start serving (imports, telemetry, app) before the start fails."""

WorkerTarget = Callable[[Any, socket.socket, Connection], None]
"""``target(options, listening_socket, ready)``: serve on the socket; send anything on ``ready``
once serving. A module-level function (it is pickled into the spawned process)."""


@dataclass
class _Worker:
    process: BaseProcess
    ready: Connection
    serving: bool = False


class Supervisor:
    """Start ``count`` workers running ``target(options, sock, ready)``; see the module docstring."""

    def __init__(
        self,
        count: int,
        target: WorkerTarget,
        options: Any,
        sock: socket.socket,
        *,
        stop_timeout: float,
    ) -> None:
        self.count = count
        self.target = target
        self.options = options
        self.sock = sock
        self.stop_timeout = stop_timeout
        self.workers: list[_Worker] = []
        self.stop_requested = threading.Event()
        self._signals: list[int] = []
        self._mp = multiprocessing.get_context("spawn")

    # --------------------------------------------------------------------------- signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)
        self.stop_requested.set()

    def _install_signals(self) -> dict[int, Any]:
        return {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    # --------------------------------------------------------------------------- workers

    def _start_worker(self) -> _Worker:
        receive, send = self._mp.Pipe(duplex=False)
        process = self._mp.Process(
            target=self.target, args=(self.options, self.sock, send), name="basic.server worker", daemon=False
        )
        process.start()
        send.close()  # the child has its copy
        return _Worker(process, receive)

    def _poll_ready(self, worker: _Worker) -> None:
        try:
            if not worker.serving and worker.ready.poll():
                worker.ready.recv()
                worker.serving = True
        except (EOFError, OSError):
            pass  # the worker exited before saying it was ready: see its exit code

    def _wait_until_serving(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and not self.stop_requested.is_set():
            for worker in self.workers:
                self._poll_ready(worker)
                if not worker.serving and worker.process.exitcode is not None:
                    _log.error("worker %s exited with %s before serving", worker.process.pid, worker.process.exitcode)
                    return False
            if all(w.serving for w in self.workers):
                return True
            time.sleep(0.02)
        return all(w.serving for w in self.workers)

    def _replace_dead(self) -> bool:
        """Restart workers that died while serving; False when one died before it ever served."""
        for index, worker in enumerate(self.workers):
            self._poll_ready(worker)
            code = worker.process.exitcode
            if code is None:
                continue
            if not worker.serving:
                _log.error("worker %s exited with %s before serving: stopping", worker.process.pid, code)
                return False
            # A worker stopped on its own (SIGTERM to it: a rolling restart) is no problem; a crash is.
            level = logging.INFO if code == 0 else logging.WARNING
            _log.log(level, "worker %s exited with %s: starting a new one", worker.process.pid, code)
            worker.ready.close()
            self.workers[index] = self._start_worker()
        return True

    def _stop_all(self) -> bool:
        """SIGTERM every worker and wait; True when all of them exited 0."""
        for worker in self.workers:
            if worker.process.exitcode is None and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for worker in self.workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
        clean = True
        for worker in self.workers:
            if worker.process.exitcode is None:
                _log.error("worker %s did not stop in %.0fs: killing it", worker.process.pid, self.stop_timeout)
                worker.process.kill()
                worker.process.join(timeout=5)
            clean = clean and worker.process.exitcode == 0
            worker.ready.close()
        return clean

    # --------------------------------------------------------------------------- run

    def run(self, on_ready: Callable[[], None]) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean stop, 3 when the workers could not start."""
        previous = self._install_signals()
        try:
            self.workers = [self._start_worker() for _ in range(self.count)]
            if not self._wait_until_serving():
                self._stop_all()
                return STARTUP_FAILURE if not self.stop_requested.is_set() else 0
            on_ready()
            healthy = True
            while healthy and not self.stop_requested.wait(0.2):
                healthy = self._replace_dead()
            if self._signals:
                _log.info("%s received: stopping %d workers", signal.Signals(self._signals[0]).name, self.count)
            clean = self._stop_all()
            if not healthy:
                return STARTUP_FAILURE
            return 0 if clean else 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The listening socket the workers share (IPv6 when ``host`` is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def listening_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in str(host) else str(host)
    return f"http://{shown}:{port}"


def worker_count(value: str) -> int:
    """Parse ``--workers`` (1-64)."""
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"expected a number of workers, got {value!r}") from None
    if not 1 <= count <= 64:
        raise ValueError(f"expected 1-64 workers, got {count}")
    return count


__all__: Sequence[str] = ["STARTUP_FAILURE", "Supervisor", "bind", "listening_url", "worker_count"]
