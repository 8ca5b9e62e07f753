"""The email workflow's tools, each traced as an OpenInference TOOL span.

Tools are small, real and deterministic (apart from ``draft_reply``, which asks the LLM): a FAQ search
over bundled data, an in-memory ticket store, meeting slots computed from the email's date, a spam
register. ``run_tool`` is the only way the workflow calls them: it validates the arguments, opens the
span, and turns any failure into a ``ToolResult(ok=False)`` so one broken tool never stops the plan.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from importlib import resources
from typing import Any

from llama_index.core.llms import LLM
from opentelemetry.trace import Span, Status, StatusCode, Tracer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import otel_basic
from basic.llm import draft_prompt, format_email
from basic.models import EmailData, Priority, ToolResult, Triage
from otel_basic.workflows import under_current_span

logger = logging.getLogger(__name__)

TRACER_NAME = "basic.tools"

# OpenInference semantic-convention keys, spelled out so this module does not depend on the conventions
# package's import layout; Langfuse maps ``openinference.span.kind=TOOL`` to a tool observation.
SPAN_KIND = "openinference.span.kind"
TOOL_NAME = "tool.name"
TOOL_DESCRIPTION = "tool.description"
TOOL_PARAMETERS = "tool.parameters"
INPUT_VALUE = "input.value"
INPUT_MIME_TYPE = "input.mime_type"
OUTPUT_VALUE = "output.value"
OUTPUT_MIME_TYPE = "output.mime_type"
JSON_MIME = "application/json"


def _tracer() -> Tracer:
    """The tracer for tool spans, looked up at call time: otel-basic's provider when it is
    configured (it may not be the global one, when the host set its own), else the global one."""
    return otel_basic.get_tracer(TRACER_NAME)


def _context_attributes() -> dict[str, Any]:
    """session.id / user.id / metadata set with OpenInference's ``using_*`` helpers, if any.

    OpenInference stamps them on its own spans only; copying them keeps our TOOL spans filterable by
    session and user in Langfuse like the rest of the trace.
    """
    try:
        from openinference.instrumentation import get_attributes_from_context

        return dict(get_attributes_from_context())
    except Exception:  # a tool span without session/user beats a failed tool
        logger.debug("could not read OpenInference context attributes", exc_info=True)
        return {}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


# ------------------------------------------------------------------------------------------ context


@dataclass
class ToolContext:
    """What a tool may use: the email, the triage, the LLM, and the results of earlier steps."""

    email: EmailData
    triage: Triage
    llm: LLM
    results: list[ToolResult] = field(default_factory=list)

    def facts(self) -> list[dict[str, Any]]:
        """Outputs of the successful non-drafting steps so far, as the draft prompt shows them."""
        return [
            {"tool": r.tool, "output": r.output}
            for r in self.results
            if r.ok and r.output is not None and r.tool != "draft_reply"
        ]

    def email_text(self) -> str:
        return format_email(self.email.sender, self.email.subject, self.email.body)


class _Args(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DraftReplyArgs(_Args):
    """draft_reply takes no arguments: it drafts from the email and the facts gathered so far."""


class LookupFaqArgs(_Args):
    query: str | None = Field(default=None, max_length=2000, description="Defaults to subject + body.")
    top_k: int = Field(default=2, ge=1, le=5)


class CreateTicketArgs(_Args):
    priority: Priority | None = Field(default=None, description="Defaults to the triage priority.")
    title: str | None = Field(default=None, max_length=200, description="Defaults to the subject.")


class ProposeMeetingSlotsArgs(_Args):
    count: int = Field(default=3, ge=1, le=10)
    duration_minutes: int = Field(default=30, ge=15, le=240)


class FlagSpamArgs(_Args):
    reason: str = Field(default="classified as spam", max_length=500)


ToolFn = Callable[[ToolContext, Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class ToolSpec:
    """A registered tool: its name, what it is for, its argument model and its implementation."""

    name: str
    description: str
    args_model: type[BaseModel]
    fn: ToolFn


# ------------------------------------------------------------------------------------ implementations


async def draft_reply(ctx: ToolContext, args: DraftReplyArgs) -> dict[str, Any]:
    """Ask the LLM for a reply that uses the facts gathered by the earlier steps."""
    prompt = draft_prompt(ctx.email_text(), ctx.triage.category, ctx.facts())
    response = await ctx.llm.acomplete(prompt)
    return {"draft": str(response.text).strip()}


@dataclass(frozen=True)
class FaqEntry:
    id: str
    question: str
    answer: str
    terms: frozenset[str]


_STOPWORDS = frozenset(
    (  # noqa: SIM905 - a word list reads better as prose
        "a an and are as at be but by can could do does for from have hi hello how i if in is it its me "
        "my no not of on or our please so that the this to was we what when where which who why will "
        "with you your thanks thank regards best dear"
    ).split()
)


def _terms(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    # Crude plural folding is enough for keyword overlap ("invoices" finds "invoice").
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words if w not in _STOPWORDS}


@functools.cache
def load_faq() -> tuple[FaqEntry, ...]:
    """The bundled FAQ (src/basic/data/faq.json), read once."""
    raw = json.loads(resources.files("basic").joinpath("data/faq.json").read_text(encoding="utf-8"))
    return tuple(
        FaqEntry(
            id=item["id"],
            question=item["question"],
            answer=item["answer"],
            terms=frozenset(_terms(item["question"] + " " + " ".join(item.get("keywords", [])))),
        )
        for item in raw
    )


def search_faq(query: str, top_k: int = 2) -> list[dict[str, Any]]:
    """FAQ entries ranked by keyword overlap with ``query``; weak matches (< half the best) are dropped."""
    wanted = _terms(query)
    scored = sorted(
        ((len(wanted & entry.terms), entry) for entry in load_faq()),
        key=lambda pair: (-pair[0], pair[1].id),
    )
    best = scored[0][0] if scored else 0
    if best == 0:
        return []
    return [
        {"id": entry.id, "question": entry.question, "answer": entry.answer, "score": score}
        for score, entry in scored[:top_k]
        if score > 0 and score * 2 >= best
    ]


async def lookup_faq(ctx: ToolContext, args: LookupFaqArgs) -> dict[str, Any]:
    """Find FAQ answers relevant to the email (or to the planner's query)."""
    query = args.query or f"{ctx.email.subject} {ctx.email.body}"
    return {"matches": search_faq(query, args.top_k)}


class TicketStore:
    """A bounded, thread-safe in-memory ticket store: the demo has no database, and must not leak."""

    def __init__(self, max_tickets: int = 1000) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._tickets: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._max = max_tickets

    def create(self, *, title: str, priority: Priority, category: str, thread_id: str | None) -> dict[str, Any]:
        with self._lock:
            ticket_id = f"TCK-{next(self._ids):05d}"
            ticket = {
                "ticket_id": ticket_id,
                "title": title,
                "priority": priority,
                "category": category,
                "thread_id": thread_id,
                "created_at": datetime.now(UTC).isoformat(),
            }
            self._tickets[ticket_id] = ticket
            while len(self._tickets) > self._max:
                self._tickets.popitem(last=False)
            return dict(ticket)

    def get(self, ticket_id: str) -> dict[str, Any] | None:
        with self._lock:
            ticket = self._tickets.get(ticket_id)
            return dict(ticket) if ticket else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._tickets)


