"""Zero-code setup: a real ``opentelemetry-instrument`` run with otel-basic as the configurator."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from otel_basic.testing import LangfuseReceiver

from .conftest import PYTHON, SECRET, subprocess_env

INSTRUMENT = str(Path(PYTHON).with_name("opentelemetry-instrument"))

APP = textwrap.dedent(
    """
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.llms import MockLLM
    from opentelemetry import trace

    # The app has no tracing code at all. LlamaIndex must be instrumented exactly once.
    handlers = [type(h).__name__ for h in get_dispatcher().span_handlers]
    print("span handlers:", handlers.count("_SpanHandler"))
    with trace.get_tracer("app").start_as_current_span("app.request"):
        MockLLM(max_tokens=8).complete("Please reply to ada.lovelace@example.com")
    print("app done")  # no flush: the exit flush must deliver
    """
)


def test_opentelemetry_instrument_gives_otel_basics_pipeline(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    with LangfuseReceiver() as receiver:
        env = subprocess_env(**receiver.env(), OTEL_PYTHON_CONFIGURATOR="otel_basic", OTEL_BSP_SCHEDULE_DELAY="600000")
        proc = subprocess.run(
            [INSTRUMENT, PYTHON, str(app)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
        )
        assert proc.returncode == 0, proc.stderr
        assert "app done" in proc.stdout and "span handlers: 1" in proc.stdout, proc.stdout
        assert "Traceback" not in proc.stderr and SECRET not in proc.stderr + proc.stdout
        names = receiver.span_names()
        # the Langfuse route (Basic auth to /api/public/otel), delivered by the exit flush
        assert "app.request" in names, names
        llm = [s for s in receiver.spans if s.attributes.get("openinference.span.kind") == "LLM"]
        assert len(llm) == 1, [s.name for s in receiver.spans]  # instrumented once, not twice
        raw = b"".join(r.body for r in receiver.trace_requests)
        assert b"ada.lovelace@example.com" not in raw  # masked before export
        assert all(r.path.startswith("/api/public/otel") for r in receiver.trace_requests)
