"""The fast_io prototype: OpenInference no longer serializes workflow inputs we replace, and the
endpoint sees exactly the same attributes (hello and email workflows, LLM and tool spans included)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from openinference.instrumentation.llama_index import _handler

import otel_basic
from basic.email_workflow import EmailWorkflow
from basic.llm import OfflineLLM
from basic.samples import SAMPLE_EMAILS
from basic.workflow import HelloWorkflow
from otel_basic import fast_io
from otel_basic.testing import LangfuseReceiver

_TIMING = re.compile(r'"duration_ms": [0-9.e-]+')


@pytest.fixture(autouse=True)
def _uninstalled() -> Iterator[None]:
    yield
    fast_io.uninstall()


async def _workload() -> None:
    await HelloWorkflow(timeout=10).run(name="Ada")
    await EmailWorkflow(llm=OfflineLLM()).run(email_data=SAMPLE_EMAILS[0], callback=None)


async def _spans(receiver: LangfuseReceiver, *, fast: bool) -> list[tuple[str, list[tuple[str, str]]]]:
    receiver.clear()
    otel_basic.configure()  # installs fast_io
    if not fast:
        fast_io.uninstall()  # OpenInference's own input serialization, for comparison
    await _workload()
    report = await otel_basic.aflush(timeout=10)
    assert report, report.summary()
    fast_io.uninstall()
    otel_basic.reset()
    return sorted(
        (s.name, sorted((k, _TIMING.sub('"duration_ms": T', str(v))) for k, v in s.attributes.items()))
        for s in receiver.spans
    )


async def test_endpoint_sees_the_same_attributes(langfuse_env: LangfuseReceiver) -> None:
    stock = await _spans(langfuse_env, fast=False)
    fast = await _spans(langfuse_env, fast=True)
    assert [name for name, _ in stock] == [name for name, _ in fast]
    assert stock == fast
    kinds = {dict(attrs).get("openinference.span.kind") for _, attrs in fast}
    assert {"CHAIN", "LLM", "TOOL"} <= kinds


async def test_workflow_inputs_are_not_serialized_twice(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    dumped: list[Any] = []
    original = _handler.safe_json_dumps

    def counting(obj: Any, *args: Any, **kwargs: Any) -> str:
        dumped.append(obj)
        return str(original(obj, *args, **kwargs))

    monkeypatch.setattr(_handler, "safe_json_dumps", counting)
    otel_basic.configure()
    fast_io.uninstall()

    def with_ctx() -> int:
        return sum(1 for obj in dumped if isinstance(obj, dict) and "ctx" in obj)

    await _workload()
    assert with_ctx() > 0, "without fast_io OpenInference serializes the workflow Context"
    dumped.clear()
    assert fast_io.install()
    await _workload()
    assert with_ctx() == 0
    assert dumped, "other spans (LLM calls) still get OpenInference's input"
