#!/usr/bin/env bash
# Creates .venv (Python >= 3.11) and installs otel-basic with its dev tools, once.
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "otel-basic needs Python >= 3.11")'
  "$PY" -m venv .venv
fi
stamp=.venv/.otel-basic-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
