"""Entry point of the ``otel-basic`` console script: one clear line when the ``[cli]`` extra is missing."""

from __future__ import annotations

import sys

_CLI_PACKAGES = {"click", "rich"}


def main() -> None:
    try:
        # click and rich are an optional dependency (the [cli] extra): import them only here.
        from otel_basic.cli import main as cli_main
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in _CLI_PACKAGES:
            raise
        sys.exit(f"otel-basic: the command line needs {exc.name!r}: pip install 'otel-basic[cli]'")
    cli_main()


if __name__ == "__main__":
    main()
