"""The email tools: deterministic behaviour, and a TOOL span per call (ERROR when the tool fails)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from basic import tools
from basic.llm import OfflineLLM
from basic.models import EmailData, PlanStep, ToolResult, Triage
from basic.tools import (
    TICKETS,
    TOOLS,
    ToolContext,
    meeting_slots,
    normalise_args,
    run_tool,
    search_faq,
)


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tool spans go to a private provider (the global one can be set only once per process)."""
    provider = TracerProvider()
    exp = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    monkeypatch.setattr(tools, "_tracer", lambda: provider.get_tracer("test"))
    yield exp
    provider.shutdown()


def _ctx(category: str = "question", **email: Any) -> ToolContext:
    data = {"sender": "ada@example.com", "subject": "How do I reset my password?", "body": "Help?"}
    data.update(email)
    return ToolContext(
        email=EmailData.model_validate(data),
        triage=Triage(category=category, priority="normal", summary="s", plan=[PlanStep(tool="draft_reply")]),  # type: ignore[arg-type]
        llm=OfflineLLM(),
    )


def _only_span(exp: InMemorySpanExporter) -> ReadableSpan:
    spans = exp.get_finished_spans()
    assert len(spans) == 1
    return spans[0]


def test_search_faq_ranks_by_keyword_overlap() -> None:
    matches = search_faq("I forgot my password, how do I reset it?")
    assert matches[0]["id"] == "faq-password-reset"
    assert search_faq("where are my invoices")[0]["id"] == "faq-invoice"
    assert search_faq("zebra quantum marmalade") == []
    assert len(search_faq("refund order shipping tracking billing plan", top_k=5)) <= 5


def test_meeting_slots_are_deterministic_and_skip_weekends() -> None:
    friday = datetime(2025, 1, 10, 16, 0, tzinfo=UTC)
    slots = meeting_slots(friday, count=3, duration_minutes=45)
    assert [s["start"] for s in slots] == [
        "2025-01-13T10:00:00+00:00",
        "2025-01-13T15:00:00+00:00",
        "2025-01-14T10:00:00+00:00",
    ]
    assert slots[0]["end"] == "2025-01-13T10:45:00+00:00"
    assert slots[0]["label"] == "Mon 13 Jan 2025, 10:00-10:45 UTC"
    assert meeting_slots(friday) == meeting_slots(friday)
    naive = meeting_slots(datetime(2025, 1, 10, 16, 0))
    assert naive == meeting_slots(friday)


async def test_propose_meeting_slots_uses_reference_date_without_received_at(
    exporter: InMemorySpanExporter,
) -> None:
    result = await run_tool("propose_meeting_slots", {"count": 2}, _ctx("meeting_request"))
    assert result.ok
    assert result.output is not None
    assert result.output["slots"][0]["start"] == "2025-01-07T10:00:00+00:00"  # day after Mon 6 Jan
    assert len(result.output["slots"]) == 2


async def test_lookup_faq_span_is_a_tool_span(exporter: InMemorySpanExporter) -> None:
    result = await run_tool("lookup_faq", {}, _ctx())
    assert result.ok
    assert result.output is not None
    assert result.output["matches"][0]["id"] == "faq-password-reset"
    span = _only_span(exporter)
    attrs = span.attributes or {}
    assert span.name == "lookup_faq"
    assert attrs["openinference.span.kind"] == "TOOL"
    assert attrs["tool.name"] == "lookup_faq"
    assert json.loads(str(attrs["input.value"])) == {}
    assert json.loads(str(attrs["output.value"]))["matches"][0]["id"] == "faq-password-reset"
    assert "query" in json.loads(str(attrs["tool.parameters"]))["properties"]
    assert span.status.status_code is StatusCode.OK


async def test_create_ticket_gets_an_id_and_priority(exporter: InMemorySpanExporter) -> None:
    ctx = _ctx("complaint", thread_id="t-1")
    first = await run_tool("create_ticket", {"priority": "high"}, ctx)
    second = await run_tool("create_ticket", {}, ctx)
    assert first.output is not None and second.output is not None
    assert first.output["priority"] == "high"
    assert second.output["priority"] == "normal"  # the triage priority
    assert first.output["ticket_id"] != second.output["ticket_id"]
    stored = TICKETS.get(first.output["ticket_id"])
    assert stored is not None and stored["thread_id"] == "t-1"


def test_ticket_store_is_bounded() -> None:
    store = tools.TicketStore(max_tickets=3)
    tickets = [store.create(title="t", priority="low", category="other", thread_id=None) for _ in range(5)]
    ids = [t["ticket_id"] for t in tickets]
    assert len(store) == 3
    assert store.get(ids[0]) is None
    assert store.get(ids[-1]) is not None


async def test_flag_spam(exporter: InMemorySpanExporter) -> None:
    result = await run_tool("flag_spam", {"reason": "lottery"}, _ctx("spam", thread_id="spam-1"))
    assert result.output == {"flagged": True, "reason": "lottery"}
    assert "spam-1" in tools.SPAM


async def test_draft_reply_uses_llm_and_earlier_facts(exporter: InMemorySpanExporter) -> None:
    ctx = _ctx("complaint", subject="Broken blender")
    ctx.results.append(
        ToolResult(tool="create_ticket", ok=True, output={"ticket_id": "TCK-77777", "priority": "normal"})
    )
    ctx.results.append(ToolResult(tool="lookup_faq", ok=False, error="boom"))
    ticket = {"ticket_id": "TCK-77777", "priority": "normal"}
    assert ctx.facts() == [{"tool": "create_ticket", "output": ticket}]
    result = await run_tool("draft_reply", {}, ctx)
    assert result.output is not None
    assert result.output["draft"].startswith("Hello Ada,")
    assert "TCK-77777" in result.output["draft"]


async def test_failing_tool_is_recorded_on_span_and_result(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(ctx: ToolContext, args: Any) -> dict[str, Any]:
        raise RuntimeError("faq index unavailable")

    monkeypatch.setitem(TOOLS, "lookup_faq", dataclasses.replace(TOOLS["lookup_faq"], fn=boom))
    result = await run_tool("lookup_faq", {}, _ctx())
    assert not result.ok
    assert result.error == "RuntimeError: faq index unavailable"
    span = _only_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert "output.value" not in (span.attributes or {})


async def test_unknown_tool_and_bad_args_fail_softly(exporter: InMemorySpanExporter) -> None:
    unknown = await run_tool("send_bitcoin", {}, _ctx())
    assert not unknown.ok and "unknown tool" in (unknown.error or "")
    bad = await run_tool("propose_meeting_slots", {"count": 99}, _ctx())
    assert not bad.ok and "ValidationError" in (bad.error or "")
    assert all(s.status.status_code is StatusCode.ERROR for s in exporter.get_finished_spans())


def test_normalise_args() -> None:
    assert normalise_args("propose_meeting_slots", {"count": 2, "junk": 1}) == ({"count": 2}, None)
    args, note = normalise_args("propose_meeting_slots", {"count": "many"})
    assert args == {} and note is not None and "count" in note
    assert normalise_args("flag_spam", ["x"])[0] == {}


async def test_tools_work_without_any_tracer_provider() -> None:
    # No fixture: the global provider is whatever it is (a no-op by default); tools must not care.
    result = await run_tool("flag_spam", {}, _ctx("spam"))
    assert result.ok
