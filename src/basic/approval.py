"""The email workflow with a human in the loop: a reply that failed verification twice needs approval.

``ApprovalEmailWorkflow`` runs like :class:`~basic.email_workflow.EmailWorkflow` until the last step.
There, when the verifier rejected the draft, the revision, and the revised draft again, the run
writes an :class:`ApprovalRequiredEvent` to its event stream and waits for an
:class:`ApprovalResponseEvent`. The waiting run can be saved (``handler.ctx.to_dict()``), stopped,
and continued from that state in another process::

    ctx = Context.from_dict(workflow, saved)
    handler = workflow.run(ctx=ctx)               # joins the original run's trace
    handler.ctx.send_event(ApprovalResponseEvent(approved=True, reviewer="ops"))
    result = await handler

The trace stays one: the continued run is a child of the original run span, and a
``wait_for_approval`` span covers the time the run waited (``otel_basic.resume``).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.util.types import AttributeValue
from pydantic import Field
from workflows import Context, step
from workflows.events import HumanResponseEvent, InputRequiredEvent, StopEvent
from workflows.handler import WorkflowHandler

from basic.email_workflow import EmailErrorEvent, EmailWorkflow, VerifiedEvent, result_of
from basic.models import Delivery, Verification
from otel_basic.resume import continued_trace, wait_ended, wait_started, waiter_id
from otel_basic.workflows import flush_after_step

WAIT_SPAN = "wait_for_approval"
WAITER_ID = "approve-reply"


class ApprovalRequiredEvent(InputRequiredEvent):
    """Written to the event stream when a reply needs a person's approval before it is sent."""

    message: str = "The reply failed verification twice. Send it?"
    thread_id: str | None = None
    draft: str = ""
    issues: list[str] = Field(default_factory=list)


class ApprovalResponseEvent(HumanResponseEvent):
    """The reviewer's answer: approve (optionally with an edited draft) or reject."""

    approved: bool
    reviewer: str | None = Field(default=None, max_length=200)
    draft: str | None = Field(default=None, description="An edited reply to send instead of the draft.")


def needs_approval(verification: Verification) -> bool:
    """True when the verifier rejected the reply twice: the draft and its revision."""
    return verification.revised and not verification.ok and not verification.skipped


class ApprovalEmailWorkflow(EmailWorkflow):
    """:class:`EmailWorkflow` that asks a person before sending a reply that failed verification twice.

    Args:
        approval_timeout: seconds to wait for the answer (None: no limit, the default: a saved run
            may wait for days); the run fails with a timeout after it.
        **kwargs: as for :class:`EmailWorkflow` (its run ``timeout`` defaults to None here too).
    """

    def __init__(self, *args: Any, approval_timeout: float | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", None)
        super().__init__(*args, **kwargs)
        self.approval_timeout = approval_timeout

    def run(self, *args: Any, **kwargs: Any) -> WorkflowHandler:
        """Run; a run continued from a saved, paused context joins that run's trace."""
        ctx = kwargs.get("ctx", args[0] if args else None)
        with continued_trace(ctx):
            handler: WorkflowHandler = super().run(*args, **kwargs)
        return handler

    @step
    @flush_after_step
    async def send_results(self, ctx: Context, ev: VerifiedEvent) -> StopEvent:  # type: ignore[override]
        # Replayed from the top when the answer arrives: nothing before the wait has side effects.
        if not needs_approval(ev.verification):
            return await self._send(ctx, ev)
        waiter = await waiter_id(ctx, WAITER_ID)  # remembers the trace, and carries it in the waiter
        await wait_started(ctx, WAIT_SPAN)
        try:
            answer = await ctx.wait_for_event(
                ApprovalResponseEvent,
                waiter_event=ApprovalRequiredEvent(
                    thread_id=ev.email.thread_id,
                    draft=ev.draft,
                    issues=ev.verification.issues,
                ),
                waiter_id=waiter,
                timeout=self.approval_timeout,
            )
        except TimeoutError:  # nobody answered: the run fails, and the trace shows how long it waited
            await wait_ended(ctx, WAIT_SPAN, {"approval.timed_out": True}, error="no answer in time")
            raise
        decision: dict[str, AttributeValue] = {
            "approval.approved": answer.approved,
            "approval.edited": bool(answer.draft),
        }
        if answer.reviewer:
            decision["approval.reviewer"] = answer.reviewer
        await wait_ended(ctx, WAIT_SPAN, decision)
        if not answer.approved:
            return self._rejected(ctx, ev)
        return await self._send(ctx, ev.model_copy(update={"draft": answer.draft or ev.draft}))

    async def _send(self, ctx: Context, ev: VerifiedEvent) -> StopEvent:
        stop: StopEvent = await EmailWorkflow.send_results(self, ctx, ev)
        return stop

    def _rejected(self, ctx: Context, ev: VerifiedEvent) -> StopEvent:
        ctx.write_event_to_stream(
            EmailErrorEvent(step="send_results", message="the reviewer rejected the reply; nothing was sent")
        )
        result = result_of(
            ev, delivery=Delivery(status="skipped", ok=True, target="none", error="rejected by the reviewer")
        )
        return StopEvent(result=result)


approval_email_workflow = ApprovalEmailWorkflow()
