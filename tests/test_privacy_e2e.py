"""Privacy end to end: planted personal data never reaches the wire (raw request bodies at the
receiver, gzip decoded), for both workflows, LLM messages and log events included; secrets stay
out of every output; payload limits."""

from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

import otel_basic
from basic.email_workflow import email_workflow
from basic.workflow import workflow as hello_workflow
from otel_basic.testing import LangfuseReceiver

from .conftest import PYTHON, SECRET, subprocess_env

CORPUS = json.loads((Path(__file__).parent / "data" / "pii_emails.json").read_text())["emails"]
log = logging.getLogger("app.inbox")
log.setLevel(logging.INFO)  # the app enables INFO on its logger: otel-basic never lowers levels


def _address(sender: str) -> str:
    match = re.search(r"<([^>]+)>", sender)
    return (match.group(1) if match else sender).strip()


def _email_data(item: dict[str, Any]) -> dict[str, Any]:
    return {"sender": _address(item["sender"]), "subject": item.get("subject") or "(none)",
            "body": item["body"], "thread_id": item["thread_id"]}


async def _run_corpus(receiver: LangfuseReceiver) -> bytes:
    tracer = otel_basic.get_tracer("inbox")
    for item in CORPUS:
        data = _email_data(item)
        with tracer.start_as_current_span("handle-email"):
            log.info("processing mail from %s: %s", data["sender"], item["body"][:200])
            await email_workflow.run(email_data=data)
        await hello_workflow.run(name=data["sender"])
    report = await otel_basic.aflush(timeout=30)
    assert report, report.summary()
    return b"\n".join(r.body for r in receiver.trace_requests)


def _forms(value: str) -> set[bytes]:
    """The raw UTF-8 form and the JSON-escaped form a serializer might have used."""
    return {value.encode(), json.dumps(value)[1:-1].encode(), json.dumps(value, ensure_ascii=False)[1:-1].encode()}


def _leaks(blob: bytes) -> list[str]:
    leaks = []
    for item in CORPUS:
        for value in item["planted"]:
            if any(form in blob for form in _forms(value)):
                leaks.append(f"{item['id']}: {value}")
    return leaks


async def test_no_planted_value_reaches_the_wire(langfuse_env: LangfuseReceiver) -> None:
    tel = otel_basic.configure()
    assert tel.settings.mask == "detectors"
    blob = await _run_corpus(langfuse_env)
    assert b"llm.input_messages" in blob or b"llm.prompts" in blob or b"input.value" in blob
    assert b"log.message" in blob, "log events were exported"
    assert not _leaks(blob), _leaks(blob)[:20]


