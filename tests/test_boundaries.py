"""One trace across process boundaries: an instrumented caller, the real server, the callback.

The caller is its own process with its own OpenTelemetry SDK (a plain ``TracerProvider`` exporting
to the same receiver) and an httpx client whose headers get ``traceparent``/``baggage`` from
``opentelemetry.propagate.inject``; the server is ``python -m basic.server``; the callback sink is
an HTTP endpoint in this process that records the headers it got. What is asserted is what
Langfuse shows (``otel_basic.testing.langfuse_view``) plus the parent links of the raw spans.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from basic.samples import sample_email
from otel_basic.testing import LangfuseReceiver, ReceivedSpan
from otel_basic.testing.langfuse_view import langfuse_view

from .conftest import PYTHON, subprocess_env
from .test_server import running_server

EMAIL_STEPS = ["triage_email", "execute_plan", "verify_response", "send_results"]

# The caller: another service, instrumented the ordinary way (its own SDK, its own exporter).
CALLER = r"""
import json, sys
import httpx
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

args = json.loads(sys.argv[1])
provider = TracerProvider(resource=Resource.create({"service.name": "caller-service"}))
exporter = OTLPSpanExporter(endpoint=args["traces_url"], headers={"Authorization": args["auth"]})
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("caller")
ctx = context.get_current()
for key, value in args.get("baggage", {}).items():
    ctx = baggage.set_baggage(key, value, ctx)
token = context.attach(ctx)
results = []
with tracer.start_as_current_span("caller.handle_ticket", kind=trace.SpanKind.CLIENT) as span:
    for body in args["bodies"]:
        headers = {}
        propagate.inject(headers)  # what opentelemetry-instrumentation-httpx does for each request
        response = httpx.post(args["url"], json=body, headers=headers, timeout=30)
        results.append({"status": response.status_code, "headers": dict(response.headers), "body": response.json()})
    sc = span.get_span_context()
