"""A run paused for approval, saved, and resumed in a NEW process stays one trace, and shows the wait.

The first half runs here: the approval variant of the email workflow, with a verifier that rejects
every draft, pauses before sending; its context is saved to a file (``ctx.to_dict()``) and the run
is stopped, as a server going down would. A fresh Python process then restores the context, sends
the reviewer's answer and finishes the run. Both processes export to the same receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from llama_agents.server import SqliteWorkflowStore, WorkflowServer
from llama_index.core.llms import CompletionResponse
from workflows import Context
from workflows.context.serializers import JsonSerializer
from workflows.errors import WorkflowCancelledByUser

import otel_basic
from basic.approval import ApprovalEmailWorkflow, ApprovalRequiredEvent, ApprovalResponseEvent
from basic.llm import OfflineLLM, detect_task
from basic.models import EmailResult
from basic.samples import sample_email
from otel_basic.asgi import TraceContextMiddleware
from otel_basic.resume import saved_trace
from otel_basic.testing import LangfuseReceiver, ReceivedSpan
from otel_basic.testing.langfuse_view import langfuse_view

from .conftest import PYTHON, subprocess_env

WAITED = 0.4  # seconds between the save and the resume

RESUME = r"""
import asyncio, json, sys
import basic.observability  # configures telemetry from the environment, as the app does
import otel_basic
from workflows import Context
from basic.approval import ApprovalEmailWorkflow, ApprovalResponseEvent

async def main():
    saved = json.loads(open(sys.argv[1]).read())
    workflow = ApprovalEmailWorkflow()
    handler = workflow.run(ctx=Context.from_dict(workflow, saved))
    handler.ctx.send_event(ApprovalResponseEvent(**json.loads(sys.argv[2])))
    result = await handler
    report = await otel_basic.aflush()
    print(json.dumps({"result": result.model_dump(mode="json"), "flushed": bool(report)}))