TICKETS = TicketStore()


async def create_ticket(ctx: ToolContext, args: CreateTicketArgs) -> dict[str, Any]:
    """Open a support ticket for complaints and urgent problems."""
    title = args.title or ctx.email.subject or "(no subject)"
    ticket = TICKETS.create(
        title=title,
        priority=args.priority or ctx.triage.priority,
        category=ctx.triage.category,
        thread_id=ctx.email.thread_id,
    )
    return {"ticket_id": ticket["ticket_id"], "priority": ticket["priority"], "title": ticket["title"]}


# A fixed Monday, so slots are reproducible when the email carries no date.
REFERENCE_DATE = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
SLOT_START_HOURS = (10, 15)


def meeting_slots(reference: datetime, count: int = 3, duration_minutes: int = 30) -> list[dict[str, str]]:
    """``count`` slots on the business days after ``reference`` (UTC), at 10:00 and 15:00."""
    ref = reference.astimezone(UTC) if reference.tzinfo else reference.replace(tzinfo=UTC)
    slots: list[dict[str, str]] = []
    day = ref.date()
    while len(slots) < count:
        day += timedelta(days=1)
        if day.weekday() >= 5:
            continue
        for hour in SLOT_START_HOURS:
            if len(slots) == count:
                break
            start = datetime.combine(day, dtime(hour, 0), tzinfo=UTC)
            end = start + timedelta(minutes=duration_minutes)
            label = f"{start:%a} {start.day} {start:%b %Y}, {start:%H:%M}-{end:%H:%M} UTC"
            slots.append({"start": start.isoformat(), "end": end.isoformat(), "label": label})
    return slots


