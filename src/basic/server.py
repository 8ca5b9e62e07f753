"""The HTTP server: ``python -m basic.server`` serves the ``hello`` and ``email`` workflows.

Routes are WorkflowServer's (``llama_agents.server``): ``POST /workflows/{hello,email}/run`` with
``{"start_event": {...}}`` (or ``{"kwargs": {...}}``), ``/run-nowait``, ``GET /health``, ...

Why we run uvicorn ourselves instead of ``WorkflowServer.serve()``: a container stop must not lose
the spans of requests that already got their response. On SIGTERM or SIGINT, uvicorn stops accepting
connections and waits up to ``--grace`` seconds for in-flight requests; runs started with
``/run-nowait`` get what is left of the same grace period before WorkflowServer cancels them; then
the telemetry is flushed (and what could not be delivered is spooled) under one deadline, and the
process exits 0. The atexit flush of ``otel_basic`` stays as the fallback for other exits.

Trust boundary: a request's ``traceparent`` is followed (``BASIC_SERVER_TRUST_TRACEPARENT=true``, the
default), so a caller that knows a trace id can attach a run to that trace, and the run sets the
trace's name, input and output. Behind a proxy that does not strip it from untrusted clients, set
``BASIC_SERVER_TRUST_TRACEPARENT=false`` (``--trust-traceparent false``): every run starts its own trace.
A caller's baggage never reaches the run's context; only session/user ids are read from it.

Bad ``email_data`` (or callback) is answered with 400 and the problems by field, before any run
starts: WorkflowServer itself reports a run that failed in its first step as a 500.
"""

from __future__ import annotations

import basic.observability  # noqa: F401  (configures telemetry from the environment first)

# isort: split

import argparse
import asyncio
import importlib.util
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any, cast

import uvicorn
from llama_agents.server import AbstractWorkflowStore, HandlerQuery, MemoryWorkflowStore, WorkflowServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from workflows import Workflow

import otel_basic
from basic import workers
from basic.email_workflow import _check_callback, email_workflow
from basic.models import EmailData, InvalidEmailError
from basic.workflow import workflow as hello_workflow
from otel_basic import lifecycle, runtime
from otel_basic.asgi import TraceContextMiddleware

