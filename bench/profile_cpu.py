"""Where telemetry's CPU goes: a sampling profile of every thread, by category, off vs stock vs ours.

Why: ``bench/side_by_side.py`` says how much CPU each mode adds per run; this says where. It runs
the same child process (``side_by_side.py --child MODE --workload email``) under ``py-spy record
--threads --gil`` (samples only a thread holding the GIL, so waiting threads do not count), then
puts every sample into one category: the deepest frame that matches a category, except that some
categories (OpenInference's input JSON, our IO handler, ...) claim everything under them. Main-thread
samples outside the event loop's runs (imports, configure) are left out; export threads count whole.

Numbers are "ms of GIL-holding samples per run" at 1 kHz: py-spy pauses the process to sample, so
they run ~1.5x above the unprofiled CPU; read them as shares. Needs ``py-spy`` (``pip install -e
'.[dev]'``) and permission to trace a child process; ``--profiler yappi`` is the fallback (in-process,
CPU clock, all threads; its own overhead is large, so only its ranking is useful).

    .venv/bin/python bench/profile_cpu.py                       # off, stock, ours; ~1 min
    .venv/bin/python bench/profile_cpu.py --modes ours --variant OTEL_BASIC_EXPORT_WORKERS=1
    .venv/bin/python bench/profile_cpu.py --profiler yappi --modes ours
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import JSON_PREFIX, child_env, print_header, print_table, receiver_without_nagle
from side_by_side import Workload, setup

SCRIPT = Path(__file__).resolve().parent / "side_by_side.py"

# Claim everything below them (the outermost telemetry work that a lever would remove as a whole).
STICKY: list[tuple[str, tuple[str, ...]]] = [
    ("OpenInference: JSON of span inputs (process_input)", ("_Span.process_input",)),
    ("OpenInference: process_output", ("_Span.process_output",)),
    ("OpenInference: str() of step/run output events", ("_workflow_step_output_event", "_workflow_run_output_event")),
    ("ours: workflow IO handler (clean input/output)", ("WorkflowIOSpanHandler",)),
    ("ours: per-step flush kick", ("_step_finished",)),
]
# Deepest match wins.
DEEPEST: list[tuple[str, tuple[str, ...]]] = [
    ("export: gzip", ("gzip.py", "zlib")),
    ("export: HTTP (httpx/requests, sockets)", ("httpx/", "httpcore/", "h11/", "requests/", "urllib3/", "socket.py")),
    ("export: protobuf encoding", ("google/protobuf", "proto/common", "otlp_json", "encode_request", "encode_spans")),
    ("export: limits", ("otel_basic/limits.py",)),
    ("export: masking", ("otel_basic/masking/",)),
    ("export: span copy", ("spancopy.py",)),
    ("export: road, transports, spool", ("otel_basic/road.py", "otel_basic/transports/", "otel_basic/spool.py")),
    ("ours: DeliveryProcessor", ("otel_basic/processor.py",)),
    ("ours: Langfuse gate + Langfuse processor", ("otel_basic/langfuse.py", "langfuse/_client/")),
    ("stock: BatchSpanProcessor", ("(trace/export/", "_shared_internal")),
    (
        "OTel SDK: span start/end/attributes/context",
        ("(trace/", "(sdk/trace/", "(attributes/", "(context/", "(sdk/util/"),
    ),
    ("OpenInference: handler, other", ("instrumentation/llama_index/", "openinference/instrumentation/")),
    ("LlamaIndex dispatcher", ("llama_index_instrumentation/",)),
    ("app: tool spans (basic/tools.py)", ("basic/tools.py",)),
]
OTHER = "app + framework (no telemetry frame)"
_SETUP = ("setup (side_by_side", "Workload.__init__", "_find_and_load")


def categorize(frames: list[str]) -> str:
    for label, patterns in STICKY:
        if any(p in f for f in frames for p in patterns):
            return label
    for frame in reversed(frames):
        for label, patterns in DEEPEST:
            if any(p in frame for p in patterns):
                return label
    return OTHER


def aggregate(raw_path: Path) -> tuple[Counter[str], Counter[str]]:
    """py-spy raw output -> samples per category and per thread (setup on the main thread left out)."""
    rows: list[tuple[str, list[str], int]] = []
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        match = re.match(r"thread \((\d+)\)", frames[0])
        if match and count.isdigit():
            rows.append((match.group(1), frames, int(count)))
    loop_samples = Counter(tid for tid, frames, n in rows if any("_run_once" in f for f in frames))
    main = loop_samples.most_common(1)[0][0] if loop_samples else ""
    names = {tid: frames[0].split(": ", 1)[1] for tid, frames, _ in rows if ": " in frames[0]}
    categories: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for tid, frames, n in rows:
        if tid == main and (not any("_run_once" in f for f in frames) or any(s in f for f in frames for s in _SETUP)):
            continue
        categories[categorize(frames[1:])] += n
        threads["main (event loop)" if tid == main else names.get(tid, f"thread {tid}")] += n
    return categories, threads


def _py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def _mode_env(mode: str, base: dict[str, str], spool: str, extra: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    if mode == "ours":
        env |= {"OTEL_BASIC_SPOOL_DIR": spool, "OTEL_BASIC_LOG_LEVEL": "info", **extra}
    return env


def run_py_spy(modes: list[str], runs: int, extra: dict[str, str], rate: int) -> int:
    from otel_basic.testing import LangfuseReceiver

    spy = _py_spy()
    if spy is None:
        print("py-spy not found: pip install -e '.[dev]', or use --profiler yappi", file=sys.stderr)
        return 2
    receiver_without_nagle()
    results: dict[str, tuple[Counter[str], Counter[str], int]] = {}
    work = Path(tempfile.mkdtemp(prefix="otel-basic-profile-"))
    try:
        with LangfuseReceiver() as receiver:
            base = {k: v for k, v in receiver.env().items() if k != "LANGFUSE_BASE_URL"}
            for mode in modes:
                out = work / f"{mode}.txt"
                cmd = [spy, "record", "-r", str(rate), "-f", "raw", "--threads", "--gil", "-o", str(out), "--"]
                cmd += [sys.executable, str(SCRIPT), "--child", mode, "--json", "--workload", "email"]
                cmd += ["--url", receiver.base_url, "--runs", str(runs), "--blocks", "1"]
                env = child_env(_mode_env(mode, base, str(work / "spool"), extra))
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
                line = next((x for x in proc.stdout.splitlines() if x.startswith(JSON_PREFIX)), None)
                if proc.returncode or line is None or not out.exists():
                    print(f"py-spy on {mode} failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
                    return 1
                total_runs = json.loads(line[len(JSON_PREFIX) :])["runs_total"]
                categories, threads = aggregate(out)
                results[mode] = (categories, threads, total_runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _report(modes, results, rate)
    return 0


def _report(modes: list[str], results: dict[str, tuple[Counter[str], Counter[str], int]], rate: int) -> None:
    per_ms = 1000.0 / rate

    def ms(mode: str, counter_index: int, key: str) -> float:
        counters = results[mode]
        return counters[counter_index][key] * per_ms / counters[2]

    labels = [label for label, _ in STICKY + DEEPEST] + [OTHER]
    rows = []
    for label in labels:
        values = [ms(m, 0, label) for m in modes]
        if max(values) >= 0.01:
            rows.append([label, *(f"{v:.2f}" for v in values)])
    totals = [sum(results[m][0].values()) * per_ms / results[m][2] for m in modes]
    rows.append(["**total**", *(f"**{t:.2f}**" for t in totals)])
    print("### Samples by category (ms of GIL-holding samples per email run)")
    print()
    print_table(["category", *modes], rows)
    thread_names = sorted({t for m in modes for t in results[m][1]})
    trows = [[t, *(f"{ms(m, 1, t):.2f}" for m in modes)] for t in thread_names]
    print("### By thread")
    print()
    print_table(["thread", *modes], trows)


# --- yappi fallback ---------------------------------------------------------------------------


async def yappi_child(mode: str, base_url: str, runs: int) -> None:
    """In-process yappi (CPU clock, every thread) around ``runs`` email runs and their flush."""
    import yappi

    flush = setup(mode, base_url)
    work = Workload("email", 1)
    for _ in range(10):
        await work.one()
    await flush()
    yappi.set_clock_type("cpu")
    yappi.start(builtins=False, profile_threads=True)
    cpu0 = time.process_time()
    for _ in range(runs):
        await work.one()
    await flush()
    cpu = time.process_time() - cpu0
    yappi.stop()
    print(f"### yappi ({mode}): process CPU {cpu * 1000 / runs:.2f} ms per run, profiler overhead included")
    print()
    stats = yappi.get_func_stats()
    stats.sort("ttot", "desc")
    rows = []
    for s in stats:
        if len(rows) >= 50 or s.ttot / cpu < 0.01:
            break
        rows.append(
            [f"{s.name} ({Path(s.module).name}:{s.lineno})", f"{s.ttot * 1000 / runs:.3f}", f"{s.ttot / cpu:.0%}"]
        )
    print_table(["function", "inclusive ms/run", "share"], rows)


def run_yappi(modes: list[str], runs: int, extra: dict[str, str]) -> int:
    from otel_basic.testing import LangfuseReceiver

    receiver_without_nagle()
    with LangfuseReceiver() as receiver, tempfile.TemporaryDirectory() as spool:
        base = {k: v for k, v in receiver.env().items() if k != "LANGFUSE_BASE_URL"}
        for mode in modes:
            cmd = [sys.executable, __file__, "--yappi-child", mode, "--url", receiver.base_url, "--runs", str(runs)]
            env = child_env(_mode_env(mode, base, spool, extra))
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            sys.stdout.write(proc.stdout)
            if proc.returncode:
                sys.stderr.write(proc.stderr[-3000:])
                return proc.returncode
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--modes", nargs="+", choices=("off", "stock", "ours"), default=["off", "stock", "ours"])
    parser.add_argument("--runs", type=int, default=300, help="measured email runs per mode (default 300)")
    parser.add_argument(
        "--rate", type=int, default=None, help="py-spy samples per second (default 1000; 100 with --quick)"
    )
    parser.add_argument("--profiler", choices=("py-spy", "yappi"), default="py-spy")
    parser.add_argument(
        "--variant", nargs="*", default=[], metavar="KEY=VALUE", help="environment for the ours mode (knobs)"
    )
    # At 1 kHz py-spy's pauses make a child's imports take ~50 s on 2 cores; a smoke run needs few samples.
    parser.add_argument("--quick", action="store_true", help="20 runs at 100 samples/s (smoke)")
    parser.add_argument("--yappi-child", choices=("off", "stock", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    runs = 20 if args.quick else args.runs
    if args.yappi_child:
        asyncio.run(yappi_child(args.yappi_child, args.url, runs))
        return 0
    extra = dict(item.split("=", 1) for item in args.variant)
    print_header(
        f"Where the CPU goes: email workload, {runs} runs per mode, {args.profiler}, all threads",
        f"modes: {', '.join(args.modes)}" + (f"; ours with {extra}" if extra else ""),
    )
    if args.profiler == "yappi":
        return run_yappi(args.modes, runs, extra)
    rate = args.rate if args.rate is not None else (100 if args.quick else 1000)
    return run_py_spy(args.modes, runs, extra, rate)


if __name__ == "__main__":
    raise SystemExit(main())
