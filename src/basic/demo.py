"""``python -m basic.demo`` (``scripts/demo.sh``): the newcomer's first command.

Runs the email workflow on the bundled sample emails and shows, for each run, the result and the
trace it produced, then where the spans went. It works offline with nothing configured: the spans
go to an OTLP JSON lines file and the trees are drawn from that file read back, so what you see is
what was exported. With ``LANGFUSE_*`` (or an OTLP endpoint) set, the spans go there instead and
the trees come from an in-memory copy taken on the same provider.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

import otel_basic
from otel_basic.flush import FlushReport
from otel_basic.otlp_decode import OTLPDecodeError, ReceivedSpan, decode_otlp_json_lines
from otel_basic.pipeline import build_prepare
from otel_basic.settings import ConfigError, Settings, basic_auth, load_settings
from otel_basic.testing.langfuse_view import TraceView, langfuse_view, scores_from_span_events
from otel_basic.trace_tree import format_duration, from_readable, group_traces, render_trace, trace_stats

DEFAULT_OUT = Path("otel-basic-traces.jsonl")
_EXCERPT = 160


@dataclass
class RunOutcome:
    """One sample email's run: its result (or error) and the trace ids it produced."""

    index: int
    email: dict[str, Any]
    result: Any | None = None
    error: str | None = None
    trace_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0


# --- result rendering --------------------------------------------------------------------------