_log = logging.getLogger("basic.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_GRACE = 10.0
STARTUP_FAILURE = 3
"""Exit status when the server could not start (uvicorn's own code for a failed bind)."""
READY_PREFIX = "basic.server listening on "
"""The one line printed to stdout once the socket accepts connections (followed by the URL)."""

StartValidator = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------------- input errors


def check_email_start(fields: dict[str, Any]) -> None:
    """Raise ``InvalidEmailError`` / ``ValueError`` exactly when the email run would fail on its input."""
    EmailData.parse(fields.get("email_data"))
    _check_callback(fields.get("callback"))


_RUN_PATH = re.compile(r"/workflows/(?P<name>[^/]+)/run(?:-nowait)?/?$")


def _start_fields(body: bytes) -> dict[str, Any] | None:
    """The start event's fields as WorkflowServer will read them, or None when it will reject the body."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    event = data.get("start_event", data.get("kwargs", {}))
    if event is None:
        return {}
    if isinstance(event, str):
        try:
            event = json.loads(event)
        except ValueError:
            return None
    if not isinstance(event, dict):
        return None
    if "value" in event or ("type" in event and "qualified_name" in event):  # an event envelope
        event = event.get("value")
    return event if isinstance(event, dict) else None


class RejectInvalidInput:
    """ASGI middleware: answer 400 to a run request whose start event the workflow would reject.

    Without it WorkflowServer starts the run, the first step raises ``InvalidEmailError`` and the
    response is a 500 with ``status: failed``; a client error should say so. Anything this
    middleware cannot read is passed through for WorkflowServer to report.
    """

    def __init__(self, app: ASGIApp, validators: Mapping[str, StartValidator]) -> None:
        self.app = app
        self.validators = dict(validators)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _RUN_PATH.search(scope["path"]) if scope["type"] == "http" else None
        validator = self.validators.get(match["name"]) if match and scope["method"] == "POST" else None
        if validator is None:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        fields = _start_fields(body)
        if fields is not None:
            try:
                validator(fields)
            except ValueError as exc:
                await _send_json(send, 400, _problem(exc))
                return
            except Exception:  # a validator bug must not take the route down
                _log.debug("start-event validation failed unexpectedly", exc_info=True)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _problem(exc: ValueError) -> dict[str, Any]:
    payload: dict[str, Any] = {"detail": str(exc)}
    if isinstance(exc, InvalidEmailError):
        payload["problems"] = exc.problems
    return payload


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------- graceful shutdown


class GracePeriod:
    """One grace budget for a stop: in-flight requests first, then background runs."""

    def __init__(self, seconds: float) -> None:
        self.seconds = max(0.0, seconds)
        self.started: float | None = None

    def begin(self) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def expire(self) -> None:
        self.seconds = 0.0

    def remaining(self) -> float:
        if self.started is None:
            return self.seconds
        return max(0.0, self.started + self.seconds - time.monotonic())


class FinishRunsBeforeStop:
    """ASGI middleware for the stop: finish runs, and answer 503 for the ones that could not finish.

    * lifespan: hold the shutdown until running workflow runs end, or the grace period does.
      uvicorn waits for open requests only; WorkflowServer's ``stop()`` then cancels every run still
      going (e.g. those started with ``/run-nowait``), so they would end cancelled.
    * http: a ``/run`` request whose run was cancelled by the stop (grace period over, or a second
      Ctrl-C) ends in ``CancelledError``, which WorkflowServer does not handle: uvicorn would log a
      traceback and answer a bare 500. Answer ``503`` with a JSON detail instead.
    """

    def __init__(self, app: ASGIApp, store: AbstractWorkflowStore, grace: GracePeriod) -> None:
        self.app = app
        self.store = store
        self.grace = grace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":

            async def receive_or_wait() -> Message:
                message = await receive()
                if message["type"] == "lifespan.shutdown":
                    self.grace.begin()
                    await self.wait_for_runs()
                return message

            await self.app(scope, receive_or_wait, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if started or self.grace.started is None:
                raise
            _log.warning("%s %s: cancelled by the shutdown", scope["method"], scope["path"])
            await _send_json(send, 503, {"detail": "cancelled: the server is shutting down"})

    async def wait_for_runs(self) -> None:
        query = HandlerQuery(status_in=["running"], is_idle=False)
        announced = False
        try:
            while running := await self.store.query(query):
                remaining = self.grace.remaining()
                if remaining <= 0:
                    _log.warning("grace period over: cancelling %d unfinished run(s)", len(running))
                    return
                if not announced:
                    _log.info("waiting up to %.1fs for %d run(s) to finish", remaining, len(running))
                    announced = True
                await asyncio.sleep(min(0.05, remaining))
        except Exception:  # the store is WorkflowServer's; never block the shutdown on it
            _log.debug("could not check for running workflow runs", exc_info=True)


class _Uvicorn(uvicorn.Server):
    """uvicorn.Server that starts the shared grace period when its shutdown begins."""

    def __init__(self, config: uvicorn.Config, grace: GracePeriod) -> None:
        super().__init__(config)
        self.grace = grace

    async def shutdown(self, sockets: Any = None) -> None:
        self.grace.begin()
        await super().shutdown(sockets)


class _StopSignals:
    """Our SIGTERM/SIGINT handlers for when uvicorn's are not installed (before and after serving).

    uvicorn re-raises the signal it handled after ``serve()`` returns, which with the default
    handlers would kill the process (SIGTERM) or raise KeyboardInterrupt (SIGINT) before the final
    flush. Here a signal just asks the server to stop; during the final flush it is ignored (the
    flush has its own deadline).
    """

    def __init__(self) -> None:
        self.server: uvicorn.Server | None = None
        self.requested: int | None = None
        self.serving = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def attach(self, server: uvicorn.Server) -> None:
        self.server = server
        if self.requested is not None:
            server.should_exit = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is None:
            self.requested = signum
            if not self.serving:
                _log.info("%s received before serving: exiting", signal.Signals(signum).name)
        if self.server is not None:
            self.server.should_exit = True


# -------------------------------------------------------------------------------------- server


def _build(
    grace: float, hello: Workflow | None = None, email: Workflow | None = None, *, trust_traceparent: bool = True
) -> tuple[WorkflowServer, GracePeriod]:
    store = MemoryWorkflowStore()
    server = WorkflowServer(workflow_store=store)
    server.add_workflow("hello", hello if hello is not None else hello_workflow)
    server.add_workflow("email", email if email is not None else email_workflow)
    period = GracePeriod(grace)
    server.app.add_middleware(RejectInvalidInput, validators={"email": check_email_start})
    server.app.add_middleware(FinishRunsBeforeStop, store=store, grace=period)
    # outermost: the caller's trace for everything inside
    server.app.add_middleware(TraceContextMiddleware, trust_traceparent=trust_traceparent)
    return server, period


class FlushWhenLifespanEnds:
    """ASGI middleware: flush the telemetry once the app's lifespan shutdown is complete.

    For servers that run the app in worker processes of their own (gunicorn with uvicorn workers):
    their worker re-raises the stop signal with its default action when it stops serving, which
    ends the process before any exit handler could flush. The lifespan shutdown is the last point
    that runs, after the runs finished (or were cancelled and ended their spans).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def flush_then_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                report = await otel_basic.aflush()
                if report.enabled:
                    level = logging.INFO if report else logging.WARNING
                    _log.log(level, "telemetry flushed at shutdown (pid %d): %s", os.getpid(), report.summary())
            await send(message)

        await self.app(scope, receive, flush_then_send)


def create_app() -> ASGIApp:
    """The ASGI app for another server's workers: ``gunicorn 'basic.server:create_app()' -k
    uvicorn_worker.UvicornWorker -w N``. Each worker process imports this module, so it configures
    its own telemetry; runs get ``BASIC_SERVER_GRACE`` seconds to finish at shutdown, then the
    telemetry is flushed (:class:`FlushWhenLifespanEnds`). ``BASIC_SERVER_TRUST_TRACEPARENT``
    applies as for ``python -m basic.server``."""
    try:
        grace = _seconds(os.environ.get("BASIC_SERVER_GRACE") or str(DEFAULT_GRACE))
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"BASIC_SERVER_GRACE: {exc}") from None
    try:
        trust = _boolean(os.environ.get("BASIC_SERVER_TRUST_TRACEPARENT") or "true")
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"BASIC_SERVER_TRUST_TRACEPARENT: {exc}") from None
    server = build_server(grace, trust_traceparent=trust)
    app: ASGIApp = FlushWhenLifespanEnds(server.app)
    return app


