"""``python -m otel_basic.testing``: run a stand-in Langfuse server until SIGTERM/SIGINT.

Prints one JSON line (``{"base_url": ..., "port": ...}``) once it listens, so a
parent process (or a human) knows where to point ``LANGFUSE_BASE_URL``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from otel_basic.otlp_decode import ReceivedSpan, spans_to_otlp_json
from otel_basic.testing.receiver import LangfuseReceiver


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m otel_basic.testing",
        description="Run a Langfuse-compatible OTLP receiver (for tests and manual checks).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--public-key", default="pk-lf-test", help="expected Langfuse public key")
    parser.add_argument("--secret-key", default="sk-lf-test", help="expected Langfuse secret key")
    parser.add_argument("--no-auth", action="store_true", help="accept requests without Basic auth")
    parser.add_argument(
        "--dump",
        type=Path,
        default=None,
        help="append each accepted span to FILE as one OTLP/JSON line (readable by decode_otlp_json_lines)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until a termination signal; return the process exit code."""
    args = _parse_args(argv)
    receiver = LangfuseReceiver(
        args.public_key,
        args.secret_key,
        host=args.host,
        port=args.port,
        require_auth=not args.no_auth,
    )
    if args.dump is not None:
        dump_path: Path = args.dump
        dump_lock = threading.Lock()

        def dump(spans: list[ReceivedSpan]) -> None:
            lines = "".join(json.dumps(spans_to_otlp_json([s]), separators=(",", ":")) + "\n" for s in spans)
            with dump_lock, dump_path.open("a", encoding="utf-8") as fh:
                fh.write(lines)

        receiver.add_span_listener(dump)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    receiver.start()
    try:
        info = {"base_url": receiver.base_url, "port": receiver.port, "traces_url": receiver.traces_url}
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.2):
            pass
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
