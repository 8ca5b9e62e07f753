"""Memory over many workflow runs in one process: does telemetry leak?

Why: a long-lived server runs workflows forever; anything telemetry keeps per span or per run
(open-span maps, kick sets, context attributes, queued spans, HTTP buffers) shows up as RSS that
grows with the run count. This runs 10k workflow runs (19 of 20 are the hello workflow, every 20th
the email workflow with the offline LLM) with telemetry on, exporting to the test receiver (hosted
by the parent, so its memory is not counted), and the same with telemetry off as a control.

RSS is VmRSS from /proc/self/status after ``gc.collect()``, peak is VmHWM. Growth is measured from
the end of a warm-up (500 runs) to the end, after a final flush. Target: growth <= 5 MB.

    .venv/bin/python bench/memory.py            # ~1.5 min
    .venv/bin/python bench/memory.py --quick    # 200 runs, smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    emit,
    peak_rss_bytes,
    print_header,
    print_table,
    progress,
    receiver_without_nagle,
    rss_bytes,
    run_child,
    verdict,
)

VARIANTS = ("on", "off")
LABELS = {"on": "telemetry on (ours)", "off": "telemetry off (control)"}
TARGET_MB = 5.0
MB = 1024 * 1024


def _rss() -> int:
    gc.collect()
    return rss_bytes()


async def _runs(count: int, start_index: int) -> None:
    from basic.email_workflow import EmailWorkflow
    from basic.llm import OfflineLLM
    from basic.samples import SAMPLE_EMAILS
    from basic.workflow import HelloWorkflow

    hello = _cache.setdefault("hello", HelloWorkflow(timeout=60))
    email = _cache.setdefault("email", EmailWorkflow(llm=OfflineLLM()))
    for i in range(start_index, start_index + count):
        if i % 20 == 19:
            await email.run(email_data=SAMPLE_EMAILS[i % len(SAMPLE_EMAILS)], callback=None)
        else:
            await hello.run(name=f"user-{i}")


_cache: dict[str, Any] = {}


async def child(variant: str, runs: int, warmup: int, base_url: str) -> dict[str, Any]:
    import otel_basic

    if variant == "on":
        telemetry = otel_basic.configure(langfuse_base_url=base_url)
        if not telemetry.enabled:
            raise RuntimeError(telemetry.settings.reason)
    import basic.email_workflow  # noqa: F401  (imports before the first sample)

    start_rss = _rss()
    await _runs(warmup, 0)
    await otel_basic.aflush(timeout=30)
    warm_rss = _rss()
    samples: list[tuple[int, int]] = [(0, warm_rss)]
    step = max(1, runs // 10)
    done = 0
    elapsed = 0.0  # run time only, not the gc.collect() of each sample
    while done < runs:
        n = min(step, runs - done)
        started = time.perf_counter()
        await _runs(n, warmup + done)
        elapsed += time.perf_counter() - started
        done += n
        samples.append((done, _rss()))
    report = await otel_basic.aflush(timeout=30)
    end_rss = _rss()
    internals: dict[str, int] = {}
    tel = otel_basic.current()
    if tel is not None and tel.processor is not None:
        internals["processor kick set"] = len(getattr(tel.processor, "_kick_on_end", ()))
        internals["processor queued"] = tel.processor.queued()
    return {
        "variant": variant,
        "start": start_rss,
        "warm": warm_rss,
        "end": end_rss,
        "peak": peak_rss_bytes(),
        "samples": samples,
        "elapsed": elapsed,
        "flush_ok": bool(report) if variant == "on" else True,
        "flush": report.summary(),
        "internals": internals,
    }


def _slope_per_1k(samples: list[tuple[int, int]]) -> float:
    """Least-squares MB per 1000 runs: a leak is a slope, noise is not."""
    if len(samples) < 2:
        return 0.0
    xs = [s[0] / 1000.0 for s in samples]
    ys = [s[1] / MB for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def main_parent(args: argparse.Namespace) -> int:
    from otel_basic.testing import LangfuseReceiver

    runs = 200 if args.quick else args.runs
    warmup = 20 if args.quick else args.warmup
    patched = receiver_without_nagle()
    print_header(
        f"Memory: {runs} workflow runs after {warmup} warm-up runs, one process per variant",
        "19 of 20 runs are the hello workflow, every 20th the email workflow (offline LLM); spans go "
        "to the test receiver in the parent process." + (" Receiver patched to TCP_NODELAY." if patched else ""),
    )
    receiver = LangfuseReceiver().start()
    received = [0]

    def forget(spans: list[Any]) -> None:  # keep the parent small: count, then drop what was stored
        received[0] += len(spans)
        receiver.clear()

    receiver.add_span_listener(forget)
    env = {k: v for k, v in receiver.env().items() if k != "LANGFUSE_BASE_URL"}
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    try:
        for variant in VARIANTS:
            before = received[0]
            results[variant] = run_child(
                Path(__file__),
                [
                    "--variant",
                    variant,
                    "--json",
                    "--runs",
                    str(runs),
                    "--warmup",
                    str(warmup),
                    "--url",
                    receiver.base_url,
                ],
                env=env,
                timeout=600,
            )
            results[variant]["received"] = received[0] - before
            progress(f"  {variant} done ({time.monotonic() - started:.0f} s)")
    finally:
        receiver.stop()
    print()

    rows = []
    for v in VARIANTS:
        r = results[v]
        growth = (r["end"] - r["warm"]) / MB
        rows.append(
            [
                LABELS[v],
                f"{r['start'] / MB:.1f}",
                f"{r['warm'] / MB:.1f}",
                f"{r['end'] / MB:.1f}",
                f"{r['peak'] / MB:.1f}",
                f"{growth:+.2f}",
                f"{_slope_per_1k(r['samples'][1:]):+.3f}",
                f"{r['elapsed'] / runs * 1000:.2f} ms",
                r["received"],
            ]
        )
    print_table(
        [
            "variant",
            "start MB",
            "after warm-up MB",
            "end MB",
            "peak MB",
            "growth MB",
            "slope MB/1k runs",
            "per run",
            "spans received",
        ],
        rows,
    )
    on, off = results["on"], results["off"]
    growth = (on["end"] - on["warm"]) / MB
    extra = growth - (off["end"] - off["warm"]) / MB
    print(
        "RSS after each tenth of the runs (telemetry on), MB: "
        + ", ".join(f"{n}: {b / MB:.1f}" for n, b in on["samples"])
    )
    print(f"final flush (on): {on['flush']}; internals: {on['internals']}")
    print()
    print("### Target: RSS growth ≤ 5 MB after warm-up, telemetry on")
    print()
    print_table(
        ["measure", "bound", "measured", "verdict"],
        [
            [
                "growth, telemetry on",
                f"≤ {TARGET_MB:.0f} MB",
                f"{growth:+.2f} MB",
                verdict(growth, TARGET_MB, unit="MB"),
            ],
            ["growth on minus growth off", "(diagnostic)", f"{extra:+.2f} MB", ""],
            [
                "every span delivered, flush ok",
                "yes",
                "yes" if on["flush_ok"] else "no",
                "met" if on["flush_ok"] else "missed",
            ],
        ],
    )
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200 runs (smoke test)")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        emit(asyncio.run(child(args.variant, args.runs, args.warmup, args.url)))
        return 0
    return main_parent(args)


if __name__ == "__main__":
    raise SystemExit(main())
