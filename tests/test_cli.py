"""The commands as users run them: the app's demo (offline and to Langfuse), `otel-basic` replay, trees."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from rich.console import Console

from otel_basic.otlp_decode import ReceivedSpan, decode_otlp_json_lines
from otel_basic.pipeline import build_spool
from otel_basic.road import encode
from otel_basic.settings import load_settings
from otel_basic.spool import Spool
from otel_basic.testing import LangfuseReceiver
from otel_basic.trace_tree import group_traces, render_trace, trace_stats
from tests.conftest import PYTHON, subprocess_env

OTEL_BASIC = str(Path(PYTHON).with_name("otel-basic"))
STEPS = (
    "EmailWorkflow.run",
    "EmailWorkflow.triage_email",
    "EmailWorkflow.execute_plan",
    "EmailWorkflow.verify_response",
    "EmailWorkflow.send_results",
)


def _run(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OTEL_BASIC, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def _demo(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "basic.demo", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def _trace_ids(text: str) -> set[str]:
    return set(re.findall(r"trace ([0-9a-f]{32})", text))


# --- demo ------------------------------------------------------------------------------------


def test_demo_offline_writes_the_file_and_prints_the_trees(tmp_path: Path) -> None:
    proc = _demo("--count", "2", env=subprocess_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for name in STEPS:
        assert name in out
    assert "OfflineLLM.acomplete  LLM" in out and "TOOL" in out and "tokens " in out
    path = tmp_path / "otel-basic-traces.jsonl"
    assert str(path) in out
    spans = decode_otlp_json_lines(path)
    assert {s.name for s in spans} >= set(STEPS)
    traces = {s.trace_id for s in spans}
    assert len(traces) == 2
    assert _trace_ids(out) == traces  # the trees are the file's traces
    assert "2/2 completed" in out and "rejected=0 dropped=0" in out
    assert "\x1b[" not in out  # no colour codes when piped


def test_demo_out_option_and_python_m(tmp_path: Path) -> None:
    out_file = tmp_path / "sub" / "spans.jsonl"
    proc = subprocess.run(
        [PYTHON, "-m", "basic.demo", "--count", "1", "--quiet", "--out", str(out_file)],
        env=subprocess_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "run 1/1: question" in proc.stdout
    assert str(out_file) in proc.stdout
    assert "└──" not in proc.stdout  # --quiet: no trees
    assert {s.name for s in decode_otlp_json_lines(out_file)} >= set(STEPS)


def test_demo_to_langfuse_delivers_and_prints_trace_urls(tmp_path: Path) -> None:
    with LangfuseReceiver() as receiver:
        proc = _demo("--count", "2", env=subprocess_env(**receiver.env()), cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        spans = receiver.spans
    assert spans, "nothing arrived at the receiver"
    received = {s.trace_id for s in spans}
    assert len(received) == 2
    assert _trace_ids(proc.stdout) == received
    for trace_id in received:
        assert f"{receiver.base_url}/project/test-project/traces/{trace_id}" in proc.stdout
    assert {s.name for s in spans} >= set(STEPS)
    assert not (tmp_path / "otel-basic-traces.jsonl").exists()  # no local file on the Langfuse route
    assert "sk-lf-test" not in proc.stdout + proc.stderr


# --- replay ----------------------------------------------------------------------------------


def _spans(names: list[str]) -> list[ReadableSpan]:
    tracer = TracerProvider().get_tracer("tests.cli")
    spans: list[ReadableSpan] = []
    for name in names:
        span = tracer.start_span(name)
        span.end()
        spans.append(span)  # type: ignore[arg-type]
    return spans


def _spool(env: dict[str, str]) -> Spool:
    spool = build_spool(load_settings(env))
    assert spool is not None
    return spool


def test_replay_sends_the_spool_exactly_once() -> None:
    with LangfuseReceiver() as receiver:
        env = subprocess_env(**receiver.env())
        spool = _spool(env)
        spool.write(encode(_spans(["a-0", "a-1"])).message.SerializeToString(), 2, "detectors")
        spool.write(encode(_spans(["b-0", "b-1", "b-2"])).message.SerializeToString(), 3, "detectors")

        proc = _run("replay", env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "sent      │ 5 spans" in proc.stdout
        assert sorted(receiver.span_names()) == ["a-0", "a-1", "b-0", "b-1", "b-2"]
        assert spool.state().batches == 0

        again = _run("replay", env=env)
        assert again.returncode == 0
        assert "nothing to replay" in again.stdout
        assert len(receiver.spans) == 5


def test_replay_keeps_the_spool_when_the_endpoint_is_down() -> None:
    with LangfuseReceiver() as receiver:
        env = subprocess_env(**receiver.env(), OTEL_EXPORTER_OTLP_TIMEOUT="1000")
    # the receiver is stopped now: connection refused
    spool = _spool(env)
    spool.write(encode(_spans(["c-0"])).message.SerializeToString(), 1, "detectors")
    proc = _run("replay", env=env)
    assert proc.returncode == 1
    assert "1 batch, 1 span" in proc.stdout  # remaining
    assert spool.state().batches == 1


def test_replay_rejected_after_the_fix() -> None:
    with LangfuseReceiver() as receiver:
        env = subprocess_env(**receiver.env())
        spool = _spool(env)
        request = encode(_spans(["r-0", "r-1"])).message.SerializeToString()
        spool.reject(request, 2, "HTTP 401 from the endpoint", "detectors")

        plain = _run("replay", env=env)
        assert plain.returncode == 0
        assert "replay --rejected" in plain.stdout
        assert receiver.spans == []

        proc = _run("replay", "--rejected", env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert sorted(receiver.span_names()) == ["r-0", "r-1"]
        state = spool.state()
        assert state.batches == 0 and state.rejected_batches == 0


def test_replay_without_destination_says_so() -> None:
    proc = _run("replay", env=subprocess_env())
    assert proc.returncode == 1
    assert "nothing to replay to" in proc.stdout


# --- trees -----------------------------------------------------------------------------------


def _span(name: str, span_id: str, parent: str | None, start: int, end: int, **kw: object) -> ReceivedSpan:
    return ReceivedSpan(
        name=name,
        trace_id="ab" * 16,
        span_id=span_id,
        parent_span_id=parent,
        kind="INTERNAL",
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        **kw,  # type: ignore[arg-type]
    )


def test_tree_shows_kinds_tokens_and_errors() -> None:
    spans = [
        _span("run", "1" * 16, None, 0, 30_000_000, attributes={"openinference.span.kind": "CHAIN"}),
        _span(
            "llm",
            "2" * 16,
            "1" * 16,
            1_000_000,
            3_000_000,
            attributes={
                "openinference.span.kind": "LLM",
                "llm.token_count.prompt": 10,
                "llm.token_count.completion": 5,
            },
        ),
        _span(
            "deliver_result",
            "3" * 16,
            "1" * 16,
            4_000_000,
            5_000_000,
            attributes={"openinference.span.kind": "TOOL"},
            status_code="ERROR",
            status_message="HTTP 500 from http://cb/\nmore",
        ),
        _span("orphan", "4" * 16, "9" * 16, 6_000_000, 7_000_000),
    ]
    console = Console(record=True, width=200, color_system=None)
    console.print(render_trace(spans))
    text = console.export_text()
    assert "run  CHAIN  30 ms" in text
    assert "llm  LLM  2.0 ms  tokens 10+5=15" in text
    assert "deliver_result  TOOL  1.0 ms  ✗ ERROR: HTTP 500 from http://cb/" in text
    assert "orphan  internal" in text  # parent not exported: shown at the top, not lost
    stats = trace_stats(spans)
    assert (stats.spans, stats.errors, stats.total_tokens, stats.root_name) == (4, 1, 15, "run")
    assert list(group_traces(spans)) == ["ab" * 16]


def test_collector_command_is_wired() -> None:
    proc = _run("collector", "--help", env=subprocess_env())
    assert proc.returncode == 0
    assert "--http-port" in proc.stdout and "--grpc-port" in proc.stdout


def test_help_lists_doctor_first_and_the_layer_never_imports_the_app() -> None:
    proc = _run("--help", env=subprocess_env())
    commands = [line.split()[0] for line in proc.stdout.split("Commands:")[1].strip().splitlines()]
    assert commands == ["doctor", "replay", "collector"]
    code = (
        "import sys, pkgutil, importlib, otel_basic\n"
        "for m in pkgutil.walk_packages(otel_basic.__path__, 'otel_basic.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'basic' or n.startswith('basic.'))\n"
        "assert not bad, bad\n"
    )
    check = subprocess.run([PYTHON, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr


def test_replay_output_never_shows_credentials_in_the_endpoint_url() -> None:
    password = "pw-in-url-98765"
    with LangfuseReceiver() as receiver:
        port = receiver.port
    # the receiver is stopped now: connection refused, with the credentials in the URL
    env = subprocess_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://user:{password}@127.0.0.1:{port}", OTEL_EXPORTER_OTLP_TIMEOUT="1000"
    )
    spool = _spool(env)
    spool.write(encode(_spans(["d-0"])).message.SerializeToString(), 1, "detectors")
    proc = _run("replay", env=env)
    assert proc.returncode == 1
    assert password not in proc.stdout + proc.stderr
    assert "****@127.0.0.1" in proc.stdout
