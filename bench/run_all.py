"""Run every benchmark one after another and print their tables as one markdown report.

Why one after another: on 2 cores, two benchmarks at once would measure each other. Each script
already interleaves its own variants; this only strings them together (and tees to ``--out``).

    .venv/bin/python bench/run_all.py                 # ~12 min (side_by_side alone ~6 min)
    .venv/bin/python bench/run_all.py --quick         # smoke run of every script
    .venv/bin/python bench/run_all.py --only llm_span,throughput --out bench-results.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, child_env, machine_line

HERE = Path(__file__).resolve().parent
SCRIPTS = ("step_flush", "llm_span", "throughput", "memory", "masking", "side_by_side")  # masking.py: if present


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(SCRIPTS))
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(SCRIPTS)
    unknown = set(names) - set(SCRIPTS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    report: list[str] = [
        "# otel-basic benchmarks",
        "",
        machine_line(),
        "",
        f"started {time.strftime('%Y-%m-%d %H:%M:%S')}{' (--quick: smoke numbers, not results)' if args.quick else ''}",
        "",
    ]
    print("\n".join(report), flush=True)
    failed: list[str] = []
    for name in names:
        script = HERE / f"{name}.py"
        if not script.exists():
            line = f"_{name}: skipped, {script.name} is not there_\n"
            print(line, flush=True)
            report.append(line)
            continue
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(script), *(["--quick"] if args.quick else [])],
            cwd=str(ROOT),
            env=child_env(),
            stdout=subprocess.PIPE,
            text=True,
        )  # stderr (progress) passes through to the terminal
        out = proc.stdout.rstrip() + f"\n\n_{name}: {time.monotonic() - started:.0f} s, exit {proc.returncode}_\n"
        print(out, flush=True)
        report.append(out)
        if proc.returncode != 0:
            failed.append(name)
    if args.out:
        args.out.write_text("\n".join(report) + "\n", encoding="utf-8")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
