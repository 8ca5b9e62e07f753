"""The hello and email workflows without any telemetry configured: routing, repair, failures, delivery."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from llama_index.core.base.llms.types import CompletionResponse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import BaseModel, PrivateAttr

from basic import email_workflow as ew
from basic.email_workflow import (
    EmailErrorEvent,
    EmailStartEvent,
    EmailWorkflow,
    email_workflow,
    extract_json_object,
    parse_triage,
    run_attributes,
)
from basic.llm import OfflineLLM, detect_task, offline_answer
from basic.models import EmailData, EmailResult, InvalidEmailError
from basic.samples import EXPECTED_CATEGORIES, SAMPLE_EMAILS, sample_email
from basic.tools import TOOLS, ToolContext
from basic.workflow import HelloStartEvent, workflow

# ------------------------------------------------------------------------------------------ helpers


class ScriptedLLM(OfflineLLM):
    """OfflineLLM with per-task answers replaced (a string, or a function of the prompt)."""

    _script: dict[str, str | Callable[[str], str]] = PrivateAttr(default_factory=dict)
    _calls: list[str] = PrivateAttr(default_factory=list)

    def __init__(self, **script: str | Callable[[str], str]) -> None:
        super().__init__()
        self._script = dict(script)

    @property
    def calls(self) -> list[str]:
        return self._calls

    def _completion(self, prompt: str) -> CompletionResponse:
        task = detect_task(prompt) or "unknown"
        self._calls.append(task)
        answer = self._script.get(task, offline_answer)
        return CompletionResponse(text=answer(prompt) if callable(answer) else answer)


async def run_collecting(wf: EmailWorkflow, **kwargs: Any) -> tuple[EmailResult, list[Any]]:
    handler = wf.run(**kwargs)
    events = [ev async for ev in handler.stream_events()]
    result = await handler
    assert isinstance(result, EmailResult)
    return result, events


def errors(events: list[Any]) -> list[EmailErrorEvent]:
    return [e for e in events if isinstance(e, EmailErrorEvent)]


@pytest.fixture
def wf() -> EmailWorkflow:
    return EmailWorkflow(llm=OfflineLLM(), callback_backoff=0.01, callback_timeout=2.0)


class Receiver:
    """A tiny real HTTP endpoint on 127.0.0.1: records POSTs, answers with ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[dict[str, str], Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=secret-token"


@pytest.fixture
def receiver_factory() -> Iterator[Callable[[int], Receiver]]:
    started: list[Receiver] = []

    def make(status: int = 200) -> Receiver:
        r = Receiver(status)
        r.thread.start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.server.shutdown()
        r.server.server_close()


@pytest.fixture
def tool_spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    provider = TracerProvider()
    exp = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    monkeypatch.setattr(ew, "_tracer", lambda: provider.get_tracer("test"))
    yield exp
    provider.shutdown()


# ------------------------------------------------------------------------------------------- hello


async def test_hello_workflow() -> None:
    assert await workflow.run() == "Hello, world!"
    assert await workflow.run(name="Ada") == "Hello, Ada!"
    assert await workflow.run(start_event=HelloStartEvent(name="  ")) == "Hello, world!"
    assert list(workflow._get_steps()) == ["hello"]


# ----------------------------------------------------------------------------------------- routing


EXPECTED_TOOLS = {
    "question": ["lookup_faq", "draft_reply"],
    "complaint": ["create_ticket", "draft_reply"],
    "meeting_request": ["propose_meeting_slots", "draft_reply"],
    "spam": ["flag_spam"],
    "urgent": ["create_ticket", "draft_reply"],
}


def test_steps_are_registered_through_flush_after_step() -> None:
    steps = email_workflow._get_steps()
    assert {"triage_email", "execute_plan", "verify_response", "send_results"} <= set(steps)
    assert email_workflow._timeout == 60.0
    assert EmailWorkflow(timeout=5)._timeout == 5


@pytest.mark.parametrize("email", SAMPLE_EMAILS, ids=lambda e: str(e["thread_id"]))
async def test_each_category_routes_to_its_tools(wf: EmailWorkflow, email: dict[str, Any]) -> None:
    result, events = await run_collecting(wf, email_data=email)
    category = EXPECTED_CATEGORIES[email["thread_id"]]
    assert result.category == category
    assert [s.tool for s in result.plan] == EXPECTED_TOOLS[category]
    assert [r.tool for r in result.tool_results] == EXPECTED_TOOLS[category]
    assert all(r.ok for r in result.tool_results)
    assert result.thread_id == email["thread_id"]
    assert result.verification.ok
    assert not result.verification.revised
    assert result.delivery is not None and result.delivery.status == "skipped"
    assert errors(events) == []
    if category == "spam":
        assert result.response_draft == ""
        assert result.verification.skipped
    else:
        assert result.response_draft.startswith("Hello ")
    if category == "urgent":
        assert result.priority == "high"
        assert result.tool_results[0].output is not None
        assert result.tool_results[0].output["priority"] == "high"
        assert result.tool_results[0].output["ticket_id"] in result.response_draft
    json.loads(result.model_dump_json())  # JSON-serialisable


async def test_accepts_a_pydantic_model(wf: EmailWorkflow) -> None:
    email = EmailData.model_validate(sample_email("question"))
    result, _ = await run_collecting(wf, email_data=email)
    assert result.category == "question"
    assert "Forgot password" in result.response_draft


# ---------------------------------------------------------------------------------- bad triage plans


async def test_garbage_triage_falls_back_with_an_error_event() -> None:
    llm = ScriptedLLM(triage="Sorry, I can't help with that.")
    result, events = await run_collecting(EmailWorkflow(llm=llm), email_data=sample_email("complaint"))
    assert result.category == "other"
    assert [s.tool for s in result.plan] == ["draft_reply"]
    assert result.response_draft.startswith("Hello Grace,")
    (event,) = errors(events)
    assert event.step == "triage_email"
    assert "fallback" in event.message
    assert event.details == ["the triage output contained no JSON object"]


async def test_triage_llm_exception_falls_back() -> None:
    def fail(prompt: str) -> str:
        raise ConnectionError("model unreachable")

    result, events = await run_collecting(
        EmailWorkflow(llm=ScriptedLLM(triage=fail)), email_data=sample_email("question")
    )
    assert [s.tool for s in result.plan] == ["draft_reply"]
    assert "ConnectionError: model unreachable" in errors(events)[0].details


async def test_malformed_plan_is_repaired() -> None:
    text = (
        "Sure! Here is the triage:\n```json\n"
        + json.dumps(
            {
                "category": "Meeting Request",
                "priority": "URGENT!!",
                "plan": [
                    {"tool": "draft_reply"},
                    {"tool": "send_bitcoin", "args": {"amount": 1}},
                    "propose_meeting_slots",
                    {"tool": "propose_meeting_slots", "args": {"count": "lots"}},
                    42,
                ],
            }
        )
        + "\n```\nLet me know if you need more."
    )
    result, events = await run_collecting(
        EmailWorkflow(llm=ScriptedLLM(triage=text)), email_data=sample_email("meeting_request")
    )
    assert result.category == "meeting_request"
    assert result.priority == "normal"
    assert [s.tool for s in result.plan] == ["propose_meeting_slots", "draft_reply"]
    assert result.summary == "Meeting to discuss the enterprise plan"
    (event,) = errors(events)
    assert event.message == "the triage plan was repaired"
    joined = " | ".join(event.details)
    for fragment in ("send_bitcoin", "count", "not an object", "duplicate", "moved draft_reply", "priority"):
        assert fragment in joined
    assert result.triage_issues == event.details
    assert "Thu 9 Jan 2025" in result.response_draft


def test_parse_triage_spam_gets_no_reply_and_a_flag() -> None:
    email = EmailData.model_validate(sample_email("spam"))
    triage, issues, rejected = parse_triage('{"category": "spam", "plan": [{"tool": "draft_reply"}]}', email)
    assert not rejected
    assert [s.tool for s in triage.plan] == ["flag_spam"]
    assert len(issues) == 2


def test_parse_triage_non_spam_gets_a_draft_step() -> None:
    email = EmailData.model_validate(sample_email("question"))
    triage, issues, _ = parse_triage('{"category": "question", "plan": "look it up"}', email)
    assert [s.tool for s in triage.plan] == ["draft_reply"]
    assert issues == ["the plan was missing or not a list", "added the missing draft_reply step"]


def test_extract_json_object() -> None:
    assert extract_json_object('{"a": 1}') == {"a": 1}
    assert extract_json_object('noise {"a": {"b": 2}} trailing }') == {"a": {"b": 2}}
    assert extract_json_object('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json_object("[1, 2]") is None
    assert extract_json_object("{" * 10_000) is None


# ------------------------------------------------------------------------------------ tool failures


async def test_failing_tool_is_recorded_and_the_plan_continues(
    wf: EmailWorkflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(ctx: ToolContext, args: Any) -> dict[str, Any]:
        raise RuntimeError("ticket system down")

    monkeypatch.setitem(TOOLS, "create_ticket", dataclasses.replace(TOOLS["create_ticket"], fn=boom))
    result, events = await run_collecting(wf, email_data=sample_email("complaint"))
    ticket, draft = result.tool_results
    assert (ticket.tool, ticket.ok) == ("create_ticket", False)
    assert ticket.error == "RuntimeError: ticket system down"
    assert draft.tool == "draft_reply" and draft.ok
    assert result.response_draft.startswith("Hello Grace,")
    assert "TCK-" not in result.response_draft  # no invented ticket id
    (event,) = errors(events)
    assert event.step == "execute_plan"
    assert event.details == ["RuntimeError: ticket system down"]


# ------------------------------------------------------------------------------------ verification


async def test_verify_failure_triggers_exactly_one_revision() -> None:
    llm = ScriptedLLM(draft="ok we will look at it")
    result, events = await run_collecting(EmailWorkflow(llm=llm), email_data=sample_email("complaint"))
    assert llm.calls.count("revise") == 1
    assert llm.calls.count("verify") == 2
    v = result.verification
    assert v.revised and v.ok and v.issues == []
    assert "the draft does not greet the sender" in v.initial_issues
    assert result.response_draft.startswith("Hello Grace,")
    assert "ok we will look at it" in result.response_draft
    assert errors(events) == []


async def test_persistent_verify_failure_still_completes() -> None:
    llm = ScriptedLLM(verify='{"ok": false, "issues": ["tone is off"]}')
    result, events = await run_collecting(EmailWorkflow(llm=llm), email_data=sample_email("question"))
    assert llm.calls.count("revise") == 1
    assert llm.calls.count("verify") == 2
    assert not result.verification.ok
    assert result.verification.issues == ["tone is off"]
    assert result.verification.revised
    assert errors(events)[0].step == "verify_response"


async def test_unusable_verifier_does_not_trigger_a_revision() -> None:
    llm = ScriptedLLM(verify="looks fine to me")
    result, _ = await run_collecting(EmailWorkflow(llm=llm), email_data=sample_email("question"))
    assert llm.calls.count("revise") == 0
    assert not result.verification.ok and result.verification.skipped


# ---------------------------------------------------------------------------------------- callbacks


async def test_callback_url_receives_the_json(
    wf: EmailWorkflow, receiver_factory: Callable[[int], Receiver]
) -> None:
    receiver = receiver_factory(200)
    result, _ = await run_collecting(wf, email_data=sample_email("question"), callback=receiver.url)
    assert result.delivery is not None
    assert (result.delivery.ok, result.delivery.status, result.delivery.attempts) == (True, "delivered", 1)
    assert result.delivery.status_code is None  # the API client learns "delivered", nothing more
    ((headers, body),) = receiver.requests
    assert body["category"] == "question"
    assert body["thread_id"] == "thread-question-0001"
    assert body["response_draft"] == result.response_draft
    assert "delivery" not in body
    assert headers["Content-Type"] == "application/json"
    assert len(headers["Idempotency-Key"]) == 32


async def test_callback_500_is_retried_then_recorded(
    wf: EmailWorkflow, receiver_factory: Callable[[int], Receiver], tool_spans: InMemorySpanExporter
) -> None:
    receiver = receiver_factory(500)
    result, events = await run_collecting(wf, email_data=sample_email("question"), callback=receiver.url)
    assert result.delivery is not None
    assert not result.delivery.ok
    assert result.delivery.status == "failed"
    # the API client learns only "failed"; the details are in telemetry (basic.callback_guard)
    assert (result.delivery.attempts, result.delivery.status_code, result.delivery.error) == (0, None, "failed")
    assert len(receiver.requests) == 3
    assert len({h["Idempotency-Key"] for h, _ in receiver.requests}) == 1
    assert errors(events)[-1].step == "send_results"
    (span,) = [s for s in tool_spans.get_finished_spans() if s.name == "deliver_result"]
    assert span.status.status_code is StatusCode.ERROR
    assert "HTTP 500" in (span.status.description or "")
    assert (span.attributes or {})["callback.attempts"] == 3
    assert any(e.name == "exception" for e in span.events)
    assert len([e for e in span.events if e.name == "callback.attempt"]) == 3
    assert "secret-token" not in json.dumps(dict(span.attributes or {}))


async def test_callback_4xx_is_not_retried(
    wf: EmailWorkflow, receiver_factory: Callable[[int], Receiver]
) -> None:
    receiver = receiver_factory(404)
    result, _ = await run_collecting(wf, email_data=sample_email("spam"), callback=receiver.url)
    assert result.delivery is not None
    assert (result.delivery.ok, result.delivery.error, result.delivery.status_code) == (False, "failed", None)
    assert len(receiver.requests) == 1


async def test_callback_to_a_closed_port(wf: EmailWorkflow) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result, _ = await run_collecting(
        wf, email_data=sample_email("spam"), callback=f"http://127.0.0.1:{port}/hook"
    )
    assert result.delivery is not None
    assert not result.delivery.ok
    assert (result.delivery.error, result.delivery.status_code) == ("failed", None)


async def test_async_callable_callback(wf: EmailWorkflow) -> None:
    received: list[EmailResult] = []

    async def on_result(result: EmailResult) -> None:
        received.append(result)

    result, _ = await run_collecting(wf, email_data=sample_email("urgent"), callback=on_result)
    assert result.delivery is not None
    assert (result.delivery.ok, result.delivery.target) == (True, "callable")
    (got,) = received
    assert got.category == "urgent" and got.delivery is None


async def test_failing_async_callable_is_recorded_not_raised(
    wf: EmailWorkflow, tool_spans: InMemorySpanExporter
) -> None:
    async def on_result(result: EmailResult) -> None:
        raise RuntimeError("downstream rejected it")

    result, _ = await run_collecting(wf, email_data=sample_email("urgent"), callback=on_result)
    assert result.delivery is not None
    assert not result.delivery.ok
    assert result.delivery.error == "RuntimeError: downstream rejected it"
    (span,) = tool_spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR


async def test_invalid_callback_is_rejected(wf: EmailWorkflow) -> None:
    with pytest.raises(ValueError, match="callback"):
        await wf.run(email_data=sample_email("question"), callback="ftp://example.com/x")


# ---------------------------------------------------------------------------------------- bad input


async def test_missing_body_names_the_field(wf: EmailWorkflow) -> None:
    email = sample_email("question")
    del email["body"]
    with pytest.raises(InvalidEmailError) as info:
        await wf.run(email_data=email)
    assert info.value.fields == ["body"]
    assert "body" in str(info.value)


async def test_bad_sender_names_the_field_and_never_echoes_the_body(wf: EmailWorkflow) -> None:
    email = sample_email("question")
    email["sender"] = "not-an-email"
    email["body"] = "SECRET-BODY-CONTENT"
    with pytest.raises(ValueError) as info:
        await wf.run(email_data=email)
    assert isinstance(info.value, InvalidEmailError)
    assert str(info.value) == "invalid email_data: sender: not a valid email address"
    assert "SECRET" not in str(info.value)
    assert "not-an-email" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_several_problems_and_non_dict_input(wf: EmailWorkflow) -> None:
    with pytest.raises(InvalidEmailError) as info:
        await wf.run(email_data={"sender": "a@b", "body": "   ", "cc": "x@y.co, nope"})
    assert info.value.fields == ["sender", "body", "cc"]
    with pytest.raises(InvalidEmailError, match="expected an object"):
        await wf.run(email_data="hello")
    with pytest.raises(InvalidEmailError):
        await wf.run()


def test_email_data_normalises() -> None:
    email = EmailData.model_validate(
        {"sender": " Ada@Example.COM ", "body": "hi", "to": "a@b.co; c@d.co", "cc": None, "extra": 1}
    )
    assert email.sender == "Ada@example.com"
    assert email.to == ["a@b.co", "c@d.co"]
    assert email.cc == []


def test_start_event_keeps_email_data_json_serialisable() -> None:
    class Custom(BaseModel):
        sender: str
        body: str

    ev = EmailStartEvent(email_data=Custom(sender="a@b.co", body="x"))
    assert ev.email_data == {"sender": "a@b.co", "body": "x"}


def test_run_attributes() -> None:
    email = sample_email("question")
    expected = {"session_id": "thread-question-0001", "user_id": "ada.lovelace@example.com"}
    assert run_attributes(email) == expected
    assert run_attributes(EmailData.model_validate(email))["session_id"] == "thread-question-0001"
    assert run_attributes({"sender": "bad", "body": "x"}) == {"session_id": None, "user_id": None}
    assert run_attributes(None) == {"session_id": None, "user_id": None}
