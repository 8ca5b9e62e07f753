"""``otel-basic demo --agent`` / ``python -m basic.agent_demo``: a FunctionAgent run, as Langfuse shows it.

Runs :func:`basic.agent.support_agent` (tools, streaming) on a few questions and prints, per run,
the answer and what Langfuse will show for it: the trace, and each generation with its model,
tokens, latency, time to first token and, for a few well-known models, the list-price cost.

The chat model is any OpenAI-compatible server: ``OPENAI_API_KEY`` plus ``OPENAI_BASE_URL`` (and
``OPENAI_MODEL``). Without ``OPENAI_API_KEY`` it starts the local OpenAI-compatible stand-in
(:mod:`otel_basic.testing.openai_server`, on 127.0.0.1), says so, and needs no network. Spans go
where the environment says (Langfuse, an OTLP endpoint), else to ``./otel-basic-traces.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from llama_index.core.llms import LLM
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console
from rich.text import Text

import otel_basic
from basic.agent import support_agent
from basic.llm import DEFAULT_OPENAI_MODEL, get_llm
from otel_basic.settings import ConfigError, load_settings
from otel_basic.testing.langfuse_view import ObservationView, TraceView, langfuse_view
from otel_basic.testing.openai_server import OpenAICompatServer
from otel_basic.trace_tree import format_duration, from_readable

DEFAULT_OUT = Path("otel-basic-traces.jsonl")
QUESTIONS = (
    "What is the ticket_status of ticket 1234?",
    "How do I reset my password? Please check the faq.",
)
# USD per million tokens (input, output): OpenAI list prices, for the demo's estimate only;
# Langfuse computes the real cost from its own price table and the usage shown here.
PRICES = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}


def list_price(model: str | None, usage: dict[str, float]) -> float | None:
    """The list-price cost of ``usage`` on ``model`` (longest known prefix), or None."""
    if not model or not usage:
        return None
    known = [name for name in PRICES if model.startswith(name)]
    if not known:
        return None
    price_in, price_out = PRICES[max(known, key=len)]
    return (usage.get("input", 0) * price_in + usage.get("output", 0) * price_out) / 1e6


def _chat_model(stack: ExitStack) -> tuple[LLM, str]:
    """The configured OpenAI-compatible model, or the local stand-in server when none is."""
    if os.environ.get("OPENAI_API_KEY", "").strip():
        os.environ.setdefault("BASIC_LLM", "openai")
        llm = get_llm()
        base = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        return llm, f"{llm.metadata.model_name} at {base}"
    server = stack.enter_context(OpenAICompatServer(first_token_delay=0.15, chunk_delay=0.01))
    from llama_index.llms.openai_like import OpenAILike  # the [openai] extra, checked by main()

    llm = OpenAILike(
        model=DEFAULT_OPENAI_MODEL,
        api_key="local",
        api_base=server.base_url,
        is_chat_model=True,
        is_function_calling_model=True,
        context_window=128_000,
    )
    return llm, f"{DEFAULT_OPENAI_MODEL} on the local OpenAI-compatible stand-in at {server.base_url} (no network)"


def _configure(out: Path | None) -> tuple[otel_basic.Telemetry, str]:
    settings = load_settings()
    if settings.route == "disabled":
        path = (out or DEFAULT_OUT).expanduser().resolve()
        if load_settings(file_path=path).route == "file":
            return otel_basic.configure(file_path=path), f"{path} (OTLP JSON lines)"
    return otel_basic.configure(), settings.reason


def _tokens(usage: dict[str, float]) -> str:
    if not usage:
        return "no usage (Langfuse would estimate it)"
    return f"{int(usage.get('input', 0))} in / {int(usage.get('output', 0))} out"


def _ms(a: Any, b: Any) -> str:
    return format_duration((b - a).total_seconds() * 1000)


def _observation_line(obs: ObservationView) -> Text:
    line = Text("  ")
    line.append(f"{obs.type:<10} ", style="magenta" if obs.type == "GENERATION" else "cyan")
    if obs.type == "TOOL":
        args = obs.input.get("kwargs", obs.input) if isinstance(obs.input, dict) else obs.input
        line.append(f"{obs.attributes.get('tool.name', obs.name)} {json.dumps(args, ensure_ascii=False)[:70]}")
        line.append(f"  {_ms(obs.start_time, obs.end_time)}", style="dim")
        return line
    line.append(obs.name)
    line.append(
        f"  {obs.model or '(no model)'}  {_tokens(obs.usage)}  {_ms(obs.start_time, obs.end_time)}", style="dim"
    )
    if obs.completion_start_time is not None:
        line.append(f" (first token {_ms(obs.start_time, obs.completion_start_time)})", style="dim")
    return line


def render_agent_trace(trace: TraceView) -> list[Text]:
    """The generations and tools of one agent trace as Langfuse shows them: tokens, timing, cost."""
    lines = [Text.assemble(("Langfuse  ", "bold magenta"), ("trace ", "dim"), (str(trace.name), "bold"))]
    shown = sorted((o for o in trace.observations if o.type in ("GENERATION", "TOOL")), key=lambda o: o.start_time)
    lines.extend(_observation_line(obs) for obs in shown)
    lines.append(_summary(trace))
    return lines


def _summary(trace: TraceView) -> Text:
    gens = trace.generations
    tokens_in = sum(int(g.usage.get("input", 0)) for g in gens)
    tokens_out = sum(int(g.usage.get("output", 0)) for g in gens)
    costs = [list_price(g.model, g.usage) for g in gens]
    cost = (
        f"≈ ${sum(c for c in costs if c is not None):.6f} at list price"
        if gens and all(c is not None for c in costs)
        else "cost: Langfuse prices it if it knows the model"
    )
    others = len(trace.observations) - len(gens)
    return Text.assemble(
        "  ",
        (f"{len(gens)} generations", "bold"),
        f", {tokens_in} in / {tokens_out} out tokens, {cost}; {others} other observations; ",
        (f"user {trace.user_id}, session {trace.session_id}", "dim"),
    )


async def _run(llm: LLM, questions: list[str], capture: InMemorySpanExporter, console: Console) -> int:
    failures = 0
    session = f"agent-demo-{uuid.uuid4().hex[:8]}"
    for i, question in enumerate(questions, 1):
        console.rule(f"Run {i}/{len(questions)}: {question}", align="left")
        try:
            result = await otel_basic.run_with_flush(
                support_agent(llm), user_msg=question, session_id=session, user_id="demo-user"
            )
            console.print(Text.assemble(("answer  ", "bold"), str(result)))
        except Exception as exc:
            failures += 1
            console.print(Text(f"run failed: {type(exc).__name__}: {exc}", style="red"))
        view = langfuse_view(from_readable(capture.get_finished_spans()))
        capture.clear()
        for trace in view.traces.values():
            for line in render_agent_trace(trace):
                console.print(line)
    return failures


def run_agent_demo(
    *, questions: list[str] | None = None, out: Path | None = None, console: Console | None = None
) -> int:
    """Run the agent demo; returns the exit code (0 when every run completed and the flush was clean)."""
    console = console or Console()
    try:
        telemetry, destination = _configure(out)
    except ConfigError as exc:
        console.print(Text(f"configuration error: {exc}", style="bold red"))
        return 2
    capture = InMemorySpanExporter()
    if telemetry.provider is not None:
        telemetry.provider.add_span_processor(SimpleSpanProcessor(capture))
    with ExitStack() as stack:
        llm, label = _chat_model(stack)
        console.print(Text.assemble(("otel-basic demo --agent: ", "bold"), "a FunctionAgent with two tools"))
        console.print(Text.assemble(("LLM: ", "bold"), label))
        console.print(Text.assemble(("spans go to: ", "bold"), destination))
        failures = asyncio.run(_run(llm, list(questions or QUESTIONS), capture, console))
    report = otel_basic.flush()
    console.print(Text.assemble(("flush ", "bold"), report.summary()))
    otel_basic.shutdown()
    return 1 if failures or not report else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("questions", nargs="*", help="questions for the agent (default: two samples)")
    parser.add_argument("--out", type=Path, default=None, help="spans file when nothing is configured")
    args = parser.parse_args(argv)
    try:
        import llama_index.llms.openai_like  # noqa: F401  (the [openai] extra)
    except ImportError:
        print("the agent demo needs the openai extra: pip install 'otel-basic[openai]'", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_agent_demo(questions=args.questions or None, out=args.out))


if __name__ == "__main__":
    main()
