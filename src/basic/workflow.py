"""The hello workflow: the smallest workflow that still produces a meaningful trace."""

from __future__ import annotations

from pydantic import Field
from workflows import Context, step
from workflows.events import StartEvent, StopEvent

from otel_basic.workflows import TracedWorkflow, flush_after_step


class HelloStartEvent(StartEvent):
    """A typed start event, so the run span's input reads ``HelloStartEvent(name='Ada')``."""

    name: str = Field(default="world", max_length=200)


class HelloWorkflow(TracedWorkflow):
    """Greets ``name``; one step, ``hello``."""

    @step
    @flush_after_step
    async def hello(self, ctx: Context, ev: HelloStartEvent) -> StopEvent:
        name = ev.name.strip() or "world"
        return StopEvent(result=f"Hello, {name}!")


workflow = HelloWorkflow(timeout=60.0)
