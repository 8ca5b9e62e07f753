"""Shared helpers for the benchmark scripts: machine header, stats, markdown tables, child processes.

Why child processes: ``otel_basic.configure()`` and the OpenInference instrumentor are process-global,
so every variant that needs a different global setup runs in a fresh interpreter (the script re-invokes
itself with ``--variant X --json``) and the parent interleaves those children round-robin, so machine
noise (2 shared cores, other people's test runs) hits every variant alike.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
if str(SRC) not in sys.path:  # run from a checkout without an installed package too
    sys.path.insert(0, str(SRC))

JSON_PREFIX = "BENCH-JSON: "
_OUR_ENV_PREFIXES = ("OTEL_", "LANGFUSE_", "OPENINFERENCE_", "OPENAI_")


# --- machine ---------------------------------------------------------------------------------


def machine_line() -> str:
    """Where the numbers come from: OS, CPU count, Python, load (the noise on a shared box)."""
    load = "n/a"
    if hasattr(os, "getloadavg"):
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {platform.platform()} | {platform.machine()} | cpus: {os.cpu_count()} | "
        f"python {platform.python_version()} ({platform.python_implementation()}) | loadavg {load}"
    )


def print_header(title: str, note: str = "") -> None:
    print(f"## {title}")
    print()
    print(machine_line())
    if note:
        print()
        print(note)
    print()
    sys.stdout.flush()


# --- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def median(values: Iterable[float]) -> float:
    data = [v for v in values if not math.isnan(v)]
    return statistics.median(data) if data else math.nan


def spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """``min–max`` of per-round values: the honest range behind a median."""
    data = [v for v in values if not math.isnan(v)]
    if not data:
        return "n/a"
    lo, hi = min(data), max(data)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}–{fmt(hi)}"


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def ratio_of_medians_ci(
    numerator: Sequence[float], denominator: Sequence[float], *, level: float = 0.95, resamples: int = 4000
) -> tuple[float, float]:
    """Bootstrap interval of ``median(numerator) / median(denominator)`` over paired rounds.

    Why: on 2 shared cores one round's ratio moves by tens of percent, so a median alone says little
    about how sure a verdict is. Rounds are resampled as pairs (both figures of a round come from
    neighbouring processes, which share that round's noise); the seed is fixed so a report reproduces.
    """
    pairs = [(a, b) for a, b in zip(numerator, denominator, strict=True) if not (math.isnan(a) or math.isnan(b))]
    if len(pairs) < 3:
        return math.nan, math.nan
    rng = random.Random(0)
    values = []
    for _ in range(resamples):
        sample = [pairs[rng.randrange(len(pairs))] for _ in pairs]
        values.append(ratio(median(a for a, _ in sample), median(b for _, b in sample)))
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    return percentile(values, 100 * tail), percentile(values, 100 * (1 - tail))


def fmt_ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def fmt_us(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1e6:.0f} µs"


def fmt_x(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}×"


def verdict(value: float, target: float, *, higher_is_better: bool = False, unit: str = "×") -> str:
    """``met`` or ``missed by X`` for a value against a target bound."""
    if math.isnan(value):
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    if ok:
        return "met"
    gap = abs(value - target)
    if unit == "×":
        return f"missed by {gap:.2f}×"
    return f"missed by {gap:.1f} {unit}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print(markdown_table(headers, rows))
    print()
    sys.stdout.flush()


# --- child processes -------------------------------------------------------------------------


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: no developer OTEL_/LANGFUSE_ settings, no spool, no signals."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OUR_ENV_PREFIXES)}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["OTEL_BASIC_SPOOL_DIR"] = "off"
    env["OTEL_BASIC_SIGNAL_HANDLERS"] = "false"
    env["OTEL_BASIC_LOG_LEVEL"] = "off"
    env.update(extra or {})
    return env


def run_child(
    script: Path, args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 300.0
) -> dict[str, Any]:
    """Run ``script args`` with this interpreter; return the JSON its ``emit()`` printed."""
    cmd = [sys.executable, str(script), *args]
    proc = subprocess.run(cmd, env=child_env(env), capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(JSON_PREFIX):
            if proc.returncode != 0:
                break
            result: dict[str, Any] = json.loads(line[len(JSON_PREFIX) :])
            return result
    raise RuntimeError(
        f"child {' '.join(args)} failed (rc={proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )


def emit(data: Mapping[str, Any]) -> None:
    """What a child prints for its parent (one line, last)."""
    print(JSON_PREFIX + json.dumps(data), flush=True)


def rotation(items: Sequence[str], round_index: int) -> list[str]:
    """Round-robin order for round ``round_index``: each variant takes each position in turn."""
    k = round_index % len(items)
    return [*items[k:], *items[:k]]


# --- telemetry helpers -----------------------------------------------------------------------


class NoOpExporter(SpanExporter):
    """Accepts everything at once: the span's cost without any transport."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def rss_bytes() -> int:
    """Current resident set size (VmRSS), from /proc (ru_maxrss only gives the peak)."""
    return _proc_status_kb("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size (VmHWM; falls back to getrusage)."""
    kb = _proc_status_kb("VmHWM")
    if kb:
        return kb * 1024
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _proc_status_kb(field: str) -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def now() -> float:
    return time.perf_counter()


def receiver_without_nagle() -> bool:
    """Make the test receiver answer without Nagle's delay; True if that needed patching.

    The receiver writes the response headers and body in two ``send()`` calls; with Nagle on, the
    body waits for the client's delayed ACK (~40 ms on Linux), so every export looked ~40 ms slower
    than any real endpoint. ``StreamRequestHandler.disable_nagle_algorithm`` is the stdlib switch.
    """
    from otel_basic.testing import receiver

    if getattr(receiver._Handler, "disable_nagle_algorithm", False):
        return False
    receiver._Handler.disable_nagle_algorithm = True
    return True


def progress(message: str) -> None:
    """Progress goes to stderr, so stdout stays a clean markdown report."""
    print(message, file=sys.stderr, flush=True)
