"""pytest fixtures backed by a real local receiver. Opt-in: add to your ``conftest.py``::

    pytest_plugins = ["otel_basic.testing.pytest_plugin"]

It is not registered as a ``pytest11`` entry point, so installing otel-basic never makes every
pytest run in that environment import the SDK, httpx and the receiver.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otel_basic.testing.receiver import LangfuseReceiver

_CLEARED_ENV = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SDK_DISABLED",
    "LANGFUSE_HOST",
)


@pytest.fixture
def langfuse_receiver() -> Iterator[LangfuseReceiver]:
    """A started :class:`LangfuseReceiver` on an ephemeral port, stopped after the test."""
    receiver = LangfuseReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def langfuse_env(langfuse_receiver: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch) -> LangfuseReceiver:
    """Point ``LANGFUSE_*`` at the receiver and remove env vars that would redirect or disable export."""
    for key, value in langfuse_receiver.env().items():
        monkeypatch.setenv(key, value)
    for key in _CLEARED_ENV:
        monkeypatch.delenv(key, raising=False)
    return langfuse_receiver