def build_server(
    grace: float = DEFAULT_GRACE,
    *,
    hello: Workflow | None = None,
    email: Workflow | None = None,
    trust_traceparent: bool = True,
) -> WorkflowServer:
    """A WorkflowServer with ``hello`` and ``email``; ``server.app`` also answers bad input with 400
    and lets running runs finish (up to ``grace`` seconds) before its lifespan stops.
    ``trust_traceparent=False``: runs never join the trace a request's ``traceparent`` names.

    Defaults to the module-level workflow instances. WorkflowServer renames a workflow to its
    route name and refuses to once that instance has run, so a process that already ran them
    (tests, an embedding app) passes fresh instances.
    """
    return _build(grace, hello, email, trust_traceparent=trust_traceparent)[0]


def _listening_url(server: uvicorn.Server) -> str:
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    shown = f"[{host}]" if ":" in str(host) else str(host)
    return f"http://{shown}:{port}"


def _print_ready(url: str) -> None:
    print(READY_PREFIX + url, flush=True)


async def _announce(server: uvicorn.Server, ready: Callable[[str], None]) -> None:
    while not server.started:
        await asyncio.sleep(0.02)
    _log.info("event loop: %s", type(asyncio.get_running_loop()).__module__.partition(".")[0])
    ready(_listening_url(server))