asyncio.run(main())
"""


class RejectingVerifier(OfflineLLM):
    """The offline model, except that its verifier never accepts a draft (so approval is needed)."""

    def _completion(self, prompt: str) -> CompletionResponse:
        if detect_task(prompt) == "verify":
            text = json.dumps({"ok": False, "issues": ["the tone is too casual"]})
            return CompletionResponse(text=text, raw={"usage": {"prompt_tokens": 1, "completion_tokens": 1}})
        return super()._completion(prompt)


async def _run_until_approval(email: dict[str, Any], path: Path) -> float:
    """Start the run, wait for its approval request, save its context to ``path``, stop it."""
    workflow = ApprovalEmailWorkflow(llm=RejectingVerifier())
    handler = workflow.run(email_data=email)
    async for event in handler.stream_events():
        if isinstance(event, ApprovalRequiredEvent):
            assert event.issues == ["the tone is too casual"] and event.draft
            break
    assert handler.ctx is not None
    path.write_text(json.dumps(handler.ctx.to_dict()))
    saved_at = time.time()
    await handler.cancel_run()  # the process that started it goes away
    with pytest.raises(WorkflowCancelledByUser):
        await handler
    assert await otel_basic.aflush(), "the first half's spans are delivered before the resume"
    return saved_at


def _resume_in_new_process(receiver: LangfuseReceiver, path: Path, answer: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [PYTHON, "-c", RESUME, str(path), json.dumps(answer)],
        env=subprocess_env(**receiver.env()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["flushed"], done.stderr
    return out


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {len(found)} in {sorted(s.name for s in spans)}"
    return found[0]


@pytest.fixture
def unmasked(langfuse_env: LangfuseReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[LangfuseReceiver]:
    """Telemetry to the receiver with masking off, here and in child processes.

    The user must stay the same across the two processes. With masking on, that depends on the
    masking salt being the same in both (a per-process random salt gives each process its own
    ``<email:..>`` token); this test is about the trace context, so it compares plain addresses.
    """
    monkeypatch.setenv("OTEL_BASIC_MASK", "off")
    assert otel_basic.configure().enabled
    yield langfuse_env
    otel_basic.reset()


@pytest.mark.slow
async def test_a_run_resumed_in_a_new_process_joins_its_trace_and_shows_the_wait(
    tmp_path: Path, unmasked: LangfuseReceiver
) -> None:
    langfuse_env = unmasked
    email = sample_email("question")
    email["thread_id"] = "thread-approval-1"
    path = tmp_path / "paused-run.json"
    saved_at = await _run_until_approval(email, path)
    await asyncio.sleep(WAITED)
    resumed_at = time.time()
    out = _resume_in_new_process(langfuse_env, path, {"approved": True, "reviewer": "ops-1"})
    assert out["result"]["delivery"]["status"] == "skipped"  # no callback: approved and "sent" nowhere

    runs = [s for s in langfuse_env.spans if s.name == "ApprovalEmailWorkflow.run"]
    assert len(runs) == 2, "the original run and the continued one"
    assert len({s.trace_id for s in runs}) == 1, "one trace"
    trace_id = runs[0].trace_id
    spans = langfuse_env.traces()[trace_id]
    assert {s.trace_id for s in langfuse_env.spans} == {trace_id}, "nothing started a trace of its own"

    original = next(s for s in runs if s.parent_span_id is None)
    continued = next(s for s in runs if s is not original)
    assert continued.parent_span_id == original.span_id
    assert original.end_time_unix_nano <= continued.start_time_unix_nano
    ids = {s.span_id for s in spans}
    assert all(s.parent_span_id is None or s.parent_span_id in ids for s in spans), "no orphan"
    assert len({s.span_id for s in spans}) == len(spans), "no span twice"

    # The steps before the pause belong to the original run; the send after it to the continued one.
    for step in ("triage_email", "execute_plan", "verify_response"):
        assert _one(spans, f"EmailWorkflow.{step}").parent_span_id == original.span_id  # inherited steps
    sends = [s for s in spans if s.name == "ApprovalEmailWorkflow.send_results"]
    assert {s.parent_span_id for s in sends} == {original.span_id, continued.span_id}  # paused, then replayed

    # The wait is a span of its own, from the pause to the resume, under the original run.
    wait = _one(spans, "wait_for_approval")
    assert wait.parent_span_id == original.span_id
    assert wait.start_time_unix_nano / 1e9 <= saved_at
    assert wait.end_time_unix_nano / 1e9 >= resumed_at
    assert wait.attributes["wait.seconds"] >= WAITED
    assert wait.attributes["approval.approved"] is True and wait.attributes["approval.reviewer"] == "ops-1"

    # What Langfuse shows: one trace with the original input and the final output, user and session.
    shown = langfuse_view(langfuse_env.spans).traces[trace_id]
    assert shown.name == "ApprovalEmailWorkflow"
    assert isinstance(shown.input, dict) and shown.input["email_data"]["subject"] == email["subject"]
    assert isinstance(shown.output, dict) and shown.output["category"] == "question"
    assert shown.output["verification"]["ok"] is False and shown.output["verification"]["revised"] is True
    assert shown.session_id == "thread-approval-1"
    assert shown.user_id == email["sender"] == original.attributes["user.id"] == continued.attributes["user.id"]
    assert continued.attributes["session.id"] == "thread-approval-1", "the continued run keeps the session"
    observation = next(o for o in shown.observations if o.name == "wait_for_approval")
    assert observation.parent_id == original.span_id and observation.end_time > observation.start_time


@pytest.mark.slow
async def test_a_rejected_reply_in_the_same_process_is_not_sent_and_the_wait_shows(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    workflow = ApprovalEmailWorkflow(llm=RejectingVerifier())
    handler = workflow.run(email_data=sample_email("complaint"))
    async for event in handler.stream_events():
        if isinstance(event, ApprovalRequiredEvent):
            await asyncio.sleep(0.1)
            assert handler.ctx is not None
            handler.ctx.send_event(ApprovalResponseEvent(approved=False))
    result: EmailResult = await handler
    assert await otel_basic.aflush()
    assert result.delivery is not None
    assert result.delivery.status == "skipped" and result.delivery.error == "rejected by the reviewer"
    [trace] = langfuse_env.traces().values()
    run = _one(trace, "ApprovalEmailWorkflow.run")
    wait = _one(trace, "wait_for_approval")
    assert wait.parent_span_id == run.span_id and wait.attributes["approval.approved"] is False
    assert wait.attributes["wait.seconds"] >= 0.1
    assert run.start_time_unix_nano <= wait.start_time_unix_nano <= wait.end_time_unix_nano <= run.end_time_unix_nano


async def test_a_finished_runs_state_reused_by_a_new_run_starts_a_new_trace(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    workflow = ApprovalEmailWorkflow(llm=RejectingVerifier())
    handler = workflow.run(email_data=sample_email("question"))
    async for event in handler.stream_events():
        if isinstance(event, ApprovalRequiredEvent):
            assert handler.ctx is not None
            paused = handler.ctx.to_dict()
            handler.ctx.send_event(ApprovalResponseEvent(approved=True))
    await handler
    assert handler.ctx is not None
    finished = handler.ctx.to_dict()
    assert saved_trace(paused) is not None, "a paused run's snapshot carries its trace"
    assert saved_trace(finished) is None, "a finished run's state does not pull a new run into its trace"
    restored = Context.from_dict(ApprovalEmailWorkflow(), finished)
    assert saved_trace(restored) is None


async def test_an_unanswered_approval_fails_the_run_and_the_wait_shows_as_an_error(
    telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    workflow = ApprovalEmailWorkflow(llm=RejectingVerifier(), approval_timeout=0.3)
    with pytest.raises(TimeoutError):
        await workflow.run(email_data=sample_email("question"))
    assert await otel_basic.aflush()
    [trace] = langfuse_env.traces().values()
    wait = _one(trace, "wait_for_approval")
    assert wait.parent_span_id == _one(trace, "ApprovalEmailWorkflow.run").span_id
    assert wait.attributes["approval.timed_out"] is True and wait.attributes["wait.seconds"] >= 0.3
    shown = langfuse_view(langfuse_env.spans).traces[wait.trace_id]
    observation = next(o for o in shown.observations if o.name == "wait_for_approval")
    assert (observation.level, observation.status_message) == ("ERROR", "no answer in time")


@pytest.mark.slow
async def test_workflow_server_reloading_an_idle_run_from_its_store_continues_the_trace(
    tmp_path: Path, telemetry: otel_basic.Telemetry, langfuse_env: LangfuseReceiver
) -> None:
    """WorkflowServer releases a run that waits (idle), keeps it in its store, and reloads it when
    the answer comes; here the answer reaches a NEW server over the same Sqlite store (a restart).
    That store keeps the context's state outside the snapshot: the trace travels in the waiter."""
    store_path = tmp_path / "workflows.db"

    def server(workflow: ApprovalEmailWorkflow) -> WorkflowServer:
        built = WorkflowServer(
            workflow_store=SqliteWorkflowStore(str(store_path)), idle_timeout=0.2, serializer=JsonSerializer()
        )
        built.add_workflow("email-approval", workflow, additional_events=[ApprovalResponseEvent])
        built.app.add_middleware(TraceContextMiddleware)
        return built

    email = sample_email("question")
    first = server(ApprovalEmailWorkflow(llm=RejectingVerifier()))
    async with first.contextmanager(), _client(first) as client:
        started = await client.post("/workflows/email-approval/run-nowait", json={"start_event": {"email_data": email}})
        assert started.status_code == 200, started.text
        handler_id, trace_id = started.json()["handler_id"], started.headers["x-trace-id"]
        for _ in range(200):  # until the run waits for the answer (its last step paused)
            if any(s.name == "ApprovalEmailWorkflow.send_results" for s in langfuse_env.spans):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the run never asked for approval")
        await asyncio.sleep(0.5)  # idle: released to the store
    assert await otel_basic.aflush()

    second = server(ApprovalEmailWorkflow())
    async with second.contextmanager(), _client(second) as client:
        answer = {"type": "ApprovalResponseEvent", "value": {"approved": True, "reviewer": "ops-2"}}
        sent = await client.post(f"/events/{handler_id}", json={"event": answer})
        assert sent.status_code == 200, sent.text
        for _ in range(100):
            result = await client.get(f"/results/{handler_id}")
            if result.status_code == 200 and result.json().get("status") == "completed":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no result: {result.text}")
    assert await otel_basic.aflush()

    assert set(langfuse_env.traces()) == {trace_id}, "one trace, before and after the restart"
    spans = langfuse_env.traces()[trace_id]
    runs = [s for s in spans if s.name == "ApprovalEmailWorkflow.run"]
    original = next(s for s in runs if s.parent_span_id is None)
    [continued] = [s for s in runs if s is not original]
    assert continued.parent_span_id == original.span_id
    wait = _one(spans, "wait_for_approval")
    assert wait.parent_span_id == original.span_id and wait.attributes["approval.reviewer"] == "ops-2"
    shown = langfuse_view(langfuse_env.spans).traces[trace_id]
    assert shown.name == "ApprovalEmailWorkflow" and isinstance(shown.output, dict)
    assert shown.output["thread_id"] == email["thread_id"]


@contextlib.asynccontextmanager
async def _client(server: WorkflowServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app), base_url="http://server") as client:
        yield client
