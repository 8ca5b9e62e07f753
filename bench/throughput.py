"""Span throughput: create + export 20k spans in a tight loop to the test receiver, then flush.

Why: the stock BatchSpanProcessor with its default queue (2048) silently drops about half of a 20k
burst (one warning per 20 s). otel-basic uses a large queue, counts every outcome and spools instead
of dropping; this checks that it does so at (nearly) the stock pipeline's speed and delivers all.

Variants (fresh child process each, interleaved round-robin across rounds):

* ``raw_default`` SDK TracerProvider + BatchSpanProcessor (defaults) + OTLPSpanExporter(http, gzip)
* ``raw_queue``   the same with ``max_queue_size=65536`` (the queue otel-basic uses), so it drops nothing
* ``raw_queue_heap`` ``raw_queue`` in a process where ``otel_basic.configure()`` ran too (its pipeline
                  idle): the same libraries and objects in memory as ``ours``. The fair baseline: the
                  garbage collector's full passes cost in proportion to everything alive, and ``ours``
                  has LlamaIndex, OpenInference and the Langfuse client loaded (~240k tracked objects
                  against ~160k); with ``gc.disable()`` in both, ``ours`` keeps up with ``raw_queue``
* ``ours``        ``otel_basic.configure()`` defaults (masking on) -> ``otel_basic.flush()``
* ``ours_nomask`` ``otel_basic.configure(mask="off")``: what the masking costs
* ``ours_no_lf_proc`` diagnostic: ours with the Langfuse client's span processor (which exports
                  nothing) taken off the provider
* ``ours_lf_eager`` diagnostic: ours with that processor's gate opened (``otel_basic.langfuse.ungate``):
                  on_start/on_end for every span, as before the gate (issue 14)

spans/s = spans delivered (counted by the receiver) / (first span start -> flush returned).
Target: ours >= 0.9x raw OTel with zero drops, against ``raw_queue_heap`` (same heap) and ``raw_queue``;
``raw_default`` is shown too.

    .venv/bin/python bench/throughput.py            # ~1 min
    .venv/bin/python bench/throughput.py --quick    # smoke run
    .venv/bin/python bench/throughput.py --no-gc    # diagnostic: the same without the garbage collector
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    emit,
    fmt_x,
    median,
    print_header,
    print_table,
    progress,
    ratio,
    receiver_without_nagle,
    rotation,
    run_child,
    spread,
    verdict,
)

VARIANTS = ("raw_default", "raw_queue", "raw_queue_heap", "ours", "ours_nomask", "ours_no_lf_proc", "ours_lf_eager")
LABELS = {
    "raw_default": "raw OTel BSP, defaults",
    "raw_queue": "raw OTel BSP, queue 65536",
    "raw_queue_heap": "raw OTel BSP, queue 65536, same heap as ours",
    "ours": "ours (configure() defaults)",
    "ours_nomask": "ours, mask=off",
    "ours_no_lf_proc": "ours, LangfuseSpanProcessor detached (diagnostic)",
    "ours_lf_eager": "ours, LangfuseSpanProcessor ungated (diagnostic)",
}
TARGET = 0.9
ATTRIBUTES = {
    "app.step": "triage_email",
    "app.attempt": 1,
    "app.score": 0.75,
    "app.cached": False,
    "app.note": "customer asked about the invoice for order 1234 and the delivery date",
}


def child(variant: str, spans: int, base_url: str, no_gc: bool = False) -> dict[str, Any]:
    import gc
    import os

    if variant.startswith("raw"):
        if variant == "raw_queue_heap":  # the same libraries and objects alive as in "ours"
            import otel_basic

            otel_basic.configure(langfuse_base_url=base_url)
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from otel_basic.settings import basic_auth

        auth = basic_auth(os.environ["LANGFUSE_PUBLIC_KEY"], os.environ["LANGFUSE_SECRET_KEY"])
        exporter = OTLPSpanExporter(
            endpoint=base_url + "/api/public/otel/v1/traces",
            headers={"Authorization": auth, "x-langfuse-ingestion-version": "4"},
            compression=Compression.Gzip,
        )
        queue = {"max_queue_size": 65536} if variant in ("raw_queue", "raw_queue_heap") else {}
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter, **queue))  # type: ignore[arg-type]
        tracer = provider.get_tracer("bench.throughput")

        def flush() -> dict[str, Any]:
            return {"flush_ok": provider.force_flush(120_000)}

    else:
        import otel_basic

        overrides = {"mask": "off"} if variant == "ours_nomask" else {}
        telemetry = otel_basic.configure(langfuse_base_url=base_url, **overrides)
        if not telemetry.enabled or telemetry.provider is None:
            raise RuntimeError(telemetry.settings.reason)
        if variant == "ours_lf_eager":
            from otel_basic.langfuse import ungate

            ungate(telemetry.provider)
        if variant == "ours_no_lf_proc":  # private SDK attribute: diagnostic only
            multi = telemetry.provider._active_span_processor
            multi._span_processors = tuple(
                p for p in multi._span_processors if type(p).__name__ not in ("LangfuseSpanProcessor", "LangfuseGate")
            )
        tracer = otel_basic.get_tracer("bench.throughput")

        def flush() -> dict[str, Any]:
            report = otel_basic.flush(timeout=120)
            return {
                "flush_ok": bool(report),
                "exported": report.exported,
                "dropped": report.dropped,
                "failed": report.failed,
                "spooled": report.spooled,
            }

    for _ in range(200):  # warm-up: connection, caches (not counted by the parent: sent before "start")
        tracer.start_span("warmup", attributes=ATTRIBUTES).end()
    flush()
    print("START", flush=True)
    if no_gc:  # diagnostic: what the pipelines cost without the collector's passes over the heap
        gc.disable()
    start = time.perf_counter()
    for i in range(spans):
        tracer.start_span("bench-span", attributes={**ATTRIBUTES, "app.index": i}).end()
    created = time.perf_counter() - start
    outcome = flush()
    total = time.perf_counter() - start
    return {"variant": variant, "created_s": created, "total_s": total, **outcome}


class Counter:
    """Receiver listener: how many benchmark spans arrived (warm-up spans are named differently)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def __call__(self, spans: list[Any]) -> None:
        n = sum(1 for s in spans if s.name == "bench-span")
        with self.lock:
            self.count += n

    def take(self) -> int:
        with self.lock:
            n, self.count = self.count, 0
        return n


