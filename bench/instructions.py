"""Instructions added per run, off vs stock vs ours: the side-by-side table without the machine's noise.

Why: on a shared 2-core machine the CPU time of one run moves by tens of percent between two
identical runs (other tenants), more than most changes we measure. Instructions executed are
deterministic: each (mode, workload) runs under valgrind (``cachegrind --cache-sim=no``, counts
every instruction of every thread) twice, with ``N`` runs and with none, in fresh processes with a
fixed hash seed; the difference divided by ``N`` is the cost of one run, warm-up and imports excluded.

What instructions leave out is exactly what concurrency costs: kernel time (system calls, the
sockets' work), context switches, GIL waits and cache misses. So this says how much work each mode
does, ``side_by_side.py`` what it costs on a real machine; a gap between the two ratios is the price
of doing the work beside the app's thread (ours exports during the runs, stock in its flush).

    .venv/bin/python bench/instructions.py                         # hello, email, llm; ~10 min
    .venv/bin/python bench/instructions.py --workloads llm --runs 400

Needs ``valgrind`` (Debian: ``apt-get install valgrind``); runs ~50x slower than native.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import child_env, print_header, print_table

SCRIPT = Path(__file__).resolve()
MODES = ("off", "stock", "ours")
RUNS = {"hello": 300, "email": 60, "llm": 400, "hello50": 300}
_IREFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def child(mode: str, workload: str, runs: int, url: str) -> None:
    """Warm up, flush, then ``runs`` runs and a flush: what the parent subtracts is the last part."""
    from side_by_side import Workload, setup

    flush = setup(mode, url)
    work = Workload(workload, 50)

    async def main() -> None:
        for _ in range(8 if workload == "email" else 30):
            await work.one()
        await flush()
        for _ in range(runs):
            await work.one()
        await flush()

    asyncio.run(main())


def _count(mode: str, workload: str, runs: int, url: str, env: dict[str, str]) -> int:
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    cmd += [sys.executable, str(SCRIPT), "--child", mode, workload, str(runs), url]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    found = _IREFS.search(proc.stderr)
    if proc.returncode or found is None:
        raise RuntimeError(f"{mode}/{workload} x{runs} failed (rc={proc.returncode}):\n{proc.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=["hello", "email", "llm"], choices=sorted(RUNS))
    parser.add_argument("--runs", type=int, default=0, help="runs per measured child (default: per workload)")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "WORKLOAD", "RUNS", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, workload, runs, url = args.child
        child(mode, workload, int(runs), url)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not found (apt-get install valgrind)", file=sys.stderr)
        return 2

    from otel_basic.testing import LangfuseReceiver

    print_header(
        "Instructions added per run: no telemetry vs stock OpenInference + BatchSpanProcessor vs otel-basic",
        "valgrind cachegrind, every thread; (N runs) - (0 runs), divided by N; fresh processes, PYTHONHASHSEED=0.",
    )
    rows = []
    with LangfuseReceiver() as receiver, tempfile.TemporaryDirectory(prefix="otel-basic-instr-") as spool:
        base = {k: v for k, v in receiver.env().items() if k != "LANGFUSE_BASE_URL"}
        env = child_env({**base, "OTEL_BASIC_SPOOL_DIR": spool, "PYTHONHASHSEED": "0"})
        for workload in args.workloads:
            runs = args.runs or RUNS[workload]
            jobs = [(mode, workload, n, receiver.base_url, env) for mode in MODES for n in (0, runs)]
            with ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
                found = list(pool.map(lambda job: _count(*job), jobs))
            counts = {(job[0], job[2]): n for job, n in zip(jobs, found, strict=True)}
            per = {mode: (counts[mode, runs] - counts[mode, 0]) / runs for mode in MODES}
            stock, ours = per["stock"] - per["off"], per["ours"] - per["off"]
            rows.append(
                [
                    workload,
                    f"{per['off'] / 1e6:.2f} M",
                    f"+{stock / 1e6:.2f} M",
                    f"+{ours / 1e6:.2f} M",
                    f"{ours / stock:.2f}×",
                ]
            )
            print(f"{workload}: done", file=sys.stderr)
    print_table(["workload", "telemetry off", "added by stock", "added by ours", "ours / stock"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
