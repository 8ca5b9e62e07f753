"""A real OpenTelemetry collector on localhost, without Docker: the ``rotel-agent`` binary.

Why: routing the app through a collector moves the Langfuse credentials out of the app and lets
spans be accepted in a few milliseconds while the collector retries Langfuse in the background.
``rotel`` (PyPI) ships a Rust OTLP collector as a wheel, so tests and laptops get a real one with
``pip install``. Limits (see collector/README.md): rotel retries **in memory** only and drops what
is pending when it is stopped; production should run otelcol-contrib with its persistent queue
(``otel-collector.yaml``).

The secret never reaches argv (``ps`` shows argv to every local user): the exporter headers go to
the agent through ``ROTEL_OTLP_EXPORTER_CUSTOM_HEADERS`` in its environment.

Usage::

    with RotelCollector.for_langfuse(base_url, public_key, secret_key) as collector:
        app_endpoint = collector.http_endpoint   # http://127.0.0.1:PORT, OTLP/HTTP
        ...

    python -m otel_basic.collector [--http-port 4318] [--grpc-port 4317]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Literal, TypedDict, Unpack
from urllib.parse import urlsplit

from otel_basic.settings import (
    LANGFUSE_OTLP_PATH,
    ConfigError,
    basic_auth,
    environ_snapshot,
    is_loopback,
    load_settings,
    parse_langfuse_base_url,
    parse_url,
)

__all__ = [
    "CollectorError",
    "CollectorOptions",
    "CollectorStartError",
    "RotelCollector",
    "RotelNotFoundError",
    "find_rotel_agent",
    "free_port",
    "langfuse_exporter_headers",
    "main",
    "run_foreground",
]

DEFAULT_HTTP_PORT = 4318
DEFAULT_GRPC_PORT = 4317
DEFAULT_HOST = "127.0.0.1"
_HEADERS_ENV = "ROTEL_OTLP_EXPORTER_CUSTOM_HEADERS"
_BIND_FAILURE_MARKERS = ("Address already in use", "unable to bind")

Output = Literal["capture", "inherit"]


class CollectorOptions(TypedDict, total=False):
    """Keyword options of :class:`RotelCollector` besides the exporter target."""

    http_port: int | None
    grpc_port: int | None
    host: str
    retry_initial_backoff: float | None
    retry_max_backoff: float | None
    retry_max_elapsed_time: float | None
    request_timeout: float | None
    batch_timeout: float | None
    startup_timeout: float
    stop_grace: float
    output: Output
    binary: str | os.PathLike[str] | None


class CollectorError(RuntimeError):
    """The local collector could not be run as asked."""


class RotelNotFoundError(CollectorError, FileNotFoundError):
    """The ``rotel`` package (and its ``rotel-agent`` binary) is not installed."""


class CollectorStartError(CollectorError):
    """rotel-agent exited or did not open its ports; ``output`` holds what it printed."""

    def __init__(self, message: str, output: str = "", returncode: int | None = None) -> None:
        self.output = output
        self.returncode = returncode
        tail = output.strip()[-2000:]
        super().__init__(f"{message}\n--- rotel-agent output ---\n{tail}" if tail else message)


def find_rotel_agent() -> Path:
    """Path of the ``rotel-agent`` binary shipped inside the ``rotel`` wheel (next to its __init__)."""
    try:
        import rotel
    except ImportError as exc:
        raise RotelNotFoundError(
            "the rotel package is not installed: pip install 'rotel>=0.0.1a15' (or otel-basic[dev])"
        ) from exc
    package_file = rotel.__file__
    if package_file is None:  # a namespace package: not the real wheel
        raise RotelNotFoundError("the rotel package has no files (is it a namespace package?)")
    binary = Path(package_file).resolve().parent / "rotel-agent"
    if not binary.is_file():
        raise RotelNotFoundError(f"rotel is installed but {binary} is missing (unsupported platform?)")
    if not os.access(binary, os.X_OK):
        raise RotelNotFoundError(f"{binary} is not executable")
    return binary


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port that was free a moment ago (bind to 0, read it, close). Racy by nature: callers retry."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def langfuse_exporter_headers(public_key: str, secret_key: str) -> dict[str, str]:
    """The two headers Langfuse's OTLP endpoint needs; the same values the app's direct path sends."""
    return {"Authorization": basic_auth(public_key, secret_key), "x-langfuse-ingestion-version": "4"}


def _format_headers(headers: Mapping[str, str]) -> str:
    """rotel's ``k=v,k2=v2`` syntax; it has no escaping, so refuse what it cannot carry."""
    items = []
    for key, value in headers.items():
        if not key or any(c in key for c in "=,\r\n") or any(c.isspace() for c in key):
            raise ValueError(f"header name {key!r} cannot be passed to rotel")
        if any(c in value for c in ",\r\n"):
            raise ValueError(f"the value of header {key!r} contains ',' or a newline: rotel cannot carry it")
        items.append(f"{key}={value}")
    return ",".join(items)