async def propose_meeting_slots(ctx: ToolContext, args: ProposeMeetingSlotsArgs) -> dict[str, Any]:
    """Deterministic meeting proposals, relative to when the email arrived."""
    reference = ctx.email.received_at or REFERENCE_DATE
    return {"slots": meeting_slots(reference, args.count, args.duration_minutes), "timezone": "UTC"}


class SpamRegister:
    """Thread ids flagged as spam, bounded like the ticket store."""

    def __init__(self, max_entries: int = 1000) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, str] = OrderedDict()
        self._max = max_entries

    def flag(self, key: str, reason: str) -> None:
        with self._lock:
            self._entries[key] = reason
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries


SPAM = SpamRegister()


async def flag_spam(ctx: ToolContext, args: FlagSpamArgs) -> dict[str, Any]:
    """Record the email as spam; spam gets no reply."""
    key = ctx.email.thread_id or ctx.email.sender
    SPAM.flag(key, args.reason)
    return {"flagged": True, "reason": args.reason}


TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec("draft_reply", "Draft the reply from the facts gathered.", DraftReplyArgs, draft_reply),
        ToolSpec("lookup_faq", "Search the bundled FAQ by keyword overlap.", LookupFaqArgs, lookup_faq),
        ToolSpec("create_ticket", "Open a support ticket.", CreateTicketArgs, create_ticket),
        ToolSpec(
            "propose_meeting_slots",
            "Propose meeting times after the email's date.",
            ProposeMeetingSlotsArgs,
            propose_meeting_slots,
        ),
        ToolSpec("flag_spam", "Mark the email as spam.", FlagSpamArgs, flag_spam),
    )
}


def normalise_args(tool: str, args: Any) -> tuple[dict[str, Any], str | None]:
    """Arguments the tool accepts, and a note when the planner's arguments had to be replaced.

    Invalid arguments fall back to the tool's defaults rather than failing the step: the planner is an
    LLM, and a wrong ``count`` should not cost the customer their reply.
    """
    spec = TOOLS[tool]
    if not isinstance(args, dict):
        return {}, f"{tool}: arguments were not an object; using defaults"
    try:
        model = spec.args_model.model_validate(args)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors(include_input=False)})
        return {}, f"{tool}: invalid arguments ({', '.join(fields)}); using defaults"
    return model.model_dump(exclude_defaults=True), None


# ----------------------------------------------------------------------------------------- running


@functools.cache
def _parameters_json(model: type[BaseModel]) -> str:
    """A tool's JSON schema, built once: pydantic builds it anew per call (0.25-0.6 ms a tool span, slow machine)."""
    return _json(model.model_json_schema())


def _set_error(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


async def run_tool(name: str, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """Run one tool in its own TOOL span; never raises (except cancellation)."""
    started = time.perf_counter()
    spec = TOOLS.get(name)
    attributes: dict[str, Any] = {
        **_context_attributes(),
        SPAN_KIND: "TOOL",
        TOOL_NAME: name,
        INPUT_VALUE: _json(args),
        INPUT_MIME_TYPE: JSON_MIME,
    }
    if spec is not None:
        attributes[TOOL_DESCRIPTION] = spec.description
        attributes[TOOL_PARAMETERS] = _parameters_json(spec.args_model)
    with _tracer().start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            if spec is None:
                raise LookupError(f"unknown tool {name!r}")
            parsed = spec.args_model.model_validate(args)
            with under_current_span():  # the tool's LLM calls nest under the tool span
                output = await spec.fn(ctx, parsed)
        except Exception as exc:
            _set_error(span, exc)
            logger.warning("tool %s failed: %s: %s", name, type(exc).__name__, exc)
            return ToolResult(
                tool=name,
                args=args,
                ok=False,
                error=f"{type(exc).__name__}: {exc}",
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        span.set_attribute(OUTPUT_VALUE, _json(output))
        span.set_attribute(OUTPUT_MIME_TYPE, JSON_MIME)
        span.set_status(Status(StatusCode.OK))
        return ToolResult(
            tool=name, args=args, ok=True, output=output, duration_ms=(time.perf_counter() - started) * 1000
        )
