#!/usr/bin/env bash
# The main job: the email-triage workflow on bundled sample emails, fully offline by default.
# Spans go to ./otel-basic-traces.jsonl unless LANGFUSE_* or OTEL_EXPORTER_OTLP_ENDPOINT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m basic.demo "$@"