def _redacted_headers(headers: Mapping[str, str]) -> str:
    """Header names with secret-bearing values hidden, for printing."""
    shown = []
    for key, value in headers.items():
        low = key.lower()
        secret = low in ("authorization", "proxy-authorization", "cookie") or "key" in low or "token" in low
        if secret:
            scheme = value.split(" ", 1)[0] if " " in value else ""
            shown.append(f"{key}={scheme + ' ' if scheme else ''}****")
        else:
            shown.append(f"{key}={value}")
    return ", ".join(shown)


def _seconds_to_duration(name: str, seconds: float) -> str:
    """rotel takes humantime durations ("500ms", "5s"); we take seconds like the rest of otel_basic."""
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{name} must be a positive number of seconds, got {seconds!r}")
    return f"{max(1, round(seconds * 1000))}ms"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


# Strong references: a started agent must be stoppable at exit even if its owner dropped it.
_live: set[RotelCollector] = set()


@atexit.register
def _stop_all() -> None:
    """Don't leave an agent behind when the interpreter exits normally (it runs in its own session)."""
    for collector in list(_live):
        with contextlib.suppress(Exception):
            collector.stop(grace=2.0)


class RotelCollector:
    """One ``rotel-agent start`` child process: OTLP http + grpc in on 127.0.0.1, OTLP/HTTP out.

    ``start()`` returns once both ports accept connections (or raises :class:`CollectorStartError`
    with the agent's output); ``stop()`` sends SIGTERM, waits ``grace`` seconds, then SIGKILLs.
    Ports left as ``None`` are picked free at start; a bind race is retried once with new ports.
    Retry settings are seconds; ``None`` keeps rotel's defaults (initial 5 s, max 30 s, give up
    after 300 s).
    """

    def __init__(
        self,
        exporter_endpoint: str,
        headers: Mapping[str, str] | None = None,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        host: str = DEFAULT_HOST,
        retry_initial_backoff: float | None = None,
        retry_max_backoff: float | None = None,
        retry_max_elapsed_time: float | None = None,
        request_timeout: float | None = None,
        batch_timeout: float | None = None,
        startup_timeout: float = 10.0,
        stop_grace: float = 10.0,
        output: Output = "capture",
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        self.exporter_endpoint = parse_url("exporter_endpoint", exporter_endpoint)
        self._headers = dict(headers or {})
        self._header_value = _format_headers(self._headers)  # validate now, not in start()
        self.host = host
        self._requested_ports = (http_port, grpc_port)
        self._http_port = http_port
        self._grpc_port = grpc_port
        self._durations: list[str] = []
        for flag, value in (
            ("--otlp-exporter-retry-initial-backoff", retry_initial_backoff),
            ("--otlp-exporter-retry-max-backoff", retry_max_backoff),
            ("--otlp-exporter-retry-max-elapsed-time", retry_max_elapsed_time),
            ("--otlp-exporter-request-timeout", request_timeout),
            ("--batch-timeout", batch_timeout),
        ):
            if value is not None:
                self._durations += [flag, _seconds_to_duration(flag.lstrip("-"), value)]
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.output_mode: Output = output
        self._binary = Path(binary) if binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._last_output = ""
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def for_langfuse(
        cls, base_url: str, public_key: str, secret_key: str, **options: Unpack[CollectorOptions]
    ) -> RotelCollector:
        """A collector exporting to Langfuse's OTLP endpoint (``{base_url}/api/public/otel/v1/traces``)."""
        base = parse_langfuse_base_url("LANGFUSE_BASE_URL", base_url)
        if not public_key or not secret_key:
            raise ConfigError("LANGFUSE_PUBLIC_KEY", "the public and the secret key are both required")
        return cls(base + LANGFUSE_OTLP_PATH, langfuse_exporter_headers(public_key, secret_key), **options)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **options: Unpack[CollectorOptions]
    ) -> RotelCollector:
        """Read LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY / LANGFUSE_BASE_URL (or LANGFUSE_HOST).

        The same variables and defaults as the app (via :func:`otel_basic.settings.load_settings`),
        so the collector authenticates exactly as the direct path would.
        """
        settings = load_settings(env)
        pk, sk = settings.langfuse_public_key, settings.langfuse_secret_key
        if not pk or not sk:
            missing = [n for n, v in (("LANGFUSE_PUBLIC_KEY", pk), ("LANGFUSE_SECRET_KEY", sk)) if not v]
            raise ConfigError(missing[0], f"{' and '.join(missing)} must be set for the collector to export")
        base = settings.langfuse_base_url
        if urlsplit(base).scheme == "http" and not is_loopback(base) and not settings.insecure_ok:
            raise ConfigError(
                "LANGFUSE_BASE_URL",
                "refusing to send credentials over plain http:// to a non-loopback host; use https:// "
                "or set OTEL_BASIC_ALLOW_INSECURE=true",
            )
        return cls.for_langfuse(base, pk, sk, **options)

    # ------------------------------------------------------------------ addresses

    @property
    def http_port(self) -> int:
        if self._http_port is None:
            raise CollectorError("the collector has no HTTP port yet: call start() first")
        return self._http_port

    @property
    def grpc_port(self) -> int:
        if self._grpc_port is None:
            raise CollectorError("the collector has no gRPC port yet: call start() first")
        return self._grpc_port

    @property
    def http_endpoint(self) -> str:
        """Base URL for OTLP/HTTP (``OTEL_EXPORTER_OTLP_ENDPOINT``; the SDK appends /v1/traces)."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        """Endpoint for OTLP/gRPC (``OTEL_EXPORTER_OTLP_ENDPOINT`` with protocol ``grpc``)."""
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def headers_redacted(self) -> str:
        return _redacted_headers(self._headers)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    def poll(self) -> int | None:
        """The agent's exit code, or None while it runs (or was never started)."""
        proc = self._proc
        return proc.poll() if proc is not None else None

    def output(self) -> str:
        """What the agent printed so far (captured mode; never includes the headers' values)."""
        with self._lock:
            if self._log is None:
                return self._last_output
            fd = self._log.fileno()
            size = os.fstat(fd).st_size
            # pread: the child shares the file offset, so never seek it
            return os.pread(fd, size, 0).decode("utf-8", "replace")

    def __repr__(self) -> str:
        ports = f"http={self._http_port}, grpc={self._grpc_port}"
        return (f"RotelCollector({ports}, exporter={self.exporter_endpoint!r}, "
                f"headers={self.headers_redacted!r}, running={self.running})")

    # ------------------------------------------------------------------ lifecycle

    def argv(self) -> list[str]:
        """The agent's command line (no secret in it: headers travel in the environment)."""
        binary = self._binary or find_rotel_agent()
        return [
            str(binary), "start",
            "--otlp-http-endpoint", f"{self.host}:{self.http_port}",
            "--otlp-grpc-endpoint", f"{self.host}:{self.grpc_port}",
            "--otlp-receiver-metrics-disabled",
            "--otlp-receiver-logs-disabled",
            "--exporter", "otlp",
            "--otlp-exporter-protocol", "http",
            "--otlp-exporter-endpoint", self.exporter_endpoint,
            *self._durations,
        ]

    def child_env(self) -> dict[str, str]:
        """Our environment minus stray ROTEL_* settings and Langfuse keys, plus the headers."""
        env = {
            k: v for k, v in environ_snapshot().items()
            if not k.startswith("ROTEL_") and k not in ("LANGFUSE_SECRET_KEY", "LANGFUSE_PUBLIC_KEY")
        }
        env["NO_COLOR"] = "1"
        if self._header_value:
            env[_HEADERS_ENV] = self._header_value
        return env

    def start(self) -> RotelCollector:
        """Spawn the agent and wait until its ports accept connections."""
        with self._lock:
            if self.running:
                return self
            auto_ports = None in self._requested_ports
            try:
                self._spawn_and_wait()
            except CollectorStartError as exc:
                if not (auto_ports and any(m in exc.output for m in _BIND_FAILURE_MARKERS)):
                    raise
                self._spawn_and_wait()  # another process took a port we picked: once more
            _live.add(self)
            return self

    def _pick_ports(self) -> None:
        http_port, grpc_port = self._requested_ports
        if http_port is None:
            http_port = free_port(self.host)
        while grpc_port is None or grpc_port == http_port:
            grpc_port = free_port(self.host)
        if http_port == grpc_port:
            raise CollectorError(f"http_port and grpc_port must differ (both {http_port})")
        self._http_port, self._grpc_port = http_port, grpc_port

    def _spawn_and_wait(self) -> None:
        self._pick_ports()
        argv = self.argv()
        self._close_log()
        stdout: IO[bytes] | None = None
        if self.output_mode == "capture":
            self._log = tempfile.TemporaryFile(prefix="rotel-agent-")  # noqa: SIM115 (closed in stop())
            stdout = self._log
        try:
            # Own session: a terminal Ctrl-C reaches only us, and we stop the agent in order.
            self._proc = subprocess.Popen(
                argv, env=self.child_env(), stdin=subprocess.DEVNULL, stdout=stdout,
                stderr=subprocess.STDOUT if stdout is not None else None, start_new_session=True,
            )
        except OSError as exc:
            raise CollectorStartError(f"could not run {argv[0]}: {exc}") from exc
        deadline = time.monotonic() + self.startup_timeout
        ports = (self.http_port, self.grpc_port)
        pending = list(ports)
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc.wait()
                raise CollectorStartError(
                    f"rotel-agent exited with code {code} before listening on {self.host} ports {ports}",
                    self._finish_output(), code,
                )
            pending = [p for p in pending if not _port_open(self.host, p)]
            if not pending:
                break
            if time.monotonic() >= deadline:
                self._kill()
                raise CollectorStartError(
                    f"rotel-agent did not listen on {self.host}:{pending} within {self.startup_timeout:g}s",
                    self._finish_output(),
                )
            time.sleep(0.01)
        # A foreign process on a port we picked would also accept; rotel then exits at once (bind error).
        time.sleep(0.05)
        code = self._proc.poll()
        if code is not None:
            raise CollectorStartError(
                f"rotel-agent exited with code {code} right after start", self._finish_output(), code
            )

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM, wait ``grace`` seconds (default ``stop_grace``), then SIGKILL; return the exit code.

        rotel itself gives up on data still being retried a few seconds after SIGTERM (measured ~3 s
        with 0.0.1a15): what was not delivered by then is lost. That is the in-memory limit.
        """
        with self._lock:
            proc = self._proc
            if proc is None:
                return None
            grace = self.stop_grace if grace is None else grace
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self._kill()
            code = proc.wait()
            self._finish_output()
            self._proc = None
            _live.discard(self)
            return code

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)

    def _finish_output(self) -> str:
        with self._lock:
            if self._log is not None:
                self._last_output = self.output()
                self._close_log()
            return self._last_output

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> RotelCollector:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------- foreground runner


def run_foreground(
    *,
    http_port: int = DEFAULT_HTTP_PORT,
    grpc_port: int = DEFAULT_GRPC_PORT,
    host: str = DEFAULT_HOST,
    env: Mapping[str, str] | None = None,
    out: IO[str] | None = None,
) -> int:
    """Run a rotel collector from the environment until Ctrl-C / SIGTERM; return an exit code.

    Prints where it listens and how to point the app at it, never the secret. The agent's own log
    (retries, drops) goes to this process's stdout/stderr. Signal handlers are installed only when
    called from the main thread, and restored on return.
    """
    out = out if out is not None else sys.stdout
    try:
        collector = RotelCollector.from_env(
            env, http_port=http_port, grpc_port=grpc_port, host=host, output="inherit"
        )
        collector.start()
    except ConfigError as exc:
        print(f"otel-basic collector: {exc}", file=sys.stderr)
        return 2
    except CollectorError as exc:
        print(f"otel-basic collector: {exc}", file=sys.stderr)
        if isinstance(exc, CollectorStartError) and exc.returncode is not None:
            # inherit mode: the agent's own error is printed above, e.g. "Address already in use"
            print("(a port in use means another collector runs: choose --http-port / --grpc-port)",
                  file=sys.stderr)
        return 1

    stopping = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stopping.set()

    previous: dict[signal.Signals, object] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        print(
            f"rotel collector (pid {collector.pid}) listening on\n"
            f"  OTLP/HTTP  {collector.http_endpoint}   (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)\n"
            f"  OTLP/gRPC  {collector.grpc_endpoint}   (OTEL_EXPORTER_OTLP_PROTOCOL=grpc)\n"
            f"exporting traces to {collector.exporter_endpoint}/v1/traces "
            f"with headers {collector.headers_redacted}\n"
            f"point the app at it: OTEL_EXPORTER_OTLP_ENDPOINT={collector.http_endpoint} "
            f"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf\n"
            "retries are in memory only: stop me with Ctrl-C once the app has flushed and I have sent.\n"
            "note: rotel logs 'failed to decode response ... dropping data' for batches Langfuse ACCEPTED\n"
            "(Langfuse answers 200 with JSON, rotel expects protobuf); failures show Http(...) or Connect.",
            file=out, flush=True,
        )
        while not stopping.wait(0.2):
            code = collector.poll()
            if code is not None:
                collector.stop()
                print(f"rotel-agent exited on its own with code {code}", file=sys.stderr)
                return code or 1
        name = signal.Signals(received[0]).name if received else "signal"
        print(f"{name}: stopping the collector (pending retries are dropped after a few seconds)...",
              file=out, flush=True)
        code = collector.stop()
        print(f"collector stopped (exit code {code})", file=out, flush=True)
        return 0
    finally:
        collector.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m otel_basic.collector``: a local collector to Langfuse from LANGFUSE_* variables."""
    parser = argparse.ArgumentParser(
        prog="python -m otel_basic.collector",
        description="Run a local OTLP collector (rotel) that forwards traces to Langfuse. "
        "Reads LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, LANGFUSE_BASE_URL (or LANGFUSE_HOST).",
    )
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="OTLP/HTTP port (4318)")
    parser.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="OTLP/gRPC port (4317)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (127.0.0.1; anything else exposes an open port)")
    args = parser.parse_args(argv)
    for name in ("http_port", "grpc_port"):
        port = getattr(args, name)
        if not 0 < port < 65536:
            parser.error(f"--{name.replace('_', '-')} must be 1-65535")
    if args.http_port == args.grpc_port:
        parser.error("--http-port and --grpc-port must differ")
    return run_foreground(http_port=args.http_port, grpc_port=args.grpc_port, host=args.host)


if __name__ == "__main__":
    sys.exit(main())
