#!/usr/bin/env bash
# The whole check: install, lint, type-check, run every test (they start their own servers).
# With CI=true (or --phoenix) it also installs Arize Phoenix into a separate venv and runs the
# Phoenix end-to-end test (850 MB, so not by default on a laptop).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check src tests bench
.venv/bin/mypy
# One process per core, at most 4 (the tests start their own servers and child processes); worksteal
# balances the few long tests (the wheel build, the fault matrix, the bench smoke runs). `-n 0`: serial.
.venv/bin/pytest -m "not phoenix" -q -n auto --maxprocesses 4 --dist worksteal "$@"
if [ "${CI:-}" = "true" ] || [ "${OTEL_BASIC_PHOENIX:-}" = "1" ]; then
  scripts/phoenix-test.sh
fi
