"""Per-span cost of masking: typical e-mail workflow spans through a no-op exporter, bare vs masked.

Each e-mail of tests/data/pii_emails.json yields the four spans an OpenInference-instrumented e-mail
workflow produces (workflow run, step, LLM call, tool call) with realistic attributes: JSON ``input.value``
holding the e-mail, chat messages, token counts, model name. Attribute values are built before timing, so
the baseline is the bare SDK cost (start span, set attributes, end, SimpleSpanProcessor -> export): the
smallest denominator, i.e. the least flattering ratio for masking. "memo off" (``Masker(memo_entries=0)``)
masks every string again, even where the four spans of one e-mail repeat it: what the memo saves.

Second table: real OpenInference LLM spans (``OfflineLLM().complete(prompt)`` instrumented by
``otel_basic.instrumentation``, the prompt being each corpus e-mail), so the added cost can be read
against what a span really costs in this project (~0.3-0.7 ms per LLM span, see DESIGN.md).

Third table: one span with one huge, digit-dense attribute (cards, phones, IBANs, addresses), 16 KB vs
10 MB: masking cuts before detecting (``Masker(max_chars=16384)``), so the 10 MB span should cost about
what the 16 KB one does (target: within 2x), not 600x.

Fourth table: 16 KB strings built to make the detectors work hard (a keyword after another in one run
of a value's characters, quotes, escapes), against 16 KB of prose.

Masking runs as the export path runs it: ``Masker.mask_span`` on each span (``MaskSpanExporter`` below).

    .venv/bin/python bench/masking.py            # ~20-30 s
    .venv/bin/python bench/masking.py --quick    # smoke run, ~3 s
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from otel_basic.limits import Limiter  # noqa: E402
from otel_basic.masking import Masker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import NoOpExporter  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "pii_emails.json"

SYSTEM_PROMPT = (
    "You are an e-mail triage assistant. Classify the e-mail into one of: billing, support, sales, spam, "
    "other. Extract the requested action, the urgency (low/normal/high) and any deadline. Answer with a JSON "
    "object with the keys category, action, urgency, deadline, reply_draft. Never invent facts that are not "
    "in the e-mail. Keep the reply draft under 120 words and in the language of the e-mail."
)


Attrs = dict[str, Any]


def email_spans(email: dict[str, Any]) -> list[tuple[str, Attrs]]:
    """The (name, attributes) of the spans one e-mail run produces."""
    address = email["sender"].rsplit("<", 1)[-1].rstrip(">")
    msg = {k: email[k] for k in ("sender", "subject", "body", "thread_id")}
    user_text = f"From: {email['sender']}\nSubject: {email['subject']}\n\n{email['body']}"
    triage = {
        "category": "billing",
        "action": f"Reply to {address} and confirm the change",
        "urgency": "normal",
        "deadline": None,
        "reply_draft": f"Dear customer,\n\nthank you for your message about '{email['subject']}'. "
        "We have updated our records and will confirm by e-mail.\n\nKind regards",
    }
    common = {"session.id": email["thread_id"], "user.id": address, "metadata": json.dumps({"channel": "imap"})}
    return [
        (
            "EmailWorkflow.run",
            {
                **common,
                "openinference.span.kind": "CHAIN",
                "input.value": json.dumps({"email": msg}),
                "input.mime_type": "application/json",
                "output.value": json.dumps({"result": triage, "sent": True}),
                "output.mime_type": "application/json",
            },
        ),
        (
            "EmailWorkflow.triage_email",
            {
                **common,
                "openinference.span.kind": "CHAIN",
                "input.value": json.dumps({"ev": {"email": msg}}, ensure_ascii=False),
                "input.mime_type": "application/json",
                "output.value": json.dumps({"triage": triage}),
                "output.mime_type": "application/json",
            },
        ),
        (
            "OpenAI.achat",
            {
                **common,
                "openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o-mini",
                "llm.provider": "openai",
                "llm.system": "openai",
                "llm.invocation_parameters": json.dumps({"temperature": 0.1, "max_tokens": 512}),
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": SYSTEM_PROMPT,
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.content": user_text,
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": json.dumps(triage, ensure_ascii=False),
                "llm.token_count.prompt": 412,
                "llm.token_count.completion": 96,
                "llm.token_count.total": 508,
                "input.value": json.dumps(
                    {"messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_text}]}
                ),
                "input.mime_type": "application/json",
                "output.value": triage["reply_draft"],
            },
        ),
        (
            "send_results",
            {
                **common,
                "openinference.span.kind": "TOOL",
                "tool.name": "send_email",
                "tool.parameters": json.dumps({"to": "string", "subject": "string", "body": "string"}),
                "input.value": json.dumps(
                    {"to": address, "subject": "Re: " + email["subject"], "body": triage["reply_draft"]}
                ),
                "input.mime_type": "application/json",
                "output.value": "queued",
            },
        ),
    ]


def workload_for(emails: list[dict[str, Any]], tag: str) -> list[tuple[str, Attrs]]:
    """Spans for every e-mail, each body made unique by ``tag`` so no masking cache helps across passes."""
    return [
        span
        for i, email in enumerate(emails)
        for span in email_spans({**email, "body": f"{email['body']}\n[ref {tag}-{i}]"})
    ]


def run(exporter: SpanExporter, passes: list[list[tuple[str, Attrs]]]) -> float:
    """Seconds per span to create, end and export every span of ``passes``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    gc.collect()
    start = time.perf_counter()
    for workload in passes:
        for name, attrs in workload:
            span = tracer.start_span(name, attributes=attrs)
            span.end()
    elapsed = time.perf_counter() - start
    provider.shutdown()
    return elapsed / sum(len(w) for w in passes)


