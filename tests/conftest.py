"""Shared fixtures: every test gets its own spool dir and a clean otel_basic global."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import otel_basic
from otel_basic.testing import LangfuseReceiver

# The plugin is opt-in (no pytest11 entry point): it does not load in every pytest run of a user's env.
pytest_plugins = ["otel_basic.testing.pytest_plugin"]

SECRET = "sk-lf-test"  # the receiver's default secret key: tests search output for it


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background by a non-interactive shell (``cmd &``, ``nohup``, some CI runners)
    inherits SIGINT *ignored*, and so does every child process it starts: the SIGINT tests would then test
    an app that chose to ignore SIGINT (where otel-basic rightly installs no handler) and hang. An installed
    handler is reset to the default in an exec'd child, an ignored signal is not: give pytest Python's usual
    SIGINT handler, so children start as an app started from a terminal does."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_OUR_ENV_PREFIXES = ("OTEL_", "LANGFUSE_", "OPENINFERENCE_", "OPENAI_")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's OTEL_*/LANGFUSE_* variables or writes to their cache dir."""
    for key in list(os.environ):
        if key.startswith(_OUR_ENV_PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.setenv("OTEL_BASIC_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("OTEL_BASIC_SIGNAL_HANDLERS", "false")
    # Callback sinks in tests listen on 127.0.0.1, which basic.callback_guard refuses by default.
    monkeypatch.setenv("BASIC_CALLBACK_ALLOW_HOSTS", "127.0.0.1")
    yield
    otel_basic.reset()


@pytest.fixture
def telemetry(langfuse_env: LangfuseReceiver) -> Iterator[otel_basic.Telemetry]:
    """otel_basic configured against the test receiver, reset afterwards."""
    tel = otel_basic.configure()
    assert tel.enabled, tel.settings.reason
    yield tel
    otel_basic.reset()


def subprocess_env(**extra: str) -> dict[str, str]:
    """The current environment (already cleaned by _isolated_env) plus ``extra``, for child processes."""
    env = {k: v for k, v in os.environ.items()}
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable
