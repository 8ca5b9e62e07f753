"""A bounded on-disk spool for spans that could not be delivered (yet).

Layout: ``{root}/{destination}/`` where ``destination`` is a hash of the endpoint and public key
(no secret in any file name), holding one file per batch: a serialized OTLP
``ExportTraceServiceRequest`` named ``{time_ns}-{pid}-{seq}-{mask level}-n{spans}.otlp``. The masking
level a batch was prepared with is in its name, so a process configured to mask more never sends a
batch that was masked less (see :meth:`ClaimedBatch.mask_level`). Spans the endpoint
rejected for good (400, 401/403, a redirect, 413 after splitting) go to ``rejected/`` beside a
``.reason`` file, are never retried automatically, and ``otel-basic doctor`` reports them.

Guarantees: files are written to a temporary name, fsynced, then renamed (a crash mid-write
never corrupts earlier data); mode 0600 in a 0700 directory; total size capped, evicting the oldest
batches first and counting what was evicted. A batch leaves the spool only after the endpoint
accepted it; concurrent replayers (threads or processes) claim a file by renaming it, so each
batch is sent at most once per replay.

The spool only stores and hands out bytes: what to send, and what an answer means, is decided by
:mod:`otel_basic.road` (the only writer, so the spool holds only masked, size-limited requests). No
method raises for an unusable directory (a file in its place, no permission, a full disk): writes
report it and readers see an empty spool.
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from otel_basic.redact import make_private_dir

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
class WriteResult:
    """A spool write: ``ok`` when the batch is on disk; ``evicted`` spans of older batches were
    removed to stay under the size cap; ``reason`` says why a write failed (never a secret)."""

    ok: bool
    evicted: int = 0
    reason: str | None = None
    name: str | None = None


class ClaimedBatch:
    """A spooled batch taken out for one replay attempt; exactly one of :meth:`done`,
    :meth:`release` or :meth:`reject` must follow (a crash leaves it to :meth:`Spool.recover_claims`)."""

    def __init__(self, spool: Spool, original: Path, claimed: Path, data: bytes) -> None:
        self._spool = spool
        self._original = original
        self._claimed = claimed
        self.data = data
        self.spans = _span_count(original)
        self.mask_level = mask_level_of(original)

    def done(self) -> None:
        """Delivered (or settled elsewhere): remove it."""
        with contextlib.suppress(OSError):
            self._claimed.unlink()

    def release(self) -> None:
        """Not sent: put it back under its own name, so the order is kept."""
        try:
            os.rename(self._claimed, self._original)
        except OSError:
            _log.debug("could not put back %s", self._original.name, exc_info=True)

    def reject(self, reason: str) -> None:
        self._spool.reject(self.data, self.spans, reason, self.mask_level)
        self.done()


MASK_LEVELS = ("off", "detectors", "hide")


def mask_level_of(path: Path) -> str:
    """The masking level in a batch's name; "off" when the name has none (assume the weakest)."""
    parts = path.name.split(_SUFFIX)[0].split("-")
    return parts[3] if len(parts) >= 5 and parts[3] in MASK_LEVELS else "off"