class MaskSpanExporter(SpanExporter):
    """``Masker.mask_span`` on every span, then ``inner``: what the export path does."""

    def __init__(self, inner: SpanExporter, masker: Masker) -> None:
        self.inner = inner
        self.masker = masker

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self.masker.mask_span(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def MaskingExporter(inner: SpanExporter, masker: Masker) -> SpanExporter:
    return MaskSpanExporter(inner, masker)


class LimitingExporter(SpanExporter):
    """``Limiter.limit_span`` on every span, then ``inner``: the road's size-limit step."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.limiter = Limiter()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self.limiter.limit_span(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()


def huge_attribute(repeats: int) -> None:
    """A 16 KB and a 10 MB digit-dense attribute: the cost must follow the limit, not the input."""
    chunk = (
        "Card 4111 1111 1111 1111, call +44 20 7946 0958 or (415) 555-0132, IBAN DE89 3704 0044 0532 0130 00, "
        "write to ada.lovelace@example.org; order 2024-06-03 #12345678. "
    )
    sizes = {"16 KB attribute": 16 * 1024, "10 MB attribute": 10 * 1024 * 1024}
    texts = {name: (chunk * (size // len(chunk) + 1))[:size] for name, size in sizes.items()}
    samples: dict[str, list[float]] = {name: [] for name in texts}
    for rep in range(repeats):
        for name, text in texts.items():
            exporter = MaskSpanExporter(NoOpExporter(), Masker(max_chars=16384))  # fresh: nothing cached
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            tracer = provider.get_tracer("bench")
            value = f"[{rep}] {text}"
            gc.collect()
            start = time.perf_counter()
            tracer.start_span("big", attributes={"input.value": value}).end()
            samples[name].append(time.perf_counter() - start)
            provider.shutdown()
    print(f"\nOne span, one digit-dense attribute, masked with max_chars=16384 ({repeats} repeats)")
    _print_table(samples)


# Strings built to make a detector work hard: one keyword after another in one run of its value's
# characters (each used to read the run to its end: 16 KB of ``token=`` took 0.6 s), quotes, escapes.
HOSTILE_UNITS = {
    "prose (baseline)": "the quick brown fox jumps over the lazy dog. ",
    "token=": "token=",
    "?token=": "?token=",
    "key=": "key=",
    "password=": "password=",
    "token: ": "token: ",
    "'password': '": "'password': '",
    '{"token": "a", ': '{"token": "a", ',
    "api_key='x', ": "api_key='x', ",
    '\\"password\\": \\"': '\\"password\\": \\"',
    "a@": "a@",
}


def hostile_strings(repeats: int) -> None:
    """16 KB (the attribute limit) of each hostile unit repeated, against prose: per string, fresh masker."""
    size = 16 * 1024
    samples: dict[str, list[float]] = {name: [] for name in HOSTILE_UNITS}
    for rep in range(repeats):
        for name, unit in HOSTILE_UNITS.items():
            text = f"[{rep}]" + (unit * (size // len(unit) + 1))[: size - 8]
            masker = Masker(max_chars=16384)
            start = time.perf_counter()
            masker.mask_value("input.value", text)
            samples[name].append(time.perf_counter() - start)
    print(f"\nHostile 16 KB strings, mask_value (fresh masker each, {repeats} repeats)")
    _print_table(samples)


class SwitchExporter(SpanExporter):
    """Lets one instrumented provider export through different exporters in turn."""

    def __init__(self) -> None:
        self.target: SpanExporter = NoOpExporter()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.target.export(spans)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def instrumented(emails: list[dict[str, Any]], repeats: int, calls: int) -> None:
    """Per LLM call (one OpenInference LLM span each): no-op exporter vs mask_span."""
    try:
        from basic.llm import OfflineLLM, format_email, triage_prompt
        from otel_basic.instrumentation import instrument, uninstrument
    except Exception as exc:  # the application modules are optional for this bench
        print(f"\n(instrumented LLM spans skipped: {type(exc).__name__}: {exc})")
        return
    switch = SwitchExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(switch))
    instrument(provider)
    try:
        llm = OfflineLLM()
        prompts = [
            triage_prompt(format_email(e["sender"], e["subject"], e["body"] + f"\n[ref {i}]"))
            for i, e in enumerate(emails)
        ]
        configs: dict[str, Callable[[], SpanExporter]] = {
            "no-op exporter (baseline)": NoOpExporter,
            "mask_span level=detectors": lambda: MaskingExporter(NoOpExporter(), Masker("detectors")),
            "mask_span level=hide": lambda: MaskingExporter(NoOpExporter(), Masker("hide")),
        }
        samples: dict[str, list[float]] = {name: [] for name in configs}
        for prompt in prompts[:5]:
            llm.complete(prompt)  # warm-up
        names = list(configs)
        for rep in range(repeats):
            # Small blocks, configurations interleaved and rotated, so drift and noise hit all alike.
            exporters = {name: make() for name, make in configs.items()}  # fresh maskers: no cache carried over
            totals = dict.fromkeys(names, 0.0)
            batch = [f"{p}\n[rep {rep}]" for p in prompts]
            block = max(1, calls // 15)
            done = 0
            while done < calls:
                shift = (done // block) % len(names)
                for name in names[shift:] + names[:shift]:
                    switch.target = exporters[name]
                    start = time.perf_counter()
                    for i in range(done, done + block):
                        llm.complete(batch[i % len(batch)] + f" [{name[:1]}]")
                    totals[name] += time.perf_counter() - start
                done += block
            for name in names:
                samples[name].append(totals[name] / done)
    finally:
        uninstrument()
        provider.shutdown()
    print(f"\nReal OpenInference LLM spans: OfflineLLM().complete(e-mail triage prompt), {calls} calls x {repeats}")
    _print_table(samples)


def _print_table(samples: dict[str, list[float]]) -> None:
    base = statistics.median(next(iter(samples.values())))
    print(f"{'configuration':<34} {'median us/span':>15} {'added us':>9} {'ratio':>6}")
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"{name:<34} {med * 1e6:>15.1f} {(med - base) * 1e6:>9.1f} {med / base:>6.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run (a few repeats)")
    args = parser.parse_args(argv)
    repeats, rounds = (3, 2) if args.quick else (15, 10)

    emails = json.loads(CORPUS.read_text())["emails"]
    workload = workload_for(emails, "w")
    avg_chars = statistics.mean(sum(len(v) for v in a.values() if isinstance(v, str)) for _, a in workload)

    configs: dict[str, Callable[[], SpanExporter]] = {
        "no-op exporter (baseline)": NoOpExporter,
        "mask_span level=detectors": lambda: MaskingExporter(NoOpExporter(), Masker("detectors")),
        "mask_span detectors, memo off": lambda: MaskingExporter(NoOpExporter(), Masker(memo_entries=0)),
        "mask_span level=hide": lambda: MaskingExporter(NoOpExporter(), Masker("hide")),
        "LimitingExporter (16 KiB)": lambda: LimitingExporter(NoOpExporter()),
        "mask_span(detectors) + Limiting": lambda: MaskingExporter(LimitingExporter(NoOpExporter()), Masker()),
    }
    samples: dict[str, list[float]] = {name: [] for name in configs}
    run(NoOpExporter(), [workload])  # warm-up (imports, regex caches)
    for rep in range(repeats):  # interleaved, so drift hits every config alike
        passes = [workload_for(emails, f"{rep}.{r}") for r in range(rounds)]
        for name, make in configs.items():
            samples[name].append(run(make(), passes))

    print(
        f"Bare SDK spans: {len(workload)} spans/pass ({len(emails)} e-mails x 4 spans), {avg_chars:.0f} string "
        f"chars/span, {rounds} passes x {repeats} repeats, Python {sys.version.split()[0]}"
    )
    _print_table(samples)
    instrumented(emails, 3 if args.quick else 7, 45 if args.quick else 300)
    huge_attribute(2 if args.quick else 7)
    hostile_strings(2 if args.quick else 7)


if __name__ == "__main__":
    main()
