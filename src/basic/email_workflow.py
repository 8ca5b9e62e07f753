"""The email workflow: triage_email -> execute_plan -> verify_response -> send_results.

Run it as ``await email_workflow.run(email_data=..., callback=...)``. Bad input fails the first step with
``InvalidEmailError``; everything after that degrades instead of crashing: a malformed LLM plan is
repaired or replaced (and reported on the event stream), a failing tool is recorded and the plan goes on,
a failed verification gets one revision round, a failed callback is recorded in the result.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from llama_index.core.llms import LLM
from opentelemetry.trace import Span, Status, StatusCode
from pydantic import BaseModel, Field, field_validator
from workflows import Context, step
from workflows.events import Event, StartEvent, StopEvent

from basic import callback_guard
from basic.llm import format_email, get_llm, revise_prompt, triage_prompt, verify_prompt
from basic.models import (
    CATEGORIES,
    PRIORITIES,
    TOOL_NAMES,
    Category,
    Delivery,
    EmailData,
    EmailResult,
    PlanStep,
    Priority,
    ToolName,
    ToolResult,
    Triage,
    Verification,
    is_email_address,
)
from basic.tools import (
    INPUT_MIME_TYPE,
    INPUT_VALUE,
    JSON_MIME,
    OUTPUT_MIME_TYPE,
    OUTPUT_VALUE,
    SPAN_KIND,
    TOOL_NAME,
    TOOLS,
    ToolContext,
    _context_attributes,
    _tracer,
    normalise_args,
    run_tool,
)
from otel_basic.propagation import inject_headers
from otel_basic.scores import score_current_trace
from otel_basic.workflows import TracedWorkflow, flush_after_step

logger = logging.getLogger(__name__)

MAX_PLAN_STEPS = 8
_EMAIL_SCHEMA: dict[str, Any] = EmailData.model_json_schema()
Callback = str | Callable[..., Any]


# ------------------------------------------------------------------------------------------- events


class EmailStartEvent(StartEvent):
    """``email_data`` is validated by the first step (so errors come out of the run, as one clear error)."""

    email_data: Any = Field(
        default=None,
        description="The email: an EmailData object or a dict with its fields.",
        # Typed as Any so bad input reaches the first step (one clear error); documented as EmailData.
        json_schema_extra={
            "type": "object",
            "properties": _EMAIL_SCHEMA["properties"],
            "required": _EMAIL_SCHEMA.get("required", []),
        },
    )
    callback: Callback | None = Field(
        default=None, description="An http(s) URL to POST the result to, or an async callable."
    )

    @field_validator("email_data", mode="before")
    @classmethod
    def _models_to_dicts(cls, value: Any) -> Any:
        # A plain dict keeps the start event JSON-serialisable (server persistence, trace input).
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


class _EmailEvent(Event):
    email: EmailData
    callback: Callback | None = None


class TriagedEvent(_EmailEvent):
    triage: Triage
    triage_issues: list[str] = Field(default_factory=list)


class PlanExecutedEvent(TriagedEvent):
    tool_results: list[ToolResult] = Field(default_factory=list)
    draft: str = ""


class VerifiedEvent(PlanExecutedEvent):
    verification: Verification


class EmailErrorEvent(Event):
    """Written to the event stream when a step had to recover from a problem."""

    step: str
    message: str
    details: list[str] = Field(default_factory=list)
    recovered: bool = True


class ToolResultEvent(Event):
    """Written to the event stream after each tool, for live progress."""

    result: ToolResult


# ------------------------------------------------------------------------------------ triage parsing


def extract_json_object(text: str, *, max_chars: int = 50_000) -> dict[str, Any] | None:
    """The first JSON object in ``text``: plain, fenced in ```json, or surrounded by prose."""
    text = text[:max_chars]
    fenced = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", text, flags=re.DOTALL)
    candidates = [fenced.group(1)] if fenced else []
    candidates.append(text.strip())
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    for attempt, match in enumerate(re.finditer(r"\{", text)):
        if attempt >= 64:  # bound the work on adversarial output
            break
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _choice(value: Any, allowed: tuple[str, ...]) -> str | None:
    if not isinstance(value, str):
        return None
    norm = re.sub(r"[\s\-]+", "_", value.strip().lower())
    return norm if norm in allowed else None


def fallback_triage(email: EmailData) -> Triage:
    """The plan used when the LLM's triage is unusable: just draft a reply."""
    return Triage(
        category="other",
        priority="normal",
        summary=email.subject or "(no subject)",
        plan=[PlanStep(tool="draft_reply")],
    )


def parse_triage(text: str, email: EmailData) -> tuple[Triage, list[str], bool]:
    """Validate the LLM's triage JSON, repairing what can be repaired.

    Returns ``(triage, issues, rejected)``: ``issues`` lists every repair made; ``rejected`` is True when
    nothing usable was found and the fallback plan was used.
    """
    data = extract_json_object(text)
    if data is None:
        return fallback_triage(email), ["the triage output contained no JSON object"], True
    issues: list[str] = []

    category = _choice(data.get("category"), CATEGORIES)
    if category is None:
        issues.append(f"unknown category {str(data.get('category'))[:40]!r}; using 'other'")
        category = "other"
    priority = _choice(data.get("priority"), PRIORITIES)
    if priority is None:
        if "priority" in data:
            issues.append(f"unknown priority {str(data.get('priority'))[:40]!r}; using 'normal'")
        priority = "normal"
    summary = data.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        summary = email.subject or "(no subject)"
    summary = summary.strip()[:2000]

    raw_plan = data.get("plan")
    if not isinstance(raw_plan, list):
        issues.append("the plan was missing or not a list")
        raw_plan = []
    if len(raw_plan) > MAX_PLAN_STEPS:
        issues.append(f"the plan had {len(raw_plan)} steps; kept the first {MAX_PLAN_STEPS}")
        raw_plan = raw_plan[:MAX_PLAN_STEPS]
    plan: list[PlanStep] = []
    for index, item in enumerate(raw_plan):
        if isinstance(item, str):
            item = {"tool": item}
        if not isinstance(item, dict):
            issues.append(f"plan step {index} was not an object; dropped")
            continue
        tool = _choice(item.get("tool", item.get("name")), TOOL_NAMES)
        if tool is None or tool not in TOOLS:
            issues.append(f"dropped unknown tool {str(item.get('tool', item.get('name')))[:40]!r}")
            continue
        args, note = normalise_args(tool, item.get("args") or {})
        if note:
            issues.append(note)
        step_ = PlanStep(tool=_as_tool(tool), args=args)
        if step_ in plan:
            issues.append(f"dropped a duplicate {tool} step")
            continue
        plan.append(step_)

    others = [s for s in plan if s.tool != "draft_reply"]
    has_draft = len(others) != len(plan)
    if category == "spam":
        if has_draft:
            issues.append("spam gets no reply; dropped draft_reply")
        if not any(s.tool == "flag_spam" for s in others):
            issues.append("added flag_spam to the spam plan")
            others.append(PlanStep(tool="flag_spam"))
        plan = others
    else:
        if not has_draft:
            issues.append("added the missing draft_reply step")
        elif plan[-1].tool != "draft_reply":
            issues.append("moved draft_reply to the end, after the facts it needs")
        plan = [*others, PlanStep(tool="draft_reply")]
    triage = Triage(
        category=_as_category(category), priority=_as_priority(priority), summary=summary, plan=plan
    )
    return triage, issues, False


def _as_category(value: str) -> Category:
    return next(c for c in CATEGORIES if c == value)


def _as_priority(value: str) -> Priority:
    return next(p for p in PRIORITIES if p == value)


def _as_tool(value: str) -> ToolName:
    return next(t for t in TOOL_NAMES if t == value)


def parse_verification(text: str) -> Verification | None:
    """``{"ok": bool, "issues": [...]}`` from the verifier, or None if it said nothing usable."""
    data = extract_json_object(text)
    if data is None:
        return None
    ok = data.get("ok")
    if isinstance(ok, str) and ok.strip().lower() in ("true", "false"):
        ok = ok.strip().lower() == "true"
    if not isinstance(ok, bool):
        return None
    raw_issues = data.get("issues") or []
    if isinstance(raw_issues, str):
        raw_issues = [raw_issues]
    issues = [str(i)[:500] for i in raw_issues if str(i).strip()] if isinstance(raw_issues, list) else []
    return Verification(ok=ok, issues=issues)


def run_attributes(email_data: Any) -> dict[str, str | None]:
    """Trace attributes for a run, read leniently (never raises, even on invalid data).

    ``session_id`` is the email thread, so every email of a conversation groups into one Langfuse
    session; ``user_id`` is the sender's address.
    """
    if isinstance(email_data, BaseModel):
        email_data = email_data.model_dump()
    if not isinstance(email_data, dict):
        return {"session_id": None, "user_id": None}
    thread_id = email_data.get("thread_id")
    sender = email_data.get("sender")
    sender_ok = isinstance(sender, str) and is_email_address(sender.strip())
    return {
        "session_id": str(thread_id)[:256] if thread_id not in (None, "") else None,
        "user_id": sender.strip() if sender_ok and isinstance(sender, str) else None,
    }


def _score_verification(verification: Verification) -> None:
    """The verifier's judgement as Langfuse scores on the run's trace (no email text in them:
    scores skip the span pipeline's masking). An unusable verifier gave no verdict: no scores."""
    if verification.skipped:
        return
    issues = len(verification.issues)
    score_current_trace("verification_passed", verification.ok, comment=f"{issues} issue(s) left")
    score_current_trace("revision_rounds", 1 if verification.revised else 0, data_type="NUMERIC")


def _check_callback(callback: Any) -> Callback | None:
    if callback is None or (isinstance(callback, str) and not callback.strip()):
        return None
    if isinstance(callback, str):
        parts = urlsplit(callback.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("invalid callback: expected an http(s) URL or an async callable")
        return callback.strip()
    if callable(callback):
        checked: Callable[..., Any] = callback
        return checked
    raise ValueError("invalid callback: expected an http(s) URL or an async callable")


def _safe_url(url: str) -> str:
    """The URL without credentials or query string (which may hold tokens), for spans and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class CallbackDeliveryError(RuntimeError):
    """The callback did not accept the result; recorded on the delivery span, never raised to callers."""


# ------------------------------------------------------------------------------------------ workflow


def result_of(ev: VerifiedEvent, **extra: Any) -> EmailResult:
    """The run's result from its verified draft; ``extra`` sets the rest (e.g. the delivery)."""
    return EmailResult(
        thread_id=ev.email.thread_id,
        sender=ev.email.sender,
        category=ev.triage.category,
        priority=ev.triage.priority,
        summary=ev.triage.summary,
        plan=ev.triage.plan,
        triage_issues=ev.triage_issues,
        tool_results=ev.tool_results,
        response_draft=ev.draft,
        verification=ev.verification,
        **extra,
    )


class EmailWorkflow(TracedWorkflow):
    """Triage an email with the LLM, run the planned tools, verify the reply, deliver the result.

    Args:
        llm: the LLM to use; default ``basic.llm.get_llm()``, resolved at first use.
        timeout: the whole run's timeout in seconds (None disables it).
        callback_timeout: per-attempt timeout of the callback (URL or callable).
        callback_attempts: attempts for a URL callback (connect errors, 429 and 5xx are retried).
        callback_backoff: first retry delay in seconds, doubled for each further attempt.
    """

    def __init__(
        self,
        llm: LLM | None = None,
        *,
        timeout: float | None = 60.0,
        callback_timeout: float = 5.0,
        callback_attempts: int = 3,
        callback_backoff: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(timeout=timeout, **kwargs)
        self._llm = llm
        self.callback_timeout = callback_timeout
        self.callback_attempts = max(1, callback_attempts)
        self.callback_backoff = callback_backoff

    def trace_attributes(self, **run_kwargs: Any) -> dict[str, Any]:
        """Every span of a run carries the thread (session) and the sender (user)."""
        return dict(run_attributes(run_kwargs.get("email_data")))

    @property
    def llm(self) -> LLM:
        if self._llm is None:
            self._llm = get_llm()
        return self._llm

    @step
    @flush_after_step
    async def triage_email(self, ctx: Context, ev: EmailStartEvent) -> TriagedEvent:
        email = EmailData.parse(ev.email_data)
        callback = _check_callback(ev.callback)
        email_text = format_email(email.sender, email.subject, email.body)
        try:
            response = await self.llm.acomplete(triage_prompt(email_text))
            triage, issues, rejected = parse_triage(str(response.text), email)
        except Exception as exc:
            logger.warning("triage LLM call failed: %s: %s", type(exc).__name__, exc)
            triage, issues, rejected = fallback_triage(email), [f"{type(exc).__name__}: {exc}"], True
        if rejected:
            ctx.write_event_to_stream(
                EmailErrorEvent(
                    step="triage_email",
                    message="the triage was unusable; using the fallback plan (draft_reply)",
                    details=issues,
                )
            )
        elif issues:
            ctx.write_event_to_stream(
                EmailErrorEvent(step="triage_email", message="the triage plan was repaired", details=issues)
            )
        return TriagedEvent(email=email, callback=callback, triage=triage, triage_issues=issues)

    @step
    @flush_after_step
    async def execute_plan(self, ctx: Context, ev: TriagedEvent) -> PlanExecutedEvent:
        tool_ctx = ToolContext(email=ev.email, triage=ev.triage, llm=self.llm)
        for plan_step in ev.triage.plan:
            result = await run_tool(plan_step.tool, plan_step.args, tool_ctx)
            tool_ctx.results.append(result)
            ctx.write_event_to_stream(ToolResultEvent(result=result))
            if not result.ok:
                ctx.write_event_to_stream(
                    EmailErrorEvent(
                        step="execute_plan",
                        message=f"tool {result.tool} failed; continuing with the rest of the plan",
                        details=[result.error or "unknown error"],
                    )
                )
        drafts = [
            str(r.output.get("draft", ""))
            for r in tool_ctx.results
            if r.ok and r.output and r.tool == "draft_reply"
        ]
        return PlanExecutedEvent(
            email=ev.email,
            callback=ev.callback,
            triage=ev.triage,
            triage_issues=ev.triage_issues,
            tool_results=tool_ctx.results,
            draft=drafts[-1] if drafts else "",
        )

    async def _verify(self, ev: PlanExecutedEvent, facts: list[dict[str, Any]], draft: str) -> Verification:
        text = format_email(ev.email.sender, ev.email.subject, ev.email.body)
        try:
            response = await self.llm.acomplete(verify_prompt(text, ev.triage.category, facts, draft))
        except Exception as exc:
            issue = f"verifier failed: {type(exc).__name__}: {exc}"
            return Verification(ok=False, issues=[issue], skipped=True)
        parsed = parse_verification(str(response.text))
        if parsed is None:
            return Verification(ok=False, issues=["the verifier's output was not valid JSON"], skipped=True)
        return parsed

    @step
    @flush_after_step
    async def verify_response(self, ctx: Context, ev: PlanExecutedEvent) -> VerifiedEvent:
        facts = ToolContext(email=ev.email, triage=ev.triage, llm=self.llm, results=ev.tool_results).facts()
        draft = ev.draft
        if ev.triage.category == "spam" and not draft:
            verification = Verification(ok=True, skipped=True)
        else:
            first = await self._verify(ev, facts, draft)
            verification = first
            # One revision round, only on a definite "not ok" (an unusable verifier is not a verdict).
            if not first.ok and not first.skipped:
                text = format_email(ev.email.sender, ev.email.subject, ev.email.body)
                try:
                    response = await self.llm.acomplete(
                        revise_prompt(text, ev.triage.category, facts, draft, first.issues)
                    )
                    revised = str(response.text).strip()
                    draft = revised or draft
                except Exception as exc:
                    logger.warning("revision LLM call failed: %s: %s", type(exc).__name__, exc)
                second = await self._verify(ev, facts, draft)
                verification = Verification(
                    ok=second.ok, issues=second.issues, revised=True, initial_issues=first.issues
                )
            _score_verification(verification)
            if not verification.ok:
                ctx.write_event_to_stream(
                    EmailErrorEvent(
                        step="verify_response",
                        message="the reply did not pass verification; continuing with the best draft",
                        details=verification.issues,
                    )
                )
        return VerifiedEvent(
            email=ev.email,
            callback=ev.callback,
            triage=ev.triage,
            triage_issues=ev.triage_issues,
            tool_results=ev.tool_results,
            draft=draft,
            verification=verification,
        )

    @step
    @flush_after_step
    async def send_results(self, ctx: Context, ev: VerifiedEvent) -> StopEvent:
        result = result_of(ev)
        delivery = await self.deliver(result, ev.callback)
        if not delivery.ok:
            ctx.write_event_to_stream(
                EmailErrorEvent(
                    step="send_results",
                    message="the result could not be delivered to the callback",
                    details=[delivery.error or "unknown error"],
                )
            )
        return StopEvent(result=result.model_copy(update={"delivery": delivery}))

    # ----------------------------------------------------------------------------------- delivery

    async def deliver(self, result: EmailResult, callback: Callback | None) -> Delivery:
        """Hand the result to the callback in a ``deliver_result`` span; failures are returned, not raised."""
        if callback is None:
            return Delivery(status="skipped", ok=True, target="none")
        target = "url" if isinstance(callback, str) else "callable"
        attributes: dict[str, Any] = {
            **_context_attributes(),
            SPAN_KIND: "TOOL",
            TOOL_NAME: "deliver_result",
            "callback.target": target,
        }
        if isinstance(callback, str):
            attributes["callback.url"] = _safe_url(callback)
            attributes[INPUT_VALUE] = json.dumps({"url": _safe_url(callback)})
            attributes[INPUT_MIME_TYPE] = JSON_MIME
        # The step span cannot carry the failure: OpenInference sets it to OK when the step returns.
        with _tracer().start_as_current_span(
            "deliver_result", attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            if isinstance(callback, str):
                delivery, error = await self._post(span, callback, result)
            else:
                delivery, error = await self._call(callback, result)
            span.set_attribute("callback.attempts", delivery.attempts)
            span.set_attribute(OUTPUT_VALUE, delivery.model_dump_json())
            span.set_attribute(OUTPUT_MIME_TYPE, JSON_MIME)
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, delivery.error))
                logger.warning("callback delivery failed: %s", delivery.error)
            else:
                span.set_status(Status(StatusCode.OK))
            return callback_guard.for_client(delivery)  # no status codes or error texts for the API client

    async def _call(
        self, callback: Callable[..., Any], result: EmailResult
    ) -> tuple[Delivery, Exception | None]:
        try:
            outcome = callback(result)
            if inspect.isawaitable(outcome):
                await asyncio.wait_for(outcome, timeout=self.callback_timeout)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Delivery(status="failed", ok=False, target="callable", attempts=1, error=message), exc
        return Delivery(status="delivered", ok=True, target="callable", attempts=1), None

    async def _post(self, span: Span, url: str, result: EmailResult) -> tuple[Delivery, Exception | None]:
        payload = result.model_dump(mode="json", exclude={"delivery"})
        # traceparent of the delivery span (current here): the receiving service can join the trace.
        # Nothing else of the context (no tracestate, no baggage): the URL may point anywhere.
        headers = inject_headers({"Idempotency-Key": uuid.uuid4().hex, "User-Agent": "otel-basic-email-workflow"})
        safe = _safe_url(url)
        error: Exception | None = None
        message = "not attempted"
        status_code: int | None = None
        attempts = 0
        try:  # SSRF guard: resolve, check and pin the address before any traffic (basic.callback_guard)
            target = await callback_guard.check_target(url)
        except callback_guard.CallbackRefused as exc:
            span.add_event("callback.refused", {"reason": str(exc)})
            return Delivery(status="failed", ok=False, target="url", error=callback_guard.REFUSED), exc
        async with callback_guard.client(self.callback_timeout) as client:
            for attempt in range(1, self.callback_attempts + 1):
                attempts = attempt
                retryable = False
                try:
                    response = await client.post(
                        target.url, json=payload, headers={**headers, **target.headers}, extensions=target.extensions
                    )
                except callback_guard.CallbackRefused as exc:
                    span.add_event("callback.refused", {"reason": str(exc)})
                    return Delivery(status="failed", ok=False, target="url", error=callback_guard.REFUSED), exc
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                    error, retryable = exc, True
                    message = f"{type(exc).__name__}: {exc or 'connection failed'}"
                    span.add_event("callback.attempt", {"attempt": attempt, "error": message})
                except httpx.HTTPError as exc:
                    # e.g. a read timeout: the receiver may have processed the POST, so do not repeat it.
                    error = exc
                    message = f"{type(exc).__name__}: {exc or 'request failed'}"
                    span.add_event("callback.attempt", {"attempt": attempt, "error": message})
                else:
                    status_code = response.status_code
                    span.add_event("callback.attempt", {"attempt": attempt, "http.status_code": status_code})
                    if response.is_success:
                        delivered = Delivery(
                            status="delivered",
                            ok=True,
                            target="url",
                            attempts=attempt,
                            status_code=status_code,
                        )
                        return delivered, None
                    retryable = status_code >= 500 or status_code == 429
                    message = f"HTTP {status_code} from {safe}"
                    error = CallbackDeliveryError(message)
                if not retryable or attempt == self.callback_attempts:
                    break
                await asyncio.sleep(self.callback_backoff * 2 ** (attempt - 1))
        plural = "s" if attempts != 1 else ""
        delivery = Delivery(
            status="failed",
            ok=False,
            target="url",
            attempts=attempts,
            status_code=status_code,
            error=f"{message} (after {attempts} attempt{plural})",
        )
        return delivery, error


email_workflow = EmailWorkflow()
