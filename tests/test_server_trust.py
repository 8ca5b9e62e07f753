"""What an HTTP caller can and cannot make the server's runs say: the trust boundary of ``basic.server``.

A caller's ``baggage`` never reaches the run's context (the Langfuse SDK's span processor would
stamp ``langfuse_*`` entries on every span: environment, tags, metadata, trace name, ...); only
session and user ids are read from it. Its ``tracestate`` is dropped. ``traceparent`` is followed
unless ``BASIC_SERVER_TRUST_TRACEPARENT=false``. A run that is not recorded gets no trace id or
link in the response. Each test runs the real server (``python -m basic.server``) and asserts what
Langfuse would show (``otel_basic.testing.langfuse_view``) and what the receiver got.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from basic.samples import sample_email
from otel_basic.testing import LangfuseReceiver
from otel_basic.testing.langfuse_view import langfuse_view

from .test_boundaries import _by_name, callback_sink
from .test_server import running_server

HOSTILE_BAGGAGE = ",".join(
    [
        "langfuse_environment=production2",
        "langfuse_tags=%5B%22evil%22%5D",
        "langfuse_metadata_tenant=evilcorp",
        "langfuse_trace_name=EvilName",
        "langfuse.trace.name=EvilName2",
        "langfuse_version=9.9",
        "langfuse_release=evilrelease",
        "langfuse_public=true",
        "langfuse_user_id=attacker",
        "langfuse_session_id=chat-9",
    ]
)
TRACESTATE = "congo=leaktsx,rojo=00f067aa0ba902b7"


def _exported_trace_states(receiver: LangfuseReceiver) -> set[str]:
    states: set[str] = set()
    for request in receiver.requests:
        if not request.path.endswith("/traces"):
            continue
        parsed = ExportTraceServiceRequest()
        parsed.ParseFromString(request.body)
        for resource_spans in parsed.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                states.update(span.trace_state for span in scope_spans.spans)
    return states


@pytest.mark.slow
def test_a_caller_sets_only_session_and_user_never_tags_metadata_environment_or_name(tmp_path: Path) -> None:
    hostile_tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    email_tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with (
        LangfuseReceiver() as receiver,
        callback_sink() as (hook, hook_requests),
        running_server(tmp_path, receiver) as server,
    ):
        baseline = httpx.post(server.url + "/workflows/hello/run", json={"start_event": {"name": "Base"}}, timeout=30)
        hostile = httpx.post(
            server.url + "/workflows/hello/run",
            json={"start_event": {"name": "Ada"}},
            headers={"traceparent": hostile_tp, "tracestate": TRACESTATE, "baggage": HOSTILE_BAGGAGE},
            timeout=30,
        )
        bad_ids = httpx.post(  # a control character, an over-long id: ignored
            server.url + "/workflows/hello/run",
            json={"start_event": {"name": "Bob"}},
            headers={"baggage": "user.id=evil%07user,session.id=" + "s" * 201},
            timeout=30,
        )
        email = sample_email("question")
        with_callback = httpx.post(
            server.url + "/workflows/email/run",
            json={"start_event": {"email_data": email, "callback": hook}},
            headers={"traceparent": email_tp, "tracestate": TRACESTATE, "baggage": "secret=leakbag," + HOSTILE_BAGGAGE},
            timeout=30,
        )
        assert server.stop(signal.SIGTERM) == 0, server.logs()
    for response in (baseline, hostile, bad_ids, with_callback):
        assert response.status_code == 200, response.text

    view = langfuse_view(receiver.spans)
    base = view.traces[baseline.headers["x-trace-id"]]
    shown = view.traces["0af7651916cd43dd8448eb211c80319c"]
    # The documented ids take effect ...
    assert (shown.user_id, shown.session_id) == ("attacker", "chat-9")
    # ... and nothing else of the baggage does: the workflow's own name, the server's environment.
    assert shown.name == "HelloWorkflow" and shown.output == "Hello, Ada!"
    assert shown.tags == base.tags and "evil" not in shown.tags
    assert "tenant" not in shown.metadata and "evilcorp" not in json.dumps(shown.metadata, default=str)
    assert (shown.environment, shown.release, shown.version, shown.public) == (
        base.environment,
        base.release,
        base.version,
        base.public,
    )
    assert shown.environment != "production2"
    assert all(o.environment == base.environment for o in shown.observations)
    exported = json.dumps([s.attributes for s in receiver.spans], default=str)
    for needle in ("evilcorp", "EvilName", "production2", "evilrelease", "9.9", "leakbag"):
        assert needle not in exported, needle

    shown_bad = view.traces[bad_ids.headers["x-trace-id"]]
    assert (shown_bad.user_id, shown_bad.session_id) == (None, None)

    # The email run: its own thread and sender win; the callback gets traceparent and nothing else.
    email_shown = view.traces["4bf92f3577b34da6a3ce929d0e0e4736"]
    assert email_shown.name == "EmailWorkflow" and email_shown.user_id != "attacker"
    assert email_shown.environment == base.environment and "evil" not in email_shown.tags
    delivery = _by_name(receiver.traces()["4bf92f3577b34da6a3ce929d0e0e4736"], "deliver_result")
    [hook_headers] = hook_requests
    assert hook_headers["traceparent"] == f"00-4bf92f3577b34da6a3ce929d0e0e4736-{delivery.span_id}-01"
    assert "tracestate" not in hook_headers and "baggage" not in hook_headers, hook_headers

    # The caller's tracestate is not kept: no span carries it out.
    assert _exported_trace_states(receiver) == {""}


@pytest.mark.slow
def test_an_unsampled_run_gets_no_trace_id_or_link(tmp_path: Path) -> None:
    with LangfuseReceiver() as receiver, running_server(tmp_path, receiver) as server:
        unsampled = httpx.post(
            server.url + "/workflows/hello/run",
            json={"start_event": {"name": "Eve"}},
            headers={"traceparent": "00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-00"},
            timeout=30,
        )
        assert server.stop(signal.SIGTERM) == 0, server.logs()
    assert unsampled.status_code == 200 and unsampled.json()["result"]["value"]["result"] == "Hello, Eve!"
    assert "x-trace-id" not in unsampled.headers and "x-langfuse-trace-url" not in unsampled.headers
    version, trace_id, _, flags = unsampled.headers["traceresponse"].split("-")
    assert (version, trace_id, flags) == ("00", "5b8aa5a2d2c872e8321cf37308d69df2", "00")  # says: not recorded
    assert "5b8aa5a2d2c872e8321cf37308d69df2" not in receiver.traces()


@pytest.mark.slow
def test_with_traceparent_not_trusted_a_caller_cannot_join_or_rename_another_runs_trace(tmp_path: Path) -> None:
    with (
        LangfuseReceiver() as receiver,
        running_server(tmp_path, receiver, BASIC_SERVER_TRUST_TRACEPARENT="false") as server,
    ):
        email = sample_email("question")
        victim = httpx.post(
            server.url + "/workflows/email/run", json={"start_event": {"email_data": email}}, timeout=30
        )
        assert victim.status_code == 200, victim.text
        victim_trace = victim.headers["x-trace-id"]
        attacker = httpx.post(
            server.url + "/workflows/hello/run",
            json={"start_event": {"name": "INJECTED"}},
            headers={
                "traceparent": f"00-{victim_trace}-b7ad6b7169203331-01",
                "baggage": "user.id=attacker,session.id=victim-session",
            },
            timeout=30,
        )
        assert server.stop(signal.SIGTERM) == 0, server.logs()
    assert attacker.status_code == 200, attacker.text
    attacker_trace = attacker.headers["x-trace-id"]
    assert attacker_trace != victim_trace and not attacker.headers["traceresponse"].startswith(f"00-{victim_trace}")

    traces = receiver.traces()
    assert not [s for s in traces[victim_trace] if s.name.startswith("HelloWorkflow")]
    assert _by_name(traces[attacker_trace], "HelloWorkflow.run").parent_span_id is None  # its own trace
    view = langfuse_view(receiver.spans)
    shown = view.traces[victim_trace]
    assert shown.name == "EmailWorkflow" and shown.user_id != "attacker" and shown.session_id != "victim-session"
    assert isinstance(shown.output, dict) and shown.output["category"] == "question"
    # The caller's ids still label its own run.
    assert (view.traces[attacker_trace].user_id, view.traces[attacker_trace].output) == ("attacker", "Hello, INJECTED!")


def test_the_trust_setting_is_read_from_the_environment_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from basic import server

    assert server._parse_args([]).trust_traceparent is True
    monkeypatch.setenv("BASIC_SERVER_TRUST_TRACEPARENT", "false")
    assert server._parse_args([]).trust_traceparent is False
    assert server._parse_args(["--trust-traceparent", "true"]).trust_traceparent is True
    monkeypatch.setenv("BASIC_SERVER_TRUST_TRACEPARENT", "maybe")
    with pytest.raises(ValueError, match="BASIC_SERVER_TRUST_TRACEPARENT: expected true or false"):
        server.create_app()


def test_the_middleware_ignores_an_untrusted_traceparent_and_attaches_no_baggage() -> None:
    import asyncio

    from opentelemetry import baggage, trace

    from otel_basic.asgi import TraceContextMiddleware

    seen: list[tuple[object, dict[str, object]]] = []

    async def app(scope: object, receive: object, send: object) -> None:
        seen.append((trace.get_current_span().get_span_context(), dict(baggage.get_all())))

    headers = [
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        (b"tracestate", TRACESTATE.encode()),
        (b"baggage", HOSTILE_BAGGAGE.encode()),
    ]
    for trust in (True, False):
        middleware = TraceContextMiddleware(app, trust_traceparent=trust)
        asyncio.run(middleware({"type": "http", "path": "/x", "headers": headers}, None, None))  # type: ignore[arg-type]
    (trusted, trusted_baggage), (untrusted, untrusted_baggage) = seen
    assert isinstance(trusted, trace.SpanContext) and isinstance(untrusted, trace.SpanContext)
    assert f"{trusted.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c" and len(trusted.trace_state) == 0
    assert not untrusted.is_valid
    assert trusted_baggage == {} and untrusted_baggage == {}