def main_parent(args: argparse.Namespace) -> int:
    from otel_basic.testing import LangfuseReceiver

    rounds = 1 if args.quick else args.rounds
    spans = 500 if args.quick else args.spans
    patched = receiver_without_nagle()
    print_header(
        f"Throughput: {spans} spans created in a tight loop, exported to the test receiver, flushed",
        f"{rounds} round(s); variants interleaved round-robin, each in a fresh process; 5-6 attributes "
        "per span; OTLP/HTTP protobuf + gzip to the Langfuse route (receiver decodes every span)."
        + (" Test receiver patched to TCP_NODELAY." if patched else "")
        + (" Diagnostic: the garbage collector disabled in every child (--no-gc)." if args.no_gc else ""),
    )
    receiver = LangfuseReceiver().start()
    counter = Counter()
    receiver.add_span_listener(counter)
    env = {k: v for k, v in receiver.env().items() if k != "LANGFUSE_BASE_URL"}
    rate: dict[str, list[float]] = defaultdict(list)
    create_rate: dict[str, list[float]] = defaultdict(list)
    delivered: dict[str, list[int]] = defaultdict(list)
    reported_drops: dict[str, list[int]] = defaultdict(list)
    started = time.monotonic()
    try:
        for r in range(rounds):
            for variant in rotation(VARIANTS, r):
                result = run_child(
                    Path(__file__),
                    ["--variant", variant, "--json", "--spans", str(spans), "--url", receiver.base_url]
                    + (["--no-gc"] if args.no_gc else []),
                    env=env,
                )
                got = counter.take()
                receiver.clear()
                delivered[variant].append(got)
                rate[variant].append(got / result["total_s"])
                create_rate[variant].append(spans / result["created_s"])
                reported_drops[variant].append(int(result.get("dropped", -1)))
            progress(f"  round {r + 1}/{rounds} done ({time.monotonic() - started:.0f} s)")
    finally:
        receiver.stop()
    print()

    def k(x: float) -> str:
        return f"{x / 1000:.1f}k"

    base = median(rate["raw_queue"])
    rows = []
    for v in VARIANTS:
        drops = [spans - d for d in delivered[v]]
        rows.append(
            [
                LABELS[v],
                f"{k(median(rate[v]))}/s",
                spread(rate[v], lambda x: f"{k(x)}/s"),
                f"{k(median(create_rate[v]))}/s",
                f"{min(delivered[v])}–{max(delivered[v])} / {spans}",
                f"{min(drops)}–{max(drops)}",
                fmt_x(ratio(median(rate[v]), base)),
            ]
        )
    print_table(
        [
            "variant",
            "delivered spans/s (median)",
            "rounds range",
            "create-only spans/s",
            "delivered",
            "lost",
            "vs raw (queue 65536)",
        ],
        rows,
    )
    trows = []
    baselines = (
        ("raw_queue_heap", "raw OTel (queue 65536, same heap)", True),
        ("raw_queue", "raw OTel (queue 65536)", True),
        ("raw_default", "raw OTel (defaults: delivered/s)", False),
    )
    for v in ("ours", "ours_nomask", "ours_no_lf_proc", "ours_lf_eager"):
        lost = max(spans - d for d in delivered[v])
        for b, label, zero_loss in baselines if v in ("ours", "ours_nomask") else baselines[:1]:
            r = ratio(median(rate[v]), median(rate[b]))
            per_round = [ratio(x, y) for x, y in zip(rate[v], rate[b], strict=True)]
            ok = verdict(r, TARGET, higher_is_better=True)
            trows.append(
                [
                    f"{LABELS[v]} vs {label}",
                    f"≥ {TARGET}×" + (" and 0 lost" if zero_loss else ""),
                    fmt_x(r),
                    spread(per_round, fmt_x),
                    f"{lost} lost (reported dropped: {max(reported_drops[v])})" if zero_loss else "",
                    ok if lost == 0 or not zero_loss else f"missed: {lost} spans lost",
                ]
            )
    print("### Target: throughput ≥ 0.9× raw OTel with zero drops")
    print()
    print_table(["comparison", "bound", "ratio", "rounds range", "loss", "verdict"], trows)
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="500 spans, one round (smoke test)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument(
        "--no-gc", action="store_true", help="diagnostic: gc.disable() in every child while it creates and flushes"
    )
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        emit(child(args.variant, args.spans, args.url, args.no_gc))
        return 0
    return main_parent(args)


if __name__ == "__main__":
    raise SystemExit(main())