context.detach(token)
provider.shutdown()
print(json.dumps({"trace_id": f"{sc.trace_id:032x}", "span_id": f"{sc.span_id:016x}", "results": results}))
"""


def call_as_instrumented_service(
    receiver: LangfuseReceiver, url: str, bodies: list[dict[str, Any]], baggage: dict[str, str] | None = None
) -> dict[str, Any]:
    args = {
        "traces_url": receiver.traces_url,
        "auth": receiver.auth_header,
        "url": url,
        "bodies": bodies,
        "baggage": baggage or {},
    }
    done = subprocess.run(
        [PYTHON, "-c", CALLER, json.dumps(args)], env=subprocess_env(), capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


@contextmanager
def callback_sink() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """An HTTP endpoint for the email workflow's callback; yields its URL and the headers of each POST."""
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _by_name(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{name}: {len(found)} spans in {sorted(s.name for s in spans)}"
    return found[0]


def _ids(header: str) -> tuple[str, str]:
    """(trace id, span id) of a ``traceparent``/``traceresponse`` value; checks the version and flags."""
    version, trace_id, span_id, flags = header.split("-")
    assert version == "00" and int(flags, 16) & 1, header  # sampled
    return trace_id, span_id


# ------------------------------------------------------------------------------------ tests


@pytest.mark.slow
def test_the_callers_trace_holds_the_run_its_steps_and_the_callback(tmp_path: Path) -> None:
    email = sample_email("question")
    email["thread_id"] = "thread-boundary-1"
    with (
        LangfuseReceiver() as receiver,
        callback_sink() as (hook, hook_requests),
        running_server(tmp_path, receiver) as server,
    ):
        body = {"start_event": {"email_data": email, "callback": hook}}
        caller = call_as_instrumented_service(receiver, server.url + "/workflows/email/run", [body])
        assert server.stop(signal.SIGTERM) == 0, server.logs()

    trace_id, caller_span_id = caller["trace_id"], caller["span_id"]
    [result] = caller["results"]
    assert result["status"] == 200, result
    spans = receiver.traces()[trace_id]
    assert {s.trace_id for s in receiver.spans if s.name.startswith("EmailWorkflow.")} == {trace_id}, "one trace"

    # The caller's span is the root; the run is its child; every step is the run's child.
    caller_span = _by_name(spans, "caller.handle_ticket")
    assert caller_span.parent_span_id is None and caller_span.resource["service.name"] == "caller-service"
    run = _by_name(spans, "EmailWorkflow.run")
    assert run.parent_span_id == caller_span_id
    for step in EMAIL_STEPS:
        assert _by_name(spans, f"EmailWorkflow.{step}").parent_span_id == run.span_id
    ids = {s.span_id for s in spans}
    assert all(s.parent_span_id in ids for s in spans if s is not caller_span), "no orphan"

    # The response says which trace (and which span) the run is.
    headers = result["headers"]
    assert headers["x-trace-id"] == trace_id
    assert _ids(headers["traceresponse"]) == (trace_id, run.span_id)
    assert headers["x-langfuse-trace-url"] == f"{receiver.base_url}/trace/{trace_id}"
    assert run.attributes["llamaindex.handler_id"] == result["body"]["handler_id"]  # WorkflowServer's ids
    assert run.attributes["llamaindex.run_id"] == result["body"]["run_id"]

    # The callback got the delivery span's traceparent: the receiving service can join the trace.
    delivery = _by_name(spans, "deliver_result")
    assert [_ids(h["traceparent"]) for h in hook_requests] == [(trace_id, delivery.span_id)]
    assert all("baggage" not in h for h in hook_requests), "no baggage to a callback URL"

    # What Langfuse shows: the caller's root span does not take over the trace's name/input/output.
    shown = langfuse_view(receiver.spans).traces[trace_id]
    assert shown.name == "EmailWorkflow"
    assert isinstance(shown.input, dict) and shown.input["email_data"]["subject"] == email["subject"]
    assert isinstance(shown.output, dict) and shown.output["category"] == "question"
    assert shown.output["delivery"]["status"] == "delivered"
    assert shown.session_id == "thread-boundary-1"
    assert shown.user_id == run.attributes["user.id"]  # the sender, masked to a stable token
    assert shown.user_id and email["sender"] not in shown.user_id


@pytest.mark.slow
def test_baggage_names_session_and_user_and_a_request_without_traceparent_starts_a_trace(tmp_path: Path) -> None:
    with LangfuseReceiver() as receiver, running_server(tmp_path, receiver) as server:
        caller = call_as_instrumented_service(
            receiver,
            server.url + "/workflows/hello/run",
            [{"start_event": {"name": "Grace"}}],
            baggage={"langfuse_session_id": "chat-42", "user.id": "u-7", "unrelated": "x"},
        )
        plain = httpx.post(server.url + "/workflows/hello/run", json={"start_event": {"name": "Ada"}}, timeout=30)
        bad = httpx.post(
            server.url + "/workflows/hello/run",
            json={"start_event": {"name": "Bob"}},
            headers={"traceparent": "00-00000000000000000000000000000000-0000000000000000-01"},
            timeout=30,
        )
        unsampled = httpx.post(  # the caller decided not to record this trace: neither do we
            server.url + "/workflows/hello/run",
            json={"start_event": {"name": "Eve"}},
            headers={"traceparent": "00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-00"},
            timeout=30,
        )
        assert server.stop(signal.SIGTERM) == 0, server.logs()
    assert unsampled.status_code == 200 and unsampled.json()["result"]["value"]["result"] == "Hello, Eve!"
    assert "x-trace-id" not in unsampled.headers, "no id of a trace that will not exist"
    assert unsampled.headers["traceresponse"].endswith("-00")
    assert "5b8aa5a2d2c872e8321cf37308d69df2" not in receiver.traces()

    view = langfuse_view(receiver.spans)
    shown = view.traces[caller["trace_id"]]
    assert shown.name == "HelloWorkflow" and shown.output == "Hello, Grace!"
    assert (shown.session_id, shown.user_id) == ("chat-42", "u-7")
    run = _by_name(receiver.traces()[caller["trace_id"]], "HelloWorkflow.run")
    assert run.parent_span_id == caller["span_id"]
    assert "langfuse_session_id" not in json.dumps(run.attributes), "the entry became session.id, not metadata"

    for response, name in ((plain, "Ada"), (bad, "Bob")):  # no (valid) traceparent: a new trace, its own root
        assert response.status_code == 200, response.text
        trace_id = response.headers["x-trace-id"]
        assert trace_id != caller["trace_id"] and len(trace_id) == 32
        root = _by_name(receiver.traces()[trace_id], "HelloWorkflow.run")
        assert root.parent_span_id is None
        assert _ids(response.headers["traceresponse"]) == (trace_id, root.span_id)
        assert view.traces[trace_id].output == f"Hello, {name}!"
        assert view.traces[trace_id].session_id is None


@pytest.mark.slow
def test_run_nowait_reports_the_trace_before_the_run_ends(tmp_path: Path) -> None:
    with LangfuseReceiver() as receiver, running_server(tmp_path, receiver) as server:
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        response = httpx.post(
            server.url + "/workflows/hello/run-nowait",
            json={"start_event": {"name": "later"}},
            headers={"traceparent": traceparent},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        handler_id = response.json()["handler_id"]
        result = httpx.get(f"{server.url}/results/{handler_id}", timeout=30)
        for _ in range(100):
            if result.status_code == 200 and result.json().get("status") == "completed":
                break
            result = httpx.get(f"{server.url}/results/{handler_id}", timeout=30)
        assert server.stop(signal.SIGTERM) == 0, server.logs()
    assert response.headers["x-trace-id"] == "0af7651916cd43dd8448eb211c80319c"
    run = _by_name(receiver.traces()["0af7651916cd43dd8448eb211c80319c"], "HelloWorkflow.run")
    assert run.parent_span_id == "b7ad6b7169203331"
    assert response.headers["traceresponse"] == f"00-0af7651916cd43dd8448eb211c80319c-{run.span_id}-01"  # flags kept
    shown = langfuse_view(receiver.spans).traces["0af7651916cd43dd8448eb211c80319c"]
    # The caller's span never reached this receiver: the run's trace-level attributes still name it.
    assert (shown.name, shown.input, shown.output) == ("HelloWorkflow", {"name": "later"}, "Hello, later!")


# ----------------------------------------------------------------------------- unit tests


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"traceparent": "garbage"},
        {"traceparent": "00-" + "f" * 32 + "-" + "0" * 16 + "-01"},  # zero span id: invalid
        {"traceparent": "ff-" + "a" * 32 + "-" + "b" * 16 + "-01"},  # version ff: invalid
        {"traceparent": "00-" + "a" * 5000, "tracestate": "x" * 100_000, "baggage": "k=" + "v" * 100_000},
        {"baggage": "session.id=" + "s" * 201},  # too long for an id: ignored
        {"baggage": "user.id=%ZZ,session.id=;;;,=x"},
        {"baggage": "user.id=a%0Ab,session.id=%07"},  # not printable: ignored
    ],
)
def test_a_bad_or_missing_traceparent_means_a_new_trace_never_an_error(headers: dict[str, str]) -> None:
    from otel_basic.propagation import extract_headers

    caller = extract_headers(headers)
    assert caller.parent is None
    for value in (caller.session_id, caller.user_id):
        assert value is None or (len(value) <= 200 and value.isprintable())


