"""Every benchmark script still runs: ``--quick`` end to end, exit 0, a markdown table printed.

Why: benchmarks are run by hand, rarely, and rot silently when the code under them changes. The
quick mode exercises every variant (child processes, receiver, tables) with tiny N; the numbers
it prints mean nothing and are not checked.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = ["step_flush", "llm_span", "throughput", "memory"]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)  # already stripped of OTEL_/LANGFUSE_ by the autouse fixture
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=120)


def _has_table(stdout: str) -> bool:
    lines = stdout.splitlines()
    return any(a.startswith("| ") and b.startswith("|-") for a, b in itertools.pairwise(lines))


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_bench_script_quick(name: str) -> None:
    proc = _run([str(BENCH / f"{name}.py"), "--quick"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("## "), proc.stdout[:500]
    assert "machine: " in proc.stdout and "cpus: " in proc.stdout and "python " in proc.stdout
    assert _has_table(proc.stdout), proc.stdout[-3000:]
    assert "verdict" in proc.stdout  # every script reports its target


@pytest.mark.slow
def test_run_all_quick_subset() -> None:
    """run_all strings scripts together into one report (one cheap script here, the rest above)."""
    proc = _run([str(BENCH / "run_all.py"), "--quick", "--only", "llm_span"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("# otel-basic benchmarks")
    assert "## LLM span cost" in proc.stdout
    assert _has_table(proc.stdout)
