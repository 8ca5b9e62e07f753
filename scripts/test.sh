#!/usr/bin/env bash
# The whole check: install, lint, type-check, run every test (they start their own servers).
# With CI=true (or --phoenix) it also installs Arize Phoenix into a separate venv and runs the
# Phoenix end-to-end test (850 MB, so not by default on a laptop).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/pytest -m "not phoenix" -q "$@"
if [ "${CI:-}" = "true" ] || [ "${OTEL_BASIC_PHOENIX:-}" = "1" ]; then
  scripts/phoenix-test.sh
fi