def _unclaimed(name: str) -> Path:
    """The batch's own name under a claimed one (``.{name}.claimed-{pid}-{who}``)."""
    return Path(name.lstrip(".").split(".claimed-")[0])


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
        self._lock = threading.RLock()
        self.spooled = 0
        self.evicted = 0
        self.write_errors = 0

    def __repr__(self) -> str:
        return f"Spool(dir={str(self.dir)!r})"

    def spooled_total(self) -> int:
        return self.spooled

    # --- writing -----------------------------------------------------------------------------

    def _ensure(self, directory: Path) -> None:
        make_private_dir(directory)
        if not _trusted(directory):
            raise PermissionError(f"{directory} belongs to another user or others can write to it")

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

    def _name(self, spans: int, mask_level: str) -> str:
        return f"{time.time_ns()}-{os.getpid()}-{next(_seq)}-{mask_level}-n{spans}{_SUFFIX}"

    def write(self, request: bytes, spans: int, mask_level: str, *, held: bool = False) -> WriteResult:
        """Keep one batch (masked at ``mask_level``), evicting the oldest batches beyond the size cap.

        ``held``: written already claimed by this process, so no replay takes it while the process lives
        (an exit drain's copy of a batch whose request is still out: if that request is answered, the
        copy is withdrawn; if the process dies first, :meth:`recover_claims` of the next one frees it)."""
        name = self._name(spans, mask_level)
        if held:
            name = f".{name}.claimed-{os.getpid()}-held"
        try:
            with self._lock:
                path = self._write_file(self.dir, name, request)
                self.spooled += spans
                evicted = self._evict()
            return WriteResult(True, evicted, name=path.name)
        except OSError as exc:
            self.write_errors += spans
            reason = f"could not write to the spool: {exc.strerror or type(exc).__name__}"
            _log.warning("otel-basic: %s (%s)", reason, self.dir)
            return WriteResult(False, 0, reason)

    def reject(self, request: bytes, spans: int, reason: str, mask_level: str) -> str | None:
        """Keep a batch the endpoint refused for good, with the reason, out of the replay path.
        Returns its name relative to the spool directory, or None if the disk refused."""
        try:
            with self._lock:
                path = self._write_file(self.rejected_dir, self._name(spans, mask_level), request)
                self._write_file(
                    self.rejected_dir, path.name + ".reason", json.dumps({"reason": reason}).encode()
                )
            return f"{self.rejected_dir.name}/{path.name}"
        except OSError as exc:
            _log.warning(
                "otel-basic: could not keep rejected spans in %s: %s", self.rejected_dir, exc.strerror
            )
            return None

    def _files(self) -> list[Path]:
        if not _trusted(self.dir):  # another user's (or a world-writable) directory: never replay from it
            return []
        try:
            return sorted(
                p for p in self.dir.iterdir() if p.name.endswith(_SUFFIX) and not p.name.startswith(".")
            )
        except OSError:  # missing, not a directory, no permission: nothing to read
            return []

    def _evict(self) -> int:
        """Remove the oldest batches beyond the cap; returns the spans removed (they are gone)."""
        files = self._files()
        sizes: dict[Path, int] = {}
        for p in files:
            with contextlib.suppress(OSError):
                sizes[p] = p.stat().st_size
        total = sum(sizes.values())
        evicted = 0
        for path in files[:-1]:  # never the batch just written
            if total <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                total -= sizes.get(path, 0)
                evicted += _span_count(path)
        if evicted:
            self.evicted += evicted
            _log.warning(
                "otel-basic: spool over %d MB: evicted the oldest %d spans; %d evicted so far",
                self.max_bytes // (1024 * 1024),
                evicted,
                self.evicted,
            )
        return evicted

    # --- reading -----------------------------------------------------------------------------

    def state(self) -> SpoolState:
        files = self._files()
        rejected = []
        with contextlib.suppress(OSError):
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
            bytes=sum(_size(p) for p in files),
            rejected_batches=len(rejected),
            rejected_spans=sum(_span_count(p) for p in rejected),
            rejected_reasons=reasons,
            oldest_age=oldest,
        )

    def pending(self) -> bool:
        return bool(self._files())

    def waiting_spans(self) -> int:
        """Spans in batches not yet delivered: waiting, or claimed by a replay in progress."""
        try:
            names = [p.name for p in self.dir.iterdir() if _SUFFIX in p.name and not p.name.endswith(".tmp")]
        except OSError:
            return 0
        return sum(_span_count(_unclaimed(name)) for name in names)

    def held_here(self) -> int:
        """Spans in copies this process holds (:meth:`write` ``held``) while their requests are out."""
        mark = f".claimed-{os.getpid()}-held"
        try:
            names = [p.name for p in self.dir.iterdir() if p.name.endswith(mark)]
        except OSError:
            return 0
        return sum(_span_count(_unclaimed(name)) for name in names)

    def withdraw(self, names: Iterable[str]) -> int:
        """Delete batches by the names :meth:`write` and :meth:`reject` gave (not claimed ones);
        returns their spans."""
        withdrawn = 0
        for name in names:
            path = self.dir / name
            try:
                path.unlink()
            except OSError:
                continue
            with contextlib.suppress(OSError):
                path.with_name(path.name + ".reason").unlink()
            withdrawn += _span_count(path)
        return withdrawn

    def reopen(self) -> None:
        """After ``fork()``: the parent's lock may have been held by one of its threads."""
        self._lock = threading.RLock()

    def _claim(self, path: Path) -> Path | None:
        claimed = path.with_name(f".{path.name}.claimed-{os.getpid()}-{threading.get_ident()}")
        try:
            os.rename(path, claimed)
        except OSError:
            return None  # someone else is sending it (or the directory went away)
        return claimed

    def recover_claims(self) -> None:
        """Put back batches claimed by processes that died mid-replay."""
        with contextlib.suppress(OSError):
            for path in self.dir.iterdir():
                if ".claimed-" not in path.name:
                    continue
                try:
                    pid = int(path.name.rsplit(".claimed-", 1)[1].split("-")[0])
                except ValueError:
                    continue
                if pid != os.getpid() and not _alive(pid):
                    with contextlib.suppress(OSError):
                        os.rename(path, self.dir / path.name[1:].rsplit(".claimed-", 1)[0])

    def claim(
        self, *, max_batches: int | None = None, until: Callable[[], float] | None = None
    ) -> Iterator[ClaimedBatch]:
        """Yield spooled batches oldest first, each claimed for this process until settled; none is
        claimed at or after ``until()`` (asked before each batch: a flush may begin meanwhile)."""
        for index, path in enumerate(self._files()):
            if (until is not None and time.monotonic() >= until()) or (
                max_batches is not None and index >= max_batches
            ):
                return
            claimed = self._claim(path)
            if claimed is None:
                continue
            try:
                data = claimed.read_bytes()
            except OSError:
                with contextlib.suppress(OSError):
                    os.rename(claimed, path)
                continue
            yield ClaimedBatch(self, path, claimed, data)

    def iter_rejected(self) -> Iterator[tuple[Path, str]]:
        with contextlib.suppress(OSError):
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


def _trusted(directory: Path) -> bool:
    """Ours, and nobody else may write to it (a shared path must not let another user inject spans
    that we would replay under our credentials). A missing directory is trusted: we create it 0700."""
    try:
        st = directory.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
