"""Shared fixtures: every test gets its own spool dir and a clean otel_basic global."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import otel_basic
from otel_basic.testing import LangfuseReceiver

# The plugin is opt-in (no pytest11 entry point): it does not load in every pytest run of a user's env.
pytest_plugins = ["otel_basic.testing.pytest_plugin"]

SECRET = "sk-lf-test"  # the receiver's default secret key: tests search output for it

_OUR_ENV_PREFIXES = ("OTEL_", "LANGFUSE_", "OPENINFERENCE_", "OPENAI_")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's OTEL_*/LANGFUSE_* variables or writes to their cache dir."""
    for key in list(os.environ):
        if key.startswith(_OUR_ENV_PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.setenv("OTEL_BASIC_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("OTEL_BASIC_SIGNAL_HANDLERS", "false")
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
