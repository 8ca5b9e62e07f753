"""A small LlamaIndex ``FunctionAgent`` with tools: the kind of app most users trace.

It answers questions about the support desk with two tools (the FAQ lookup and a ticket-status
tool) on any OpenAI-compatible chat model (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``,
``OPENAI_MODEL``). Nothing here is written for otel-basic: no decorators, no spans. Its traces
come out right because the layer fixes them (one generation per model call, streamed usage,
per-step flushing); see README "Agents and chat models".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.llms import LLM
from llama_index.core.tools import BaseTool, FunctionTool

from basic import tools

SYSTEM_PROMPT = (
    "You are a support agent. Use the tools to answer: search the FAQ for how-to questions, "
    "and look up tickets by their number. Answer in one or two sentences."
)


def faq(query: str) -> str:
    """Search the company FAQ; returns the best matching answers."""
    matches = tools.search_faq(query)
    return "\n".join(f"{m['question']}: {m['answer']}" for m in matches) or "no FAQ entry matches"


def ticket_status(ticket_number: int) -> str:
    """The status of a support ticket, by its number."""
    states = ("open", "waiting for customer", "resolved")
    return f"ticket {ticket_number} is {states[ticket_number % len(states)]}"


def support_agent(llm: LLM, **kwargs: Any) -> FunctionAgent:
    """The agent: ``FunctionAgent`` with the two tools, streaming (LlamaIndex's default)."""
    tools: list[BaseTool | Callable[..., Any]] = [
        FunctionTool.from_defaults(faq),
        FunctionTool.from_defaults(ticket_status),
    ]
    return FunctionAgent(tools=tools, llm=llm, system_prompt=SYSTEM_PROMPT, **kwargs)
