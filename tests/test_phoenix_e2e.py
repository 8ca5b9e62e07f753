"""A second, independent proof that our spans are valid OTLP: Arize Phoenix (an OpenInference-native
backend) receives one email-workflow run through rotel and returns the same span tree from its REST API.

Path: app (``otel_basic.configure(endpoint=collector, protocol="http/protobuf")``) -> rotel-agent ->
Phoenix ``POST /v1/traces``. The project comes from the resource attribute
``openinference.project.name``. An in-memory exporter on the same provider keeps what the app emitted.

Phoenix is heavy (an ~850 MB venv, ~12 s to start), so this module is marked ``phoenix`` and run by
``scripts/phoenix-test.sh``, which installs it into ``.venv-phoenix`` and sets ``PHOENIX_BIN``. Without
``PHOENIX_BIN`` the test is skipped (``PHOENIX_REQUIRED=1`` turns that skip into a failure).

Phoenix's JSON this test relies on (``GET /v1/projects/{name}/spans``, arize-phoenix 20.26.1)::

    {"data": [{"name": str, "span_kind": "LLM" | "CHAIN" | ... | "UNKNOWN",
               "context": {"trace_id": 32 hex, "span_id": 16 hex},
               "parent_id": 16 hex | null,
               "attributes": {flattened dotted keys, e.g. "llm.token_count.total": int}, ...}],
     "next_cursor": str | null}

Binding: ``PHOENIX_HOST=127.0.0.1`` covers HTTP only. Phoenix 20.26.1 binds its OTLP gRPC server to
``[::]`` unconditionally (``phoenix/server/grpc_server.py``: ``add_insecure_port(f"[::]:{port}")``);
no setting moves it to loopback, and ``--read-only`` (the only switch that skips gRPC) also disables
the REST API and OTLP/HTTP ingest. So gRPC gets an ephemeral port and lives only for this test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_basic
from basic.email_workflow import email_workflow
from basic.samples import SAMPLE_EMAILS
from otel_basic.collector import RotelCollector, RotelNotFoundError, find_rotel_agent, free_port

pytestmark = pytest.mark.phoenix

PROJECT = "otel-basic-e2e"
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0   # /healthz; measured 12-26 s (the first start also compiles .pyc files)
ARRIVAL_TIMEOUT = 30.0   # after flush, until Phoenix's REST API returns every span
STOP_GRACE = 10.0
TOKEN_TOTAL = "llm.token_count.total"


# ---------------------------------------------------------------------- Phoenix process


def _not_available(reason: str) -> NoReturn:
    if os.environ.get("PHOENIX_REQUIRED") == "1":
        pytest.fail(f"{reason} (PHOENIX_REQUIRED=1)", pytrace=False)
    pytest.skip(reason)


def _phoenix_bin() -> Path:
    value = os.environ.get("PHOENIX_BIN")
    if not value:
        _not_available("PHOENIX_BIN is not set: run scripts/phoenix-test.sh (installs arize-phoenix separately)")
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        _not_available(f"PHOENIX_BIN={value} is not an executable file: run scripts/phoenix-test.sh")
    return path


@dataclass
class Phoenix:
    proc: subprocess.Popen[bytes]
    port: int
    grpc_port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")[-chars:]
        except OSError:
            return ""


def _phoenix_env(working_dir: Path, port: int, grpc_port: int) -> dict[str, str]:
    # No inherited PHOENIX_* (e.g. a developer's PHOENIX_SQL_DATABASE_URL) and no OTEL_* settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
    env.update(
        PHOENIX_WORKING_DIR=str(working_dir),          # its own SQLite database, deleted with tmp_path
        PHOENIX_HOST=HOST,
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(grpc_port),              # binds all interfaces regardless: see the docstring
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",      # no public-internet requests of its own
        PHOENIX_DISABLE_AGENT_ASSISTANT="true",        # not needed; it would enable server-side tools
        PHOENIX_LOG_MIGRATIONS="false",
        PYTHONUNBUFFERED="1",
    )
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group we created, wait, then SIGKILL it; never signals a reaped pid."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_healthy(phoenix: Phoenix, deadline: float) -> bool:
    """True once /healthz answers 200; False if the process exited first. Fails at the deadline."""
    with httpx.Client(timeout=2.0) as client:
        while True:
            if phoenix.proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{phoenix.base_url}/healthz").status_code == 200:
                    return True
            if time.monotonic() >= deadline:
                pytest.fail(
                    f"Phoenix did not answer /healthz within {STARTUP_TIMEOUT:g}s; its log:\n{phoenix.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.25)


@pytest.fixture
def phoenix(tmp_path: Path) -> Iterator[Phoenix]:
    binary = _phoenix_bin()
    try:
        find_rotel_agent()
    except RotelNotFoundError as exc:
        _not_available(f"rotel-agent binary not available: {exc}")
    deadline = time.monotonic() + STARTUP_TIMEOUT
    for attempt in (1, 2):  # a port picked free can be taken before Phoenix binds it: retry once
        port = free_port(HOST)
        grpc_port = free_port(HOST)
        while grpc_port == port:
            grpc_port = free_port(HOST)
        work = tmp_path / f"phoenix-{attempt}"
        work.mkdir()
        log_path = tmp_path / f"phoenix-{attempt}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(binary), "serve"], env=_phoenix_env(work, port, grpc_port), cwd=work,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stopped as a whole, never by name
            )
        server = Phoenix(proc, port, grpc_port, log_path)
        try:
            if _wait_healthy(server, deadline):
                yield server
                return
        finally:
            _stop(proc)
        if attempt == 2:
            pytest.fail(f"Phoenix exited with code {proc.returncode} on start; its log:\n{server.log_tail()}",
                        pytrace=False)


# ---------------------------------------------------------------------- span trees


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    parent_id: str | None


def _hex_span(span_id: int) -> str:
    return format(span_id, "016x")


def _memory_tree(spans: tuple[ReadableSpan, ...]) -> tuple[dict[str, Node], set[str]]:
    """{span id: Node} and the set of trace ids, from what the app emitted."""
    nodes: dict[str, Node] = {}
    traces: set[str] = set()
    for span in spans:
        assert span.context is not None
        kind = str((span.attributes or {}).get("openinference.span.kind", "UNKNOWN"))
        parent = _hex_span(span.parent.span_id) if span.parent is not None else None
        nodes[_hex_span(span.context.span_id)] = Node(span.name, kind, parent)
        traces.add(format(span.context.trace_id, "032x"))
    return nodes, traces


def _phoenix_tree(spans: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Node], set[str]]:
    """The same from Phoenix's JSON (shape in the module docstring)."""
    nodes: dict[str, Node] = {}
    traces: set[str] = set()
    for span in spans:
        span_id = span["context"]["span_id"]
        assert span_id not in nodes, f"Phoenix returned span {span_id} twice"
        nodes[span_id] = Node(span["name"], span["span_kind"], span["parent_id"])
        traces.add(span["context"]["trace_id"])
    return nodes, traces