def test_headers_are_read_case_insensitively_from_asgi_byte_pairs_and_no_baggage_or_tracestate_is_kept() -> None:
    from opentelemetry import baggage, propagate

    from otel_basic.propagation import extract_headers, inject_headers, traceresponse

    caller = extract_headers(
        [
            (b"TraceParent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            (b"tracestate", b"vendor=1"),
            (b"baggage", b"langfuse_session_id=s-1"),
            (b"baggage", b"langfuse_user_id=u-1,other=kept"),
        ]
    )
    assert caller.parent is not None and f"{caller.parent.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert (caller.session_id, caller.user_id) == ("s-1", "u-1")
    assert baggage.get_all(caller.context) == {}, "ids became run attributes; the rest of the baggage is dropped"
    assert len(caller.parent.trace_state) == 0, "the caller's tracestate is not kept"
    assert traceresponse(caller.parent) == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    # Handing a context on: traceparent only; tracestate and baggage only when asked for.
    theirs = propagate.extract(
        {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "tracestate": "v=1", "baggage": "k=v"}
    )
    assert inject_headers({"x": "1"}, theirs) == {"x": "1", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    assert inject_headers(context=theirs, with_baggage=True) == {
        "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        "tracestate": "v=1",
        "baggage": "k=v",
    }
    assert inject_headers({"x": "1"}) == {"x": "1"}, "no current span: nothing added"
