"""Data models of the email workflow: what comes in, what the LLM must produce, what goes out.

Everything crossing a trust boundary (the caller's email, the LLM's JSON, the callback payload) is a
pydantic model, so bad data fails in one place with a clear message instead of deep inside a step.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Category = Literal["question", "complaint", "meeting_request", "spam", "urgent", "other"]
Priority = Literal["low", "normal", "high"]
ToolName = Literal["draft_reply", "lookup_faq", "create_ticket", "propose_meeting_slots", "flag_spam"]

CATEGORIES: tuple[Category, ...] = ("question", "complaint", "meeting_request", "spam", "urgent", "other")
PRIORITIES: tuple[Priority, ...] = ("low", "normal", "high")
TOOL_NAMES: tuple[ToolName, ...] = (
    "draft_reply",
    "lookup_faq",
    "create_ticket",
    "propose_meeting_slots",
    "flag_spam",
)

# Deliberately simple: one "@", no spaces, a dot in the domain. Full RFC 5322 validation needs the
# email-validator package, which we do not want as a dependency for a demo application.
_EMAIL_RE = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")


def is_email_address(value: str) -> bool:
    """True when ``value`` looks like ``local@domain.tld`` (no display name)."""
    return len(value) <= 254 and _EMAIL_RE.match(value) is not None


def _check_address(value: str) -> str:
    value = value.strip()
    if not is_email_address(value):
        # Never echo the value: it is personal data and could be anything the caller sent.
        raise ValueError("not a valid email address")
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"  # domains are case-insensitive; local parts may not be


class InvalidEmailError(ValueError):
    """The caller's ``email_data`` is unusable.

    The message names the bad fields and the reasons, never the values (the body may be personal
    data and may be long), so it is safe to log, to put on a span, and to return from a server.
    """

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = dict(problems)
        self.fields = list(problems)
        detail = "; ".join(f"{field}: {reason}" for field, reason in problems.items())
        super().__init__(f"invalid email_data: {detail}")

    @classmethod
    def from_validation_error(cls, exc: ValidationError) -> InvalidEmailError:
        """Keep pydantic's locations and messages, drop its ``input_value`` echoes."""
        problems: dict[str, str] = {}
        for err in exc.errors(include_input=False, include_url=False):
            loc = ".".join(str(part) for part in err["loc"]) or "email_data"
            message = str(err["msg"])
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            problems.setdefault(loc, message.lower())
        return cls(problems)


class EmailData(BaseModel):
    """An incoming email. Unknown keys are ignored so webhook payloads with extra fields still work."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    sender: str = Field(description="The sender's address, e.g. ada@example.com")
    subject: str = Field(default="", max_length=998)
    body: str = Field(min_length=1, max_length=100_000)
    thread_id: str | None = Field(default=None, max_length=256)
    received_at: datetime | None = None
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)

    @field_validator("sender")
    @classmethod
    def _sender_is_address(cls, value: str) -> str:
        return _check_address(value)

    @field_validator("to", "cc", mode="before")
    @classmethod
    def _split_recipients(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [part for part in re.split(r"[,;]", value) if part.strip()]
        return value

    @field_validator("to", "cc")
    @classmethod
    def _recipients_are_addresses(cls, value: list[str]) -> list[str]:
        return [_check_address(item) for item in value]

    @classmethod
    def parse(cls, data: Any) -> EmailData:
        """Validate a dict or model into ``EmailData``, raising only ``InvalidEmailError``."""
        if isinstance(data, EmailData):
            return data
        if isinstance(data, BaseModel):
            data = data.model_dump()
        if not isinstance(data, dict):
            raise InvalidEmailError({"email_data": f"expected an object, got {type(data).__name__}"})
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidEmailError.from_validation_error(exc) from None


class PlanStep(BaseModel):
    """One tool call of the plan."""

    tool: ToolName
    args: dict[str, Any] = Field(default_factory=dict)


class Triage(BaseModel):
    """The LLM's classification of the email and the plan it proposes."""

    category: Category
    priority: Priority = "normal"
    summary: str = Field(default="", max_length=2000)
    plan: list[PlanStep] = Field(default_factory=list)


class ToolResult(BaseModel):
    """The outcome of one plan step; a failure is data, not an exception."""

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    ok: bool
    output: dict[str, Any] | None = None
    error: str | None = None
    duration_ms: float = 0.0


class Verification(BaseModel):
    """What the verifier said about the final draft, and whether a revision round happened."""

    ok: bool
    issues: list[str] = Field(default_factory=list)
    revised: bool = False
    initial_issues: list[str] = Field(default_factory=list)
    skipped: bool = False


class Delivery(BaseModel):
    """How handing the result to the caller's callback went."""

    status: Literal["skipped", "delivered", "failed"]
    ok: bool
    target: Literal["none", "url", "callable"] = "none"
    attempts: int = 0
    status_code: int | None = None
    error: str | None = None


class EmailResult(BaseModel):
    """The workflow's result: JSON-serialisable, and the payload POSTed to a callback URL."""

    thread_id: str | None = None
    sender: str
    category: Category
    priority: Priority
    summary: str
    plan: list[PlanStep]
    triage_issues: list[str] = Field(default_factory=list)
    tool_results: list[ToolResult] = Field(default_factory=list)
    response_draft: str = ""
    verification: Verification
    delivery: Delivery | None = None