def _render(nodes: Mapping[str, Node]) -> list[str]:
    """The tree as indented "name [KIND]" lines, children sorted: readable in an assertion diff."""
    children: dict[str | None, list[str]] = {}
    for span_id, node in nodes.items():
        parent = node.parent_id if node.parent_id in nodes else None
        children.setdefault(parent, []).append(span_id)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span_id in sorted(children.get(parent, []), key=lambda s: (nodes[s].name, nodes[s].kind, s)):
            node = nodes[span_id]
            orphan = " (parent missing)" if depth == 0 and node.parent_id is not None else ""
            lines.append(f"{'  ' * depth}{node.name} [{node.kind}]{orphan}")
            walk(span_id, depth + 1)

    walk(None, 0)
    return lines


def _fetch_spans(client: httpx.Client, base_url: str, want: int) -> list[dict[str, Any]]:
    """Poll the project's spans until at least ``want`` arrived (404 until the project exists)."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    spans: list[dict[str, Any]] = []
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            response = client.get(f"{base_url}/v1/projects/{PROJECT}/spans", params={"limit": 1000})
        except httpx.HTTPError as exc:
            last = repr(exc)
        else:
            last = f"HTTP {response.status_code}"
            if response.status_code == 200:
                body = response.json()
                assert body["next_cursor"] is None, "more than 1000 spans: the project is not this test's alone"
                spans = body["data"]
                last += f", {len(spans)} spans"
                if len(spans) >= want:
                    return spans
        time.sleep(0.25)
    pytest.fail(f"Phoenix did not return {want} spans of project {PROJECT!r} within {ARRIVAL_TIMEOUT:g}s "
                f"(last: {last})", pytrace=False)


# ---------------------------------------------------------------------- the test


async def test_phoenix_returns_the_same_span_tree(phoenix: Phoenix) -> None:
    memory = InMemorySpanExporter()
    try:
        with RotelCollector(phoenix.base_url) as collector, httpx.Client(timeout=5.0) as client:
            tel = otel_basic.configure(
                endpoint=collector.http_endpoint, protocol="http/protobuf",
                spool_dir=None, install_signal_handlers=False,
                resource_attributes={"openinference.project.name": PROJECT},
            )
            assert tel.enabled, tel.settings.reason
            assert tel.provider is not None
            tel.provider.add_span_processor(SimpleSpanProcessor(memory))

            result = await email_workflow.run(email_data=SAMPLE_EMAILS[0])
            assert result is not None
            report = await otel_basic.aflush(timeout=10)
            assert report, report

            emitted = memory.get_finished_spans()
            assert emitted, "the workflow emitted no spans"
            received = _fetch_spans(client, phoenix.base_url, len(emitted))
            projects = client.get(f"{phoenix.base_url}/v1/projects").json()["data"]
    finally:
        otel_basic.reset()

    expected, expected_traces = _memory_tree(emitted)
    got, got_traces = _phoenix_tree(received)

    # Routed by the resource attribute to our project.
    assert PROJECT in {p["name"] for p in projects}

    # One trace, the same one.
    assert len(expected_traces) == 1, expected_traces
    assert got_traces == expected_traces

    # The same (name, span kind) pairs, counted; then the same tree, readable; then id for id.
    assert Counter((n.name, n.kind) for n in got.values()) == Counter((n.name, n.kind) for n in expected.values())
    assert _render(got) == _render(expected)
    assert got == expected

    roots = [n for n in got.values() if n.parent_id is None]
    assert [(n.name, n.kind) for n in roots] == [("EmailWorkflow.run", "CHAIN")]

    # LLM spans keep their token counts.
    emitted_tokens = {
        _hex_span(s.context.span_id): (s.attributes or {}).get(TOKEN_TOTAL) for s in emitted if s.context is not None
    }
    llm_spans = [s for s in received if s["span_kind"] == "LLM"]
    assert llm_spans, "no LLM span in the trace"
    for span in llm_spans:
        span_id = span["context"]["span_id"]
        total = span["attributes"].get(TOKEN_TOTAL)
        assert isinstance(total, int) and total > 0, (span["name"], span_id, sorted(span["attributes"]))
        assert total == emitted_tokens[span_id]
