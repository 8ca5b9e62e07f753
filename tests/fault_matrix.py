"""The fault matrix: exit paths x endpoint behaviours, each cell a real child process.

For every cell: spans created (counted by the child as they finish) against spans received by the
Langfuse-compatible receiver (unique span ids, after a replay of the spool where the endpoint came
back), and the slowest flush as a fraction of its deadline. For the 401 cell the spans must be
kept aside in the spool's rejected area instead.

    .venv/bin/python -m tests.fault_matrix          # prints the table (README "Reliability")
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

from otel_basic.pipeline import build_road
from otel_basic.settings import load_settings
from otel_basic.testing import LangfuseReceiver

EXIT_PATHS = ["return", "exception", "timeout", "cancel", "sigint", "sigterm", "sys.exit"]
ENDPOINTS = ["up", "down, replay", "503 x3", "429 Retry-After", "slow > deadline", "401", "413 > 6 KB"]
FLUSH_TIMEOUT = 2.0
CHILD = Path(__file__).with_name("matrix_child.py")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Cell:
    exit_path: str
    endpoint: str
    created: int = 0
    received: int = 0
    rejected: int = 0
    flush_ratio: float = 0.0
    flushes: int = 0
    returncode: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        if self.created == 0 or self.flush_ratio > 1.1 or self.flushes == 0:
            return False
        if self.endpoint == "401":
            return self.rejected == self.created and self.received == 0
        return self.received == self.created

    def text(self) -> str:
        got = f"rejected {self.rejected}" if self.endpoint == "401" else f"{self.received}"
        return f"{self.created}/{got} {self.flush_ratio:.2f}{'' if self.ok else ' FAIL'}"


def _env(receiver: LangfuseReceiver, spool: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANGFUSE_"))}
    env.update(receiver.env())
    env.update(
        OTEL_BASIC_SPOOL_DIR=str(spool),
        OTEL_BASIC_FLUSH_TIMEOUT=str(FLUSH_TIMEOUT),
        OTEL_BASIC_SIGNAL_HANDLERS="true",
        OTEL_BASIC_MASK="off",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def _arm(receiver: LangfuseReceiver, endpoint: str) -> None:
    if endpoint == "down, replay":
        receiver.stop()
    elif endpoint == "503 x3":
        receiver.fail_next(503, count=3)
    elif endpoint == "429 Retry-After":
        receiver.fail_next(429, count=2, retry_after=1)
    elif endpoint == "slow > deadline":
        receiver.set_delay(FLUSH_TIMEOUT + 1.0)
    elif endpoint == "401":
        receiver.fail_next(401, count=100000)
    elif endpoint == "413 > 6 KB":
        receiver.max_body_bytes = 6000


def run_cell(exit_path: str, endpoint: str) -> Cell:
    cell = Cell(exit_path, endpoint)
    with TemporaryDirectory(prefix="otel-basic-matrix-") as tmp, LangfuseReceiver() as receiver:
        work = Path(tmp)
        spans_file, flushes_file = work / "spans", work / "flushes"
        env = _env(receiver, work / "spool")
        _arm(receiver, endpoint)
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), exit_path, str(spans_file), str(flushes_file)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if exit_path.startswith("sig"):
                assert proc.stdout is not None
                ready = threading.Event()

                def watch() -> None:
                    assert proc.stdout is not None
                    for line in proc.stdout:
                        if line.strip() == "READY":
                            ready.set()

                threading.Thread(target=watch, daemon=True).start()
                if not ready.wait(60):
                    cell.notes.append("child never became ready")
                sig = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}[
                    exit_path
                ]
                proc.send_signal(sig)
            _, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        cell.returncode = proc.returncode
        if err and "Traceback" in err and exit_path not in ("sigint",):
            cell.notes.append(err.strip().splitlines()[-1][:200])
        # the endpoint comes back; whatever was spooled is replayed, as `otel-basic replay` does
        receiver.reset_faults()
        if not receiver.running:
            receiver.start()
        settings = load_settings(env)
        road = build_road(settings)
        assert road.spool is not None
        try:
            if endpoint == "401":
                receiver.fail_next(401, count=100000)  # still wrong keys: the rest is rejected too
            road.replay()
        finally:
            road.close()
        time.sleep(0.2 if endpoint != "slow > deadline" else FLUSH_TIMEOUT + 1.5)  # late answers land
        cell.created = spans_file.stat().st_size if spans_file.exists() else 0
        cell.received = len({s.span_id for s in receiver.spans})
        cell.rejected = road.spool.state().rejected_spans
        if flushes_file.exists():
            lines = [json.loads(line) for line in flushes_file.read_text().splitlines() if line]
            cell.flushes = len(lines)
            # a shutdown after a signal gets what is left of the exit deadline (maybe 0): allow 0.2 s to spool
    cell.flush_ratio = max((x["duration"] / max(x["deadline"], 0.2) for x in lines), default=0.0)
    return cell


def run_matrix(
    exit_paths: list[str] = EXIT_PATHS, endpoints: list[str] = ENDPOINTS, workers: int = 3
) -> list[Cell]:
    pairs = [(p, e) for p in exit_paths for e in endpoints]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda pe: run_cell(*pe), pairs))


def table(cells: list[Cell]) -> str:
    endpoints = list(dict.fromkeys(c.endpoint for c in cells))
    paths = list(dict.fromkeys(c.exit_path for c in cells))
    by = {(c.exit_path, c.endpoint): c for c in cells}
    lines = ["| exit path | " + " | ".join(endpoints) + " |", "|---" * (len(endpoints) + 1) + "|"]
    for path in paths:
        lines.append(f"| {path} | " + " | ".join(by[(path, e)].text() for e in endpoints) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    started = time.monotonic()
    result = run_matrix()
    print("cells: created/received (unique span ids, after replay) slowest-flush/deadline")
    print(table(result))
    failed = [c for c in result if not c.ok]
    for c in failed:
        print(f"FAIL {c.exit_path} x {c.endpoint}: {c} ")
    print(f"{len(result) - len(failed)} passed, {len(failed)} failed ({time.monotonic() - started:.0f} s)")
    sys.exit(1 if failed else 0)