async def test_with_masking_off_the_planted_values_do_arrive(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BASIC_MASK", "off")
    otel_basic.configure()
    blob = await _run_corpus(langfuse_env)
    planted = sum(len(item["planted"]) for item in CORPUS)
    assert len(_leaks(blob)) == planted, "without masking every planted value is on the wire"


async def test_allow_listed_keys_untouched_and_tokens_stable_within_a_trace(langfuse_env: LangfuseReceiver) -> None:
    otel_basic.configure()
    item = CORPUS[0]
    data = _email_data(item)
    await otel_basic.run_with_flush(email_workflow, email_data=data)
    spans = langfuse_env.spans
    root = next(s for s in spans if s.name == "EmailWorkflow.run")
    token = root.attributes["user.id"]
    assert re.fullmatch(r"<email:[0-9a-f]{4,}>", token), token
    assert all(s.attributes.get("user.id") == token for s in spans), "same address, same token"
    assert token in root.attributes["input.value"], "the sender inside the input maps to the same token"
    assert all(s.attributes.get("session.id") == item["thread_id"] for s in spans)
    llm = [s for s in spans if s.attributes.get("openinference.span.kind") == "LLM"]
    assert llm and all(s.attributes["llm.model_name"] == "offline-rules-1" for s in llm)
    assert all(isinstance(s.attributes["llm.token_count.total"], int) for s in llm)
    json.loads(root.attributes["input.value"])  # still valid JSON after masking


async def test_hide_level_hides_content(langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BASIC_MASK", "hide")
    otel_basic.configure()
    await otel_basic.run_with_flush(email_workflow, email_data=_email_data(CORPUS[1]))
    root = next(s for s in langfuse_env.spans if s.name == "EmailWorkflow.run")
    assert root.attributes["input.value"] == "<hidden>"
    assert not _leaks(b"\n".join(r.body for r in langfuse_env.trace_requests))


async def test_openinference_hide_variables_keep_working(
    langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENINFERENCE_HIDE_INPUTS", "true")
    monkeypatch.setenv("OTEL_BASIC_MASK", "off")
    otel_basic.configure()
    await otel_basic.run_with_flush(email_workflow, email_data=_email_data(CORPUS[2]))
    llm = [s for s in langfuse_env.spans if s.attributes.get("openinference.span.kind") == "LLM"]
    assert llm and all(s.attributes.get("input.value") == "__REDACTED__" for s in llm)


def test_five_megabyte_body_is_delivered_truncated_with_marker(langfuse_env: LangfuseReceiver) -> None:
    otel_basic.configure()
    body = "Lorem ipsum dolor sit amet. " * (5 * 1024 * 1024 // 28)
    attachment = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"\0" * 300_000).decode()
    with otel_basic.get_tracer("t").start_as_current_span("big", attributes={"input.value": body,
                                                                             "attachment": attachment}):
        pass
    assert otel_basic.flush(timeout=10)
    span = langfuse_env.spans[0]
    value = span.attributes["input.value"]
    assert len(value) < 20_000 and "truncated" in value and str(len(body)) in value
    assert "base64," not in span.attributes["attachment"] and "image/png" in span.attributes["attachment"]


def test_secret_never_in_outputs_of_failure_paths(
    langfuse_env: LangfuseReceiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = base64.b64encode(f"pk-lf-test:{SECRET}".encode()).decode()
    outputs: list[str] = []
    # 401, then 5xx, then the spool
    tel = otel_basic.configure()
    for status in (401, 503):
        langfuse_env.fail_next(status, count=50)
        with tel.tracer("t").start_as_current_span(f"after-{status}"):
            pass
        outputs.append(repr(otel_basic.flush(timeout=1.5)))
    otel_basic.shutdown()
    spool_root = Path(tel.settings.spool_dir or tmp_path)
    for path in spool_root.rglob("*"):
        outputs.append(path.name)
        if path.is_file():
            outputs.append(path.read_bytes().decode("latin-1"))
    # bad configuration and doctor, as real processes
    env = subprocess_env(**langfuse_env.env())
    for args, extra in (
        (["-c", "import basic.observability"], {"LANGFUSE_BASE_URL": "no-scheme"}),
        (["-c", "import basic.observability"], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
                                                "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Basic {token}x,bad"}),
        (["-m", "otel_basic.cli", "doctor"], {}),
        (["-m", "otel_basic.cli", "doctor", "--json"], {}),
    ):
        proc = subprocess.run([PYTHON, *args], env={**env, **extra}, capture_output=True, text=True, timeout=120)
        outputs += [proc.stdout, proc.stderr]
    outputs.append(caplog.text)
    for text in outputs:
        assert SECRET not in text and token not in text


def test_insecure_endpoint_is_refused_unless_opted_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-test")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", SECRET)
    monkeypatch.setenv("LANGFUSE_BASE_URL", "http://langfuse.example.internal:3000")
    tel = otel_basic.configure()
    assert not tel.enabled and "OTEL_BASIC_ALLOW_INSECURE" in tel.settings.reason
    monkeypatch.setenv("OTEL_BASIC_ALLOW_INSECURE", "true")
    assert otel_basic.configure().enabled
