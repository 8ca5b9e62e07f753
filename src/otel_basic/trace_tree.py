"""Render traces as rich trees, for ``otel-basic demo`` and for people reading a spans file.

Input is always :class:`~otel_basic.otlp_decode.ReceivedSpan` (what a backend stores), whether the
spans were read back from an OTLP JSON lines file or captured in memory: so the tree shows what
was actually exported, not what the code meant to create. Only names, kinds, durations, token
counts and status are shown; never attribute values (they may hold personal data).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan
from rich.text import Text
from rich.tree import Tree

from otel_basic.otlp_decode import ReceivedSpan, spans_from_request
from otel_basic.otlp_encode import encode_message

SPAN_KIND_ATTR = "openinference.span.kind"
_KIND_STYLE = {
    "CHAIN": "cyan",
    "LLM": "magenta",
    "TOOL": "green",
    "AGENT": "blue",
    "RETRIEVER": "yellow",
    "EMBEDDING": "yellow",
    "RERANKER": "yellow",
    "GUARDRAIL": "red",
    "EVALUATOR": "blue",
}


def from_readable(spans: Sequence[ReadableSpan]) -> list[ReceivedSpan]:
    """SDK spans -> ReceivedSpan, through the same OTLP encoding the exporters use."""
    if not spans:
        return []
    return spans_from_request(encode_message(spans))


def group_traces(spans: Iterable[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    """Spans by trace id, each trace's spans in start order, traces in order of their first span."""
    by_trace: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    ordered = sorted(by_trace.items(), key=lambda item: min(s.start_time_unix_nano for s in item[1]))
    return {tid: sorted(items, key=lambda s: s.start_time_unix_nano) for tid, items in ordered}


@dataclass(frozen=True)
class TraceStats:
    """One line's worth of facts about a trace."""

    spans: int
    errors: int
    total_tokens: int
    duration_ms: float
    root_name: str


def trace_stats(spans: Sequence[ReceivedSpan]) -> TraceStats:
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_span_id is None or s.parent_span_id not in ids]
    start = min((s.start_time_unix_nano for s in spans), default=0)
    end = max((s.end_time_unix_nano for s in spans), default=0)
    tokens = sum(t for s in spans if (t := _tokens(s)[2]) is not None)
    return TraceStats(
        spans=len(spans),
        errors=sum(1 for s in spans if s.status_code == "ERROR"),
        total_tokens=tokens,
        duration_ms=max(0, end - start) / 1e6,
        root_name=roots[0].name if roots else "",
    )


def format_duration(ms: float) -> str:
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    if ms >= 10:
        return f"{ms:.0f} ms"
    return f"{ms:.1f} ms"


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _tokens(span: ReceivedSpan) -> tuple[int | None, int | None, int | None]:
    attrs = span.attributes
    prompt = _int(attrs.get("llm.token_count.prompt"))
    completion = _int(attrs.get("llm.token_count.completion"))
    total = _int(attrs.get("llm.token_count.total"))
    if total is None and (prompt is not None or completion is not None):
        total = (prompt or 0) + (completion or 0)
    return prompt, completion, total


def span_label(span: ReceivedSpan) -> Text:
    """``name  KIND  12 ms  tokens 143+47=190  ERROR: why`` (plain text, markup-safe)."""
    kind = span.attributes.get(SPAN_KIND_ATTR)
    label = Text()
    error = span.status_code == "ERROR"
    label.append(span.name or "(unnamed)", style="bold red" if error else "bold")
    if isinstance(kind, str) and kind:
        label.append(f"  {kind}", style=_KIND_STYLE.get(kind, "white"))
    else:
        label.append(f"  {span.kind.lower()}", style="dim")
    label.append(f"  {format_duration(span.duration_ms)}", style="dim")
    prompt, completion, total = _tokens(span)
    if total is not None:
        label.append(f"  tokens {prompt or 0}+{completion or 0}={total}", style="yellow")
    if error:
        message = span.status_message.strip().splitlines()[0][:120] if span.status_message.strip() else ""
        label.append("  ✗ ERROR" + (f": {message}" if message else ""), style="bold red")
    return label


def render_trace(spans: Sequence[ReceivedSpan], *, title: str | Text | None = None) -> Tree:
    """One trace as a Tree; spans whose parent is not among ``spans`` hang off the top."""
    ordered = sorted(spans, key=lambda s: s.start_time_unix_nano)
    ids = {s.span_id for s in ordered}
    children: dict[str | None, list[ReceivedSpan]] = {}
    for span in ordered:
        parent = span.parent_span_id if span.parent_span_id in ids else None
        children.setdefault(parent, []).append(span)
    if title is None:
        trace_id = ordered[0].trace_id if ordered else "?"
        title = Text.assemble(("trace ", "dim"), (trace_id, "bold"))
    tree = Tree(title, guide_style="dim")

    def add(node: Tree, parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            branch = node.add(span_label(span))
            if depth < 64:  # a malformed file must not recurse forever
                add(branch, span.span_id, depth + 1)

    add(tree, None, 0)
    return tree