async def _serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    grace: float = DEFAULT_GRACE,
    *,
    log_level: str = "info",
    signals: _StopSignals | None = None,
    sockets: list[socket.socket] | None = None,
    ready: Callable[[str], None] = _print_ready,
    trust_traceparent: bool = True,
) -> bool:
    """Serve until stopped (SIGTERM / SIGINT); return False if the server could not start.

    The telemetry is not flushed here: ``main`` does it once the event loop is gone, so spans that
    cancelled tasks end while the loop closes are delivered too.
    """
    app, period = _build(grace, trust_traceparent=trust_traceparent)
    config = uvicorn.Config(
        app.app,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level,
        # Annotated int, used as asyncio.wait_for's timeout: a float works.
        timeout_graceful_shutdown=cast(int, grace),
    )
    server = _Uvicorn(config, period)
    if signals is not None:
        signals.attach(server)
        signals.serving = True
    announcer = asyncio.create_task(_announce(server, ready))
    try:
        await server.serve(sockets=sockets)
    finally:
        announcer.cancel()
        if signals is not None:
            signals.serving = False
    if server.started and server.force_exit:
        await _finish_forced_stop(server, period)
    return server.started


async def _finish_forced_stop(server: uvicorn.Server, period: GracePeriod) -> None:
    """After a second SIGINT uvicorn skips the waiting and the lifespan shutdown. Still stop
    WorkflowServer (its runs are cancelled, so their spans end) and give the cancelled requests a
    moment to answer: otherwise asyncio.run cancels them all and uvicorn logs tracebacks."""
    period.expire()
    try:
        await asyncio.wait_for(server.lifespan.shutdown(), timeout=5.0)
        if pending := set(server.server_state.tasks):
            await asyncio.wait(pending, timeout=1.0)
    except Exception:
        _log.debug("forced stop: WorkflowServer shutdown failed", exc_info=True)