def _excerpt(text: str, limit: int = _EXCERPT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _tool_summary(output: dict[str, Any] | None) -> str:
    """A few words about a tool's output (the full output is on the TOOL span)."""
    if not output:
        return ""
    if isinstance(output.get("matches"), list):
        matches = output["matches"]
        ids = ", ".join(str(m.get("id", "?")) for m in matches[:3] if isinstance(m, dict))
        return f"{len(matches)} FAQ match{'es' if len(matches) != 1 else ''}" + (f": {ids}" if ids else "")
    if output.get("flagged"):
        return "flagged as spam" + (
            f" ({_excerpt(str(output['reason']), 50)})" if output.get("reason") else ""
        )
    if "ticket_id" in output:
        return f"ticket {output['ticket_id']} ({output.get('priority', '?')} priority)"
    if "draft" in output:
        return f"draft of {len(str(output['draft']))} characters"
    if isinstance(output.get("slots"), list):
        return f"{len(output['slots'])} slots proposed"
    return _excerpt(json.dumps(output, default=str), 70)


def render_result(result: Any) -> Table:
    """The EmailResult as a two-column table."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("category", Text.assemble((result.category, "bold"), f"  (priority {result.priority})"))
    plan = " → ".join(step.tool for step in result.plan) or "(empty)"
    table.add_row("plan", Text(plan))
    if result.triage_issues:
        table.add_row("triage fixes", Text(_excerpt("; ".join(result.triage_issues)), style="yellow"))
    tools = Text()
    for i, tool in enumerate(result.tool_results):
        if i:
            tools.append("\n")
        mark, style = ("✓", "green") if tool.ok else ("✗", "red")
        tools.append(f"{mark} {tool.tool}", style=style)
        detail = _tool_summary(tool.output) if tool.ok else (tool.error or "failed")
        if detail:
            tools.append(f"  {detail}", style="dim" if tool.ok else "red")
    table.add_row("tools", tools if result.tool_results else Text("(none)", style="dim"))
    draft = result.response_draft
    table.add_row("draft reply", Text(f"“{_excerpt(draft)}”") if draft else Text("(no reply)", style="dim"))
    v = result.verification
    if v.skipped and v.ok:
        verdict = Text("skipped (nothing to verify)", style="dim")
    elif v.ok:
        verdict = Text("✓ passed" + (" after one revision" if v.revised else ""), style="green")
    else:
        verdict = Text("✗ " + _excerpt("; ".join(v.issues) or "failed", 120), style="red")
    table.add_row("verification", verdict)
    d = result.delivery
    if d is None or d.status == "skipped":
        delivery = Text("skipped (no callback)", style="dim")
    elif d.ok:
        delivery = Text(f"✓ delivered to the {d.target} callback in {d.attempts} attempt(s)", style="green")
    else:
        delivery = Text(f"✗ {d.error or 'failed'}", style="red")
    table.add_row("delivery", delivery)
    return table


# --- what Langfuse will show ------------------------------------------------------------------


def _value(value: Any, limit: int = 100) -> Text:
    if value is None or value == "" or value == {}:
        return Text("(none)", style="dim")
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return Text(_excerpt(text, limit))


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def render_langfuse(trace: TraceView) -> Table:
    """One trace as a Langfuse user will see it: the fields of the trace list and trace page.

    Built by :func:`otel_basic.testing.langfuse_view.langfuse_view` from the spans as exported
    (masked), applying Langfuse's ingestion rules; scores are the run's ``score_current_trace``
    calls (from their span events, so they show on every route).
    """
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold magenta", no_wrap=True)
    table.add_column()
    title = Text.assemble(("trace ", "dim"), (str(trace.name), "bold"), (f"  (environment {trace.environment})", "dim"))
    table.add_row("Langfuse", title)
    table.add_row("user", _value(trace.user_id))
    table.add_row("session", _value(trace.session_id))
    if trace.tags:
        table.add_row("tags", Text(", ".join(trace.tags)))
    table.add_row("input", _value(trace.input))
    table.add_row("output", _value(trace.output))
    generations = Text()
    for i, gen in enumerate(trace.generations):
        if i:
            generations.append("\n")
        usage = gen.usage
        tokens = f"{_number(usage.get('input', 0))} in / {_number(usage.get('output', 0))} out" if usage else "no usage"
        generations.append(f"{gen.name}", style="magenta")
        generations.append(f"  {gen.model or '(no model)'}, {tokens}", style="dim")
    table.add_row("generations", generations if trace.generations else Text("(none)", style="dim"))
    flagged = [o for o in trace.observations if o.level in ("WARNING", "ERROR")]
    if flagged:
        levels = Text()
        for i, obs in enumerate(flagged):
            if i:
                levels.append("\n")
            levels.append(obs.level, style="red" if obs.level == "ERROR" else "yellow")
            levels.append(f" {obs.name}: {_excerpt(obs.status_message or '', 90)}")
        table.add_row("levels", levels)
    else:
        table.add_row("levels", Text(f"all {len(trace.observations)} observations DEFAULT", style="green"))
    scores = Text()
    for i, score in enumerate(trace.scores):
        if i:
            scores.append("  ")
        scores.append(f"{score.name} = {_number(score.value)}", style="bold")
        scores.append(f" ({(score.data_type or 'NUMERIC').lower()})", style="dim")
    table.add_row("scores", scores if trace.scores else Text("(none)", style="dim"))
    return table


class _AsExported(SpanExporter):
    """Keeps a copy of each span as the road prepares it for export (Langfuse fields, masking,
    limits: the same stage, not a copy of it), so the demo's Langfuse view on the Langfuse and OTLP
    routes shows what was sent, not raw data."""

    def __init__(self, capture: InMemorySpanExporter, settings: Settings) -> None:
        self._inner = capture
        self._prepare = build_prepare(settings)

    def export(self, spans: Any) -> SpanExportResult:
        return self._inner.export(self._prepare(spans))

    def shutdown(self) -> None:
        self._inner.shutdown()


# --- where the spans went ----------------------------------------------------------------------


def langfuse_project_id(settings: Settings, timeout: float = 3.0) -> str | None:
    """The project id behind the keys (for trace URLs); None if Langfuse cannot tell us."""
    if not (settings.langfuse_public_key and settings.langfuse_secret_key):
        return None
    try:
        response = httpx.get(
            settings.langfuse_base_url + "/api/public/projects",
            headers={"authorization": basic_auth(settings.langfuse_public_key, settings.langfuse_secret_key)},
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )
        data = response.json().get("data") if response.status_code == 200 else None
        if isinstance(data, list) and data and isinstance(data[0], dict) and data[0].get("id"):
            return str(data[0]["id"])
    except (httpx.HTTPError, ValueError, AttributeError):
        pass
    return None


def trace_url(settings: Settings, project_id: str | None, trace_id: str) -> str:
    base = settings.langfuse_base_url
    if project_id:
        return f"{base}/project/{project_id}/traces/{trace_id}"
    return f"{base}/trace/{trace_id}"  # Langfuse redirects this to the project's trace page


def _read_new_spans(path: Path, offset: int) -> tuple[list[ReceivedSpan], str | None]:
    """Spans appended to the file since ``offset`` (the file may hold earlier demos' spans)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", errors="replace")
        return decode_otlp_json_lines(text), None
    except FileNotFoundError:
        return [], f"{path} was not written"
    except (OSError, OTLPDecodeError) as exc:
        return [], f"could not read {path}: {exc}"


# --- the demo ----------------------------------------------------------------------------------


async def _run_all(
    emails: list[dict[str, Any]], capture: InMemorySpanExporter, console: Console, quiet: bool
) -> list[RunOutcome]:
    from basic.email_workflow import email_workflow

    outcomes: list[RunOutcome] = []
    seen: set[str] = set()
    for index, email in enumerate(emails, start=1):
        outcome = RunOutcome(index=index, email=email)
        started = time.monotonic()
        try:
            outcome.result = await email_workflow.run(email_data=email)
        except Exception as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.seconds = time.monotonic() - started
        # The run's trace ids: those of spans that ended during it and were not seen before.
        for span in capture.get_finished_spans():
            trace_id = format(span.context.trace_id, "032x") if span.context else ""
            if trace_id and trace_id not in seen:
                seen.add(trace_id)
                outcome.trace_ids.append(trace_id)
        outcomes.append(outcome)
        if quiet:
            status = outcome.result.category if outcome.result is not None else f"failed: {outcome.error}"
            console.print(f"run {index}/{len(emails)}: {status}", highlight=False)
    return outcomes


def _configure(out: Path | None, console: Console) -> tuple[otel_basic.Telemetry, Path | None]:
    """Langfuse / OTLP / OTEL_BASIC_FILE when configured, otherwise the local spans file."""
    settings = load_settings()
    if settings.route == "file":
        telemetry = otel_basic.configure(file_path=out) if out else otel_basic.configure()
        return telemetry, telemetry.settings.file_path
    if settings.route == "disabled":
        path = (out or DEFAULT_OUT).expanduser().resolve()
        if load_settings(file_path=path).route != "file":  # disabled on purpose (OTEL_SDK_DISABLED...)
            console.print(
                Text(f"Tracing is off ({settings.reason}): running the workflow without traces.", "yellow")
            )
            return otel_basic.configure(), None
        return otel_basic.configure(file_path=path), path
    if out is not None:
        console.print(Text(f"--out ignored: spans go to {settings.reason}", style="yellow"))
    return otel_basic.configure(), None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _llm_name() -> str:
    """Which LLM the runs use: the offline one unless OPENAI_API_KEY is set."""
    from basic.email_workflow import email_workflow
    from basic.llm import OFFLINE_MODEL_NAME

    try:
        name = str(email_workflow.llm.metadata.model_name)
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"
    return f"{name} (offline, deterministic: no network)" if name == OFFLINE_MODEL_NAME else name


def run_demo(
    *, count: int | None = None, out: Path | None = None, quiet: bool = False, console: Console | None = None
) -> int:
    """Run the demo; returns the exit code (0 when every run completed and the flush was clean)."""
    from basic.samples import SAMPLE_EMAILS

    console = console or Console()
    try:
        telemetry, path = _configure(out, console)
    except ConfigError as exc:
        console.print(Text(f"configuration error: {exc}", style="bold red"))
        console.print("Run `otel-basic doctor` for the full checklist.", highlight=False)
        return 2
    if telemetry.error:
        console.print(Text(f"configuration error: {telemetry.error}", style="bold red"))
        return 2
    settings = telemetry.settings
    offset = path.stat().st_size if path is not None and path.exists() else 0

    capture = InMemorySpanExporter()
    if telemetry.provider is not None:
        telemetry.provider.add_span_processor(SimpleSpanProcessor(_AsExported(capture, settings)))

    emails = list(SAMPLE_EMAILS)[: count if count is not None else None]
    if not quiet:
        where = f"{path} (OTLP JSON lines)" if path is not None else settings.reason
        console.print(
            Panel.fit(
                Text.assemble(
                    ("python -m basic.demo", "bold"),
                    f": the email workflow on {_plural(len(emails), 'sample email')}\n",
                    ("LLM: ", "dim"),
                    _llm_name(),
                    ("\nspans go to: ", "dim"),
                    (where, "bold"),
                ),
                border_style="blue",
            )
        )
    outcomes = asyncio.run(_run_all(emails, capture, console, quiet))
    report = otel_basic.flush()

    # The spans to draw: read back from the file on the file route, else the in-memory copy.
    problem = None
    if path is not None:
        spans, problem = _read_new_spans(path, offset)
    else:
        spans = from_readable(capture.get_finished_spans())
    traces = group_traces(spans)
    shown = langfuse_view(spans, scores=scores_from_span_events(spans))
    project_id = langfuse_project_id(settings) if settings.route == "langfuse" and not quiet else None

    for outcome in outcomes:
        if quiet:
            continue
        subject = str(outcome.email.get("subject") or "(no subject)")
        console.rule(Text(f"Run {outcome.index}/{len(outcomes)}: {subject}", style="bold"), align="left")
        if outcome.result is not None:
            console.print(render_result(outcome.result))
        else:
            console.print(Text(f"✗ the run failed: {outcome.error}", style="bold red"))
        for trace_id in outcome.trace_ids:
            trace_spans = traces.get(trace_id)
            if not trace_spans:
                console.print(Text(f"trace {trace_id}: no spans found in {path or 'the capture'}", "yellow"))
                continue
            stats = trace_stats(trace_spans)
            title = Text.assemble(
                ("trace ", "dim"),
                (trace_id, "bold"),
                (f"  {stats.spans} spans, {format_duration(stats.duration_ms)}", "dim"),
                (f", {stats.total_tokens} tokens" if stats.total_tokens else "", "dim"),
                (f", {stats.errors} error{'s' if stats.errors != 1 else ''}" if stats.errors else "", "red"),
            )
            console.print(render_trace(trace_spans, title=title))
            if trace_id in shown.traces:
                console.print(render_langfuse(shown.traces[trace_id]))
            if settings.route == "langfuse":
                url = trace_url(settings, project_id, trace_id)
                console.print(Text.assemble(("Langfuse: ", "bold"), url), soft_wrap=True)
        console.print()

    code = _summary(console, telemetry, path, outcomes, spans, report, problem, quiet)
    otel_basic.shutdown(timeout=2.0)
    return code


def _summary(
    console: Console,
    telemetry: otel_basic.Telemetry,
    path: Path | None,
    outcomes: list[RunOutcome],
    spans: list[ReceivedSpan],
    report: FlushReport,
    problem: str | None,
    quiet: bool,
) -> int:
    settings = telemetry.settings
    completed = sum(1 for o in outcomes if o.result is not None)
    trace_ids = [t for o in outcomes for t in o.trace_ids]
    ok = completed == len(outcomes) and bool(report) and problem is None
    counts = f"{_plural(len(spans), 'span')} in {_plural(len(trace_ids), 'trace')}"

    def line(label: str, *parts: str | tuple[str, str]) -> None:
        # soft_wrap: paths and URLs stay on one line (copyable), whatever the terminal width
        console.print(Text.assemble((f"{label:<7}", "bold"), *parts), soft_wrap=True)

    console.rule(Text("summary", style="bold green" if ok else "bold red"), align="left")
    line("runs", (f"{completed}/{len(outcomes)} completed", "" if completed == len(outcomes) else "red"))
    if path is not None:
        line("spans", f"{counts} written to ", (str(path), "bold"), ("  (OTLP JSON lines)", "dim"))
    elif settings.route in ("langfuse", "otlp"):
        line("spans", f"{counts} sent to {settings.reason}")
        if settings.route == "otlp":
            for trace_id in trace_ids:
                line("", f"trace {trace_id}")
    else:
        line("spans", ("none (tracing is off)", "dim"))
    if telemetry.pipeline is not None:
        c = telemetry.pipeline.ledger.totals
        line(
            "export",
            f"{c.delivered}/{c.created} spans delivered in {_plural(c.requests, 'request')}",
            ("  (each step's spans are sent as the step ends)", "dim"),
        )
    line("flush", (report.summary(), "green" if report else "red"))
    if problem:
        line("problem", (problem, "red"))
    if not report:
        line("hint", "run `otel-basic doctor`: it checks the setup step by step and names the fix")
    if ok and path is not None and not quiet:
        console.print(
            Text(
                "Next: set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY (and LANGFUSE_BASE_URL for US or "
                "self-hosted) and run `scripts/demo.sh` again; `otel-basic doctor` checks the setup.",
                style="dim",
            )
        )
    return 0 if ok else 1


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--count", "-n", type=click.IntRange(min=1), default=None, help="How many sample emails (default: all 5)."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Spans file when nothing is configured (default ./otel-basic-traces.jsonl).",
)
@click.option("--quiet", "-q", is_flag=True, help="One line per run and the summary; no trees.")
@click.option("--agent", is_flag=True, help="Run a FunctionAgent with tools on an OpenAI-compatible model instead.")
def main(count: int | None, out: Path | None, quiet: bool, agent: bool) -> None:
    """Run the email workflow on the sample emails and show each result and its trace.

    Offline by default: the spans go to a local OTLP JSON lines file. With LANGFUSE_* or
    OTEL_EXPORTER_OTLP_ENDPOINT set, they go there and the Langfuse trace URLs are printed.
    With --agent: a FunctionAgent on OPENAI_BASE_URL (or a local stand-in server), showing each
    generation's tokens, timing and cost as Langfuse will.
    """
    if agent:
        # Imported on use: the agent needs the optional [openai] extra, the email demo does not.
        from basic.agent_demo import main as agent_main

        agent_main(["--out", str(out)] if out else [])
        return
    sys.exit(run_demo(count=count, out=out, quiet=quiet, console=Console()))


if __name__ == "__main__":
    main()
