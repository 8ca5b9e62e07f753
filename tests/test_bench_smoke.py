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
    """run_all strings scripts together into one report; here ``masking.py``, the one script not run above (it
    prints plain columns, not a markdown table)."""
    proc = _run([str(BENCH / "run_all.py"), "--quick", "--only", "masking"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("# otel-basic benchmarks") and "machine: " in proc.stdout
    assert "Real OpenInference LLM spans" in proc.stdout and "mask_span level=detectors" in proc.stdout
    assert "_masking: " in proc.stdout and "exit 0_" in proc.stdout


@pytest.mark.slow
def test_side_by_side_quick(tmp_path: Path) -> None:
    """The side-by-side script: every mode x workload cell, the headline rows, an extra variant, the plot."""
    png = tmp_path / "side.png"
    proc = _run(
        [
            str(BENCH / "side_by_side.py"),
            "--quick",
            "--png",
            str(png),
            "--variant",
            "one_worker=OTEL_BASIC_EXPORT_WORKERS=1",
            "--workloads",
            "hello",
            "llm",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert out.startswith("## Side by side") and "machine: " in out and _has_table(out)
    cells = [line for line in out.splitlines() if line.startswith("| hello, sequential ") or line.startswith("| LLM")]
    for workload in ("hello, sequential", "LLM span"):
        modes = [c.split("|")[2].strip() for c in cells if workload in c]
        assert {"off", "stock", "ours", "one_worker"} <= set(modes), cells
    assert "ours / stock" in out and "verdict" in out
    if "plot: skipped" not in out:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_side_by_side_rejects_a_bad_variant() -> None:
    proc = _run([str(BENCH / "side_by_side.py"), "--quick", "--variant", "no-equals-sign"])
    assert proc.returncode == 2
    assert "--variant" in proc.stderr and "NAME=KEY=VALUE" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("profiler", ["py-spy", "yappi"])
def test_profile_cpu_quick(profiler: str) -> None:
    """The profile script: a category (or function) table for one mode; py-spy may lack ptrace rights here."""
    proc = _run([str(BENCH / "profile_cpu.py"), "--quick", "--modes", "ours", "--profiler", profiler])
    if (
        profiler == "py-spy"
        and proc.returncode != 0
        and ("py-spy not found" in proc.stderr or "ermission" in proc.stderr)
    ):
        pytest.skip("py-spy unavailable or not allowed to trace here")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("## Where the CPU goes") and _has_table(proc.stdout)
    if profiler == "py-spy":  # a quick run on a loaded machine may sample no export thread: not asserted
        assert "**total**" in proc.stdout and "### By thread" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["off", "stock", "ours"])
def test_instructions_child_runs(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench/instructions.py`` runs its children under valgrind (minutes each, too slow here): its child
    alone, the part that rots when the workloads' or the setups' code changes."""
    from otel_basic.testing import LangfuseReceiver

    with LangfuseReceiver() as receiver:
        for key, value in receiver.env().items():
            if key != "LANGFUSE_BASE_URL":
                monkeypatch.setenv(key, value)
        proc = _run([str(BENCH / "instructions.py"), "--child", mode, "email", "2", receiver.base_url])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if mode != "off":
        assert receiver.spans, "the child's spans reached the receiver"