# ----------------------------------------------------------------------------------------- CLI


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {port}")
    return port


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {value!r}")
    return seconds


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _workers(value: str) -> int:
    try:
        return workers.worker_count(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _loop(value: str) -> str:
    loop = value.strip().lower()
    if loop not in ("auto", "asyncio", "uvloop"):
        raise argparse.ArgumentTypeError(f"expected auto, asyncio or uvloop, got {value!r}")
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise argparse.ArgumentTypeError("uvloop is not installed (pip install uvloop, or uvicorn[standard])")
    return loop


def _loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``uvicorn --loop`` would run (auto: uvloop when installed). Serving from our own
    ``asyncio.run`` had always run on asyncio's loop, whatever was installed, unlike ``uvicorn`` and
    gunicorn's uvicorn workers: uvicorn's own choice, asked of its config, keeps the two the same."""
    return uvicorn.Config(_no_app, loop=loop).get_loop_factory()


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The app of the config :func:`_loop_factory` asks (never served)."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m basic.server",
        description="Serve the hello and email workflows over HTTP (llama_agents WorkflowServer).",
    )
    parser.add_argument(
        "--host",
        default=env.get("BASIC_SERVER_HOST") or DEFAULT_HOST,
        help=f"bind address (env BASIC_SERVER_HOST, default {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=env.get("BASIC_SERVER_PORT") or str(DEFAULT_PORT),
        help=f"port, 0 for any free one (env BASIC_SERVER_PORT, default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--grace",
        type=_seconds,
        default=env.get("BASIC_SERVER_GRACE") or str(DEFAULT_GRACE),
        help="seconds in-flight runs get to finish after SIGTERM/SIGINT "
        f"(env BASIC_SERVER_GRACE, default {DEFAULT_GRACE:g})",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=env.get("BASIC_SERVER_WORKERS") or "1",
        help="worker processes sharing the port, each with its own telemetry pipeline "
        "(env BASIC_SERVER_WORKERS, default 1, at most 64)",
    )
    parser.add_argument(
        "--trust-traceparent",
        type=_boolean,
        default=env.get("BASIC_SERVER_TRUST_TRACEPARENT") or "true",
        metavar="{true,false}",
        help="continue the trace a request's traceparent names (env BASIC_SERVER_TRUST_TRACEPARENT, "
        "default true); false: every run starts its own trace",
    )
    parser.add_argument(
        "--loop",
        type=_loop,
        default=env.get("BASIC_SERVER_LOOP") or "auto",
        metavar="{auto,asyncio,uvloop}",
        help="event loop, as uvicorn's --loop (env BASIC_SERVER_LOOP, default auto: uvloop when installed)",
    )
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        default=(env.get("BASIC_SERVER_LOG_LEVEL") or "info").lower(),
        help="log level (env BASIC_SERVER_LOG_LEVEL, default info)",
    )
    return parser.parse_args(argv)


def _configure_logging(level_name: str, *, worker: bool = False) -> None:
    """Print our records (and otel_basic's) to stderr like uvicorn's, at ``level_name``
    (a worker's lines carry its pid).

    The process is ours, so this replaces otel_basic's WARNING-only last-resort handler; the span
    bridge handler stays, and the root level is only ever lowered so it keeps seeing its records.
    """
    level = logging.getLevelNamesMapping()[level_name.upper()]
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "otel-basic-last-resort":
            root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    pid = "[worker %(process)d] " if worker else ""
    console.setFormatter(logging.Formatter(f"%(levelname)s:     {pid}%(name)s: %(message)s"))
    root.addHandler(console)
    root.setLevel(min(level, root.level if root.level != logging.NOTSET else logging.WARNING))
    # httpx logs every request URL at INFO; a callback URL may carry a token in its query string.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _final_flush() -> None:
    report = otel_basic.shutdown()  # one deadline (OTEL_BASIC_FLUSH_TIMEOUT); leftovers are spooled
    if not report.enabled:
        _log.debug("telemetry disabled: nothing to flush")
    elif report:
        _log.info("telemetry flushed at exit: %s", report.summary())
    else:
        _log.warning("telemetry flush at exit incomplete: %s", report.summary())


def _serve_until_stopped(
    args: argparse.Namespace,
    sockets: list[socket.socket] | None = None,
    ready: Callable[[str], None] = _print_ready,
) -> bool:
    """Serve (this process) until SIGTERM/SIGINT, then flush the telemetry; False if it never started."""
    lifecycle.install(runtime.current, signals=False)  # the atexit flush: the fallback for any other exit
    signals = _StopSignals()
    signals.install()
    try:
        with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
            return runner.run(
                _serve(
                    args.host,
                    args.port,
                    args.grace,
                    log_level=args.log_level,
                    signals=signals,
                    sockets=sockets,
                    ready=ready,
                    trust_traceparent=args.trust_traceparent,
                )
            )
    finally:
        _final_flush()
        signals.restore()


def _worker_main(args: argparse.Namespace, sock: socket.socket, ready: Connection) -> None:
    """One worker process of ``--workers N``: what a single-process server does, on the shared socket.

    Telemetry was configured when this (spawned) process imported the module: its own pipeline."""
    _configure_logging(args.log_level, worker=True)

    def say_ready(url: str) -> None:
        ready.send(os.getpid())
        ready.close()

    started = _serve_until_stopped(args, sockets=[sock], ready=say_ready)
    sys.exit(0 if started else STARTUP_FAILURE)


def _supervise(args: argparse.Namespace) -> int:
    try:
        sock = workers.bind(args.host, args.port)
    except OSError as exc:
        _log.error("could not bind %s:%s: %s", args.host, args.port, exc)
        return STARTUP_FAILURE
    # A worker needs the grace period, then its flush (one deadline), to stop cleanly.
    telemetry = otel_basic.current()
    flush_timeout = telemetry.settings.flush_timeout if telemetry is not None else 5.0
    supervisor = workers.Supervisor(
        args.workers, _worker_main, args, sock, stop_timeout=args.grace + flush_timeout + 15.0
    )
    try:
        _log.info("starting %d workers (pid %d supervises)", args.workers, os.getpid())
        return supervisor.run(on_ready=lambda: _print_ready(workers.listening_url(sock)))
    finally:
        sock.close()
        report = otel_basic.shutdown()  # the supervisor makes no spans; it may have replayed the spool
        if report.enabled and not report:
            _log.warning("telemetry flush at exit incomplete: %s", report.summary())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT, then flush telemetry; 0 on a clean stop."""
    args = _parse_args(argv)
    _configure_logging(args.log_level)
    if args.workers > 1:
        return _supervise(args)
    return 0 if _serve_until_stopped(args) else STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(main())
