"""A bounded on-disk spool for spans that could not be delivered (yet).

Layout: ``{root}/{destination}/`` where ``destination`` is a hash of the endpoint and public key
(no secret in any file name), holding one file per batch: a serialized OTLP
``ExportTraceServiceRequest`` named ``{time_ns}-{pid}-{seq}-n{spans}.otlp``. Spans the endpoint
rejected for good (400, 401/403, a redirect, 413 after splitting) go to ``rejected/`` beside a
``.reason`` file, are never retried automatically, and ``otel-basic doctor`` reports them.

Guarantees: files are written to a temporary name, fsynced, then renamed (a crash mid-write
never corrupts earlier data); mode 0600 in a 0700 directory; total size capped, evicting the oldest
batches first and counting what was evicted. A batch leaves the spool only after the endpoint
accepted it; concurrent replayers (threads or processes) claim a file by renaming it, so each
batch is sent at most once per replay.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

_log = logging.getLogger("otel_basic")
_SUFFIX = ".otlp"
_seq = itertools.count()


def destination_key(endpoint: str, public_key: str | None) -> str:
    return hashlib.sha256(f"{endpoint}\n{public_key or ''}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SpoolState:
    batches: int
    spans: int
    bytes: int
    rejected_batches: int
    rejected_spans: int
    rejected_reasons: dict[str, int]
    oldest_age: float | None


@dataclass(frozen=True)
class ReplayResult:
    sent_batches: int = 0
    sent_spans: int = 0
    failed_batches: int = 0
    rejected_batches: int = 0
    remaining_batches: int = 0
    error: str | None = None


Sender = Callable[[bytes], tuple[bool, str | None, bool]]
"""Sends one serialized request; returns (accepted, error message, rejected for good)."""


def _span_count(path: Path) -> int:
    stem = path.name.split(_SUFFIX)[0]
    try:
        return int(stem.rsplit("-n", 1)[1])
    except (IndexError, ValueError):
        return 0


class Spool:
    def __init__(self, root: Path, destination: str, *, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.dir = root / destination
        self.rejected_dir = self.dir / "rejected"
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.spooled = 0
        self.evicted = 0
        self.write_errors = 0

    def __repr__(self) -> str:
        return f"Spool(dir={str(self.dir)!r})"

    def spooled_total(self) -> int:
        return self.spooled

    # --- writing -----------------------------------------------------------------------------

    def _ensure(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)

    def _write_file(self, directory: Path, name: str, data: bytes) -> Path:
        self._ensure(directory)
        final = directory / name
        tmp = directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        return final

    def _name(self, spans: int) -> str:
        return f"{time.time_ns()}-{os.getpid()}-{next(_seq)}-n{spans}{_SUFFIX}"

    def write(self, request: bytes, spans: int) -> bool:
        """Keep one batch; returns False (and counts it) if the disk refused."""
        try:
            with self._lock:
                self._write_file(self.dir, self._name(spans), request)
                self.spooled += spans
                self._evict()
            return True
        except OSError as exc:
            self.write_errors += spans
            _log.warning("otel-basic: could not write to the spool %s: %s", self.dir, exc.strerror)
            return False

    def reject(self, request: bytes, spans: int, reason: str) -> None:
        """Keep a batch the endpoint refused for good, with the reason, out of the replay path."""
        try:
            with self._lock:
                path = self._write_file(self.rejected_dir, self._name(spans), request)
                self._write_file(
                    self.rejected_dir, path.name + ".reason", json.dumps({"reason": reason}).encode()
                )
        except OSError as exc:
            _log.warning(
                "otel-basic: could not keep rejected spans in %s: %s", self.rejected_dir, exc.strerror
            )

    def _files(self) -> list[Path]:
        try:
            return sorted(
                p for p in self.dir.iterdir() if p.name.endswith(_SUFFIX) and not p.name.startswith(".")
            )
        except FileNotFoundError:
            return []

    def _evict(self) -> None:
        files = self._files()
        sizes = {p: p.stat().st_size for p in files}
        total = sum(sizes.values())
        for path in files:
            if total <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                total -= sizes[path]
                self.evicted += _span_count(path)
                _log.warning(
                    "otel-basic: spool over %d MB: evicted the oldest batch (%d spans); %d evicted so far",
                    self.max_bytes // (1024 * 1024),
                    _span_count(path),
                    self.evicted,
                )

    # --- reading -----------------------------------------------------------------------------

    def state(self) -> SpoolState:
        files = self._files()
        rejected = []
        with contextlib.suppress(FileNotFoundError):
            rejected = [p for p in self.rejected_dir.iterdir() if p.name.endswith(_SUFFIX)]
        reasons: dict[str, int] = {}
        for path in rejected:
            try:
                reason = json.loads((path.parent / (path.name + ".reason")).read_text())["reason"]
            except (OSError, ValueError, KeyError):
                reason = "unknown"
            reasons[reason] = reasons.get(reason, 0) + _span_count(path)
        oldest = None
        if files:
            with contextlib.suppress(ValueError, IndexError):
                oldest = max(0.0, time.time() - int(files[0].name.split("-", 1)[0]) / 1e9)
        return SpoolState(
            batches=len(files),
            spans=sum(_span_count(p) for p in files),
            bytes=sum(p.stat().st_size for p in files if p.exists()),
            rejected_batches=len(rejected),
            rejected_spans=sum(_span_count(p) for p in rejected),
            rejected_reasons=reasons,
            oldest_age=oldest,
        )

    def pending(self) -> bool:
        return bool(self._files())

    def _claim(self, path: Path) -> Path | None:
        claimed = path.with_name(f".{path.name}.claimed-{os.getpid()}-{threading.get_ident()}")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None  # someone else is sending it
        return claimed

    def recover_claims(self) -> None:
        """Put back batches claimed by processes that died mid-replay."""
        with contextlib.suppress(FileNotFoundError):
            for path in self.dir.iterdir():
                if ".claimed-" not in path.name:
                    continue
                pid = int(path.name.rsplit(".claimed-", 1)[1].split("-")[0])
                if pid != os.getpid() and not _alive(pid):
                    with contextlib.suppress(OSError):
                        os.rename(path, self.dir / path.name[1:].rsplit(".claimed-", 1)[0])

    def replay(
        self,
        send: Sender,
        *,
        deadline: float | None = None,
        max_batches: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ReplayResult:
        """Send spooled batches oldest first until one fails, the deadline, or ``max_batches``."""
        files = self._files()
        sent = sent_spans = rejected = 0
        error = None
        failed = 0
        for index, path in enumerate(files):
            if (deadline is not None and time.monotonic() >= deadline) or (
                max_batches is not None and index >= max_batches
            ):
                break
            claimed = self._claim(path)
            if claimed is None:
                continue
            try:
                data = claimed.read_bytes()
            except OSError:
                continue
            ok, message, permanent = send(data)
            if ok:
                claimed.unlink(missing_ok=True)
                sent += 1
                sent_spans += _span_count(path)
            elif permanent:
                self.reject(data, _span_count(path), message or "rejected")
                claimed.unlink(missing_ok=True)
                rejected += 1
            else:
                os.rename(claimed, path)
                failed, error = 1, message
                break
            if progress is not None:
                progress(index + 1, len(files))
        return ReplayResult(sent, sent_spans, failed, rejected, len(self._files()), error)

    def iter_rejected(self) -> Iterator[tuple[Path, str]]:
        with contextlib.suppress(FileNotFoundError):
            for path in sorted(self.rejected_dir.iterdir()):
                if path.name.endswith(_SUFFIX):
                    try:
                        reason = json.loads((path.parent / (path.name + ".reason")).read_text())["reason"]
                    except (OSError, ValueError, KeyError):
                        reason = "unknown"
                    yield path, reason

    def requeue_rejected(self) -> int:
        """Move rejected batches back for another replay (after fixing the cause). Returns spans."""
        moved = 0
        for path, _ in list(self.iter_rejected()):
            with contextlib.suppress(OSError):
                os.replace(path, self.dir / path.name)
                (path.parent / (path.name + ".reason")).unlink(missing_ok=True)
                moved += _span_count(path)
        return moved


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
