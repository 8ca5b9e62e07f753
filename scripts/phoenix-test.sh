#!/usr/bin/env bash
# The Arize Phoenix end-to-end test (pytest marker "phoenix"): a workflow run goes
# app -> rotel -> Phoenix, and Phoenix's REST API must return the same span tree.
#
# Phoenix lives in its own venv, .venv-phoenix (about 850 MB, ~150 packages), so its dependency
# tree never touches .venv. It is installed once; later runs reuse it while the stamp file
# matches PHOENIX_VERSION. scripts/test.sh calls this when CI=true (or OTEL_BASIC_PHOENIX=1).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PHOENIX_VERSION=20.26.1   # verified with this project's test; bump deliberately
PY=${PYTHON:-python3}
VENV=.venv-phoenix
stamp=$VENV/.arize-phoenix-version

if [ ! -x .venv/bin/pytest ]; then
  scripts/bootstrap.sh
fi

if [ -x "$VENV/bin/phoenix" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$PHOENIX_VERSION" ]; then
  echo "phoenix-test: arize-phoenix $PHOENIX_VERSION already installed in $VENV"
else
  started=$SECONDS
  if [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
  fi
  rm -f "$stamp"
  echo "phoenix-test: installing arize-phoenix $PHOENIX_VERSION into $VENV (takes a minute or two)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "arize-phoenix==$PHOENIX_VERSION"
  # what pip resolved must be the pin (importing phoenix to check would cost ~12 s)
  "$VENV/bin/python" -c 'import importlib.metadata as m, sys; v = m.version("arize-phoenix"); sys.exit(0 if v == sys.argv[1] else f"arize-phoenix {v} installed, {sys.argv[1]} expected")' "$PHOENIX_VERSION"
  echo "$PHOENIX_VERSION" >"$stamp"
  echo "phoenix-test: installed in $((SECONDS - started)) s"
fi

# PHOENIX_REQUIRED=1: a missing binary fails the test instead of skipping it, so CI cannot pass
# without Phoenix actually having received the spans.
PHOENIX_BIN="$PWD/$VENV/bin/phoenix" PHOENIX_REQUIRED=1 \
  .venv/bin/pytest -m phoenix -q tests/test_phoenix_e2e.py "$@"
