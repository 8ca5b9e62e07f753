"""``python -m otel_basic settings --markdown``: print the README's configuration table.

Generated from :data:`otel_basic.settings.TABLE`, the one declaration of every setting;
``tests/test_settings.py`` checks that the README contains exactly this output.
"""

from __future__ import annotations

import sys

from otel_basic.settings import markdown_table


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["settings", "--markdown"]:
        print("usage: python -m otel_basic settings --markdown", file=sys.stderr)
        return 2
    sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
