"""The test receiver must behave like Langfuse's OTLP endpoint, over a real socket.

Everything here talks HTTP to a live server: the point of the receiver is to catch
transport-level bugs, so mocking the transport in its own tests would prove nothing.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_basic.otlp_decode import OTLPDecodeError, decode_otlp_json_lines, decode_request, spans_to_otlp_json
from otel_basic.testing import LangfuseReceiver, ReceivedSpan

PROTOBUF = "application/x-protobuf"


# --------------------------------------------------------------------------- helpers


def make_spans() -> Sequence[ReadableSpan]:
    """A parent/child pair from a real SDK provider, covering every field we decode."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "receiver-test", "deploy": 3}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test.scope", "1.2.3")
    with tracer.start_as_current_span("workflow.run", kind=SpanKind.SERVER) as root:
        root.set_attribute("input.value", "hello")
        root.set_attribute("flag", True)
        root.set_attribute("count", 7)
        root.set_attribute("ratio", 0.5)
        root.set_attribute("tags", ["a", "b"])
        with tracer.start_as_current_span("step.one") as child:
            child.add_event("retrying", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()
    return exporter.get_finished_spans()


def protobuf_body(spans: Sequence[ReadableSpan]) -> bytes:
    data: bytes = encode_spans(spans).SerializeToString()
    return data


def otlp_json_body(spans: Sequence[ReadableSpan], *, hex_ids: bool = True) -> dict[str, Any]:
    """OTLP/JSON as the spec writes it: hex ids, integer enums (or base64 ids if asked)."""
    doc: dict[str, Any] = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    if hex_ids:
        for rs in doc["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in span:
                            span[key] = base64.b64decode(span[key]).hex()
    return doc


def post(
    client: httpx.Client,
    receiver: LangfuseReceiver,
    body: bytes,
    *,
    content_type: str = PROTOBUF,
    auth: str | None = None,
    extra: dict[str, str] | None = None,
    url: str | None = None,
) -> httpx.Response:
    headers = {"Content-Type": content_type, "Authorization": auth or receiver.auth_header, **(extra or {})}
    return client.post(url or receiver.traces_url, content=body, headers=headers)


@pytest.fixture(scope="module")
def spans() -> Sequence[ReadableSpan]:
    return make_spans()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as c:
        yield c


# --------------------------------------------------------------------------- happy paths


def test_protobuf_gzip_is_accepted_and_decoded(
    langfuse_receiver: LangfuseReceiver, client: httpx.Client, spans: Sequence[ReadableSpan]
) -> None:
    raw = gzip.compress(protobuf_body(spans))
    resp = post(client, langfuse_receiver, raw, extra={"Content-Encoding": "gzip"})
    assert resp.status_code == 200
    assert resp.json() == {}

    got = {s.name: s for s in langfuse_receiver.wait_for_spans(2, timeout=2)}
    root, child = got["workflow.run"], got["step.one"]
    sdk_root = next(s for s in spans if s.name == "workflow.run")
    assert sdk_root.context is not None
    assert root.trace_id == format(sdk_root.context.trace_id, "032x")
    assert root.span_id == format(sdk_root.context.span_id, "016x")
    assert root.parent_span_id is None and root.is_root
    assert child.parent_span_id == root.span_id and child.trace_id == root.trace_id
    assert root.kind == "SERVER" and child.kind == "INTERNAL"
    assert root.attributes == {
        "input.value": "hello",
        "flag": True,
        "count": 7,
        "ratio": 0.5,
        "tags": ["a", "b"],
    }
    assert [(e.name, e.attributes) for e in child.events] == [("retrying", {"attempt": 2})]
    assert child.events[0].time > 0
    assert (child.status_code, child.status_message) == ("ERROR", "boom")
    assert root.status_code == "UNSET"
    assert root.resource["service.name"] == "receiver-test" and root.resource["deploy"] == 3
    assert (root.scope_name, root.scope_version) == ("test.scope", "1.2.3")
    assert root.duration_ms >= child.duration_ms >= 0

    [req] = langfuse_receiver.requests
    assert (req.method, req.path, req.status, req.span_count) == (
        "POST",
        "/api/public/otel/v1/traces",
        200,
        2,
    )
    assert req.raw_body == raw and req.body == protobuf_body(spans)
    assert req.headers["content-encoding"] == "gzip" and req.content_type == PROTOBUF
    assert langfuse_receiver.traces() == {root.trace_id: langfuse_receiver.spans}
    assert sorted(langfuse_receiver.span_names()) == ["step.one", "workflow.run"]


@pytest.mark.parametrize("hex_ids", [True, False], ids=["otlp-json-hex", "protobuf-json-base64"])
def test_json_is_accepted(
    langfuse_receiver: LangfuseReceiver, client: httpx.Client, spans: Sequence[ReadableSpan], hex_ids: bool
) -> None:
    body = json.dumps(otlp_json_body(spans, hex_ids=hex_ids)).encode()
    resp = post(client, langfuse_receiver, body, content_type="application/json; charset=utf-8")
    assert resp.status_code == 200, resp.text
    by_name = {s.name: s for s in langfuse_receiver.spans}
    assert by_name["step.one"].parent_span_id == by_name["workflow.run"].span_id
    assert by_name["workflow.run"].kind == "SERVER"
    assert by_name["step.one"].status_code == "ERROR"
    assert decode_request(protobuf_body(spans), PROTOBUF) == langfuse_receiver.spans


def test_duplicates_are_kept(
    langfuse_receiver: LangfuseReceiver, client: httpx.Client, spans: Sequence[ReadableSpan]
) -> None:
    for _ in range(2):
        assert post(client, langfuse_receiver, protobuf_body(spans)).status_code == 200
    assert len(langfuse_receiver.wait_for_spans(4, timeout=2)) == 4
    langfuse_receiver.clear()
    assert langfuse_receiver.spans == [] and langfuse_receiver.requests == []


def test_plain_otlp_path_without_auth(client: httpx.Client, spans: Sequence[ReadableSpan]) -> None:
    with LangfuseReceiver(require_auth=False) as receiver:
        resp = client.post(
            receiver.base_url + "/v1/traces", content=protobuf_body(spans), headers={"Content-Type": PROTOBUF}
        )
        assert resp.status_code == 200
        assert resp.headers["content-type"] == PROTOBUF and resp.content == b""
        assert len(receiver.spans) == 2


def test_real_otlp_exporter_and_keep_alive(
    langfuse_receiver: LangfuseReceiver, spans: Sequence[ReadableSpan]
) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    exporter = OTLPSpanExporter(
        endpoint=langfuse_receiver.traces_url,
        headers={"Authorization": langfuse_receiver.auth_header, "x-langfuse-ingestion-version": "4"},
        compression=Compression.Gzip,
        timeout=5,
    )
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        assert exporter.export(spans) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    assert len(langfuse_receiver.spans) == 4

    # Two requests over one raw HTTP/1.1 connection: keep-alive must work.
    conn = http.client.HTTPConnection("127.0.0.1", langfuse_receiver.port, timeout=5)
    try:
        for _ in range(2):
            conn.request(
                "POST",
                "/api/public/otel/v1/traces",
                body=protobuf_body(spans),
                headers={"Content-Type": PROTOBUF, "Authorization": langfuse_receiver.auth_header},
            )
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read()) == {}
    finally:
        conn.close()
    assert len(langfuse_receiver.spans) == 8


def test_langfuse_sdk_round_trip(spans: Sequence[ReadableSpan]) -> None:
    """The real Langfuse SDK must accept the receiver: auth_check, export, retry on 503."""
    langfuse = pytest.importorskip("langfuse")
    provider = TracerProvider()  # isolated: never touch the global provider from this test
    # A public key nobody else uses, because Langfuse keeps one client per public key.
    with LangfuseReceiver(public_key="pk-lf-receiver-selftest") as receiver:
        client = langfuse.Langfuse(
            public_key=receiver.public_key,
            secret_key=receiver.env()["LANGFUSE_SECRET_KEY"],
            base_url=receiver.base_url,
            tracer_provider=provider,
        )
        try:
            assert client.auth_check() is True
            receiver.fail_next(503, retry_after=0)
            with client.start_as_current_observation(name="sdk-span"):
                pass
            client.flush()
            assert receiver.span_names() == ["sdk-span"]
            [failed, ok] = receiver.trace_requests
            assert (failed.status, ok.status) == (503, 200)
            assert ok.headers["x-langfuse-ingestion-version"] == "4"
            assert ok.headers["content-encoding"] == "gzip"
        finally:
            client.shutdown()
            provider.shutdown()
            # Langfuse keeps clients per key process-wide; a second one makes @observe skip tracing
            # ("multiple clients") in every later test, so forget this one.
            from langfuse._client.resource_manager import LangfuseResourceManager

            with LangfuseResourceManager._lock:
                LangfuseResourceManager._instances.pop(receiver.public_key, None)


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    "auth",
    [None, "Basic " + base64.b64encode(b"pk-lf-test:wrong").decode(), "Bearer sk-lf-test", "Basic !!!"],
    ids=["missing", "wrong-secret", "not-basic", "bad-base64"],
)
def test_bad_auth_is_401(
    langfuse_receiver: LangfuseReceiver, client: httpx.Client, spans: Sequence[ReadableSpan], auth: str | None
) -> None:
    headers = {"Content-Type": PROTOBUF} | ({"Authorization": auth} if auth else {})
    resp = client.post(langfuse_receiver.traces_url, content=protobuf_body(spans), headers=headers)
    assert resp.status_code == 401
    assert "message" in resp.json() and "sk-lf-test" not in resp.text
    assert langfuse_receiver.spans == []
    [req] = langfuse_receiver.requests
    assert (req.status, req.span_count) == (401, 2)


@pytest.mark.parametrize(
    ("body", "content_type", "extra"),
    [
        (b"", "text/plain", {}),
        (b"not gzip at all", PROTOBUF, {"Content-Encoding": "gzip"}),
        (b"\xff\xff\xff\xff garbage", PROTOBUF, {}),
        (b"{not json", "application/json", {}),
        (b'{"resourceSpans": {"oops": 1}}', "application/json", {}),
        (
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"x","traceId":"zz","spanId":"00"}]}]}]}',
            "application/json",
            {},
        ),
        (b"", PROTOBUF, {"x-langfuse-ingestion-version": "5"}),
    ],
    ids=["content-type", "bad-gzip", "garbage-protobuf", "garbage-json", "bad-shape", "bad-ids", "version"],
)
def test_bad_requests_are_400(
    langfuse_receiver: LangfuseReceiver,
    client: httpx.Client,
    body: bytes,
    content_type: str,
    extra: dict[str, str],
) -> None:
    resp = post(client, langfuse_receiver, body, content_type=content_type, extra=extra)
    assert resp.status_code == 400, resp.text
    assert resp.json()["message"]
    assert langfuse_receiver.requests[-1].status == 400
    assert langfuse_receiver.spans == []


def test_unknown_path_and_method(langfuse_receiver: LangfuseReceiver, client: httpx.Client) -> None:
    assert client.get(langfuse_receiver.base_url + "/nope").status_code == 404
    assert client.get(langfuse_receiver.traces_url).status_code == 405


# --------------------------------------------------------------------------- other endpoints


def test_projects_scores_and_health(langfuse_receiver: LangfuseReceiver, client: httpx.Client) -> None:
    auth = {"Authorization": langfuse_receiver.auth_header}
    resp = client.get(langfuse_receiver.base_url + "/api/public/projects", headers=auth)
    assert resp.status_code == 200
    [project] = resp.json()["data"]
    assert {"id", "name", "organization", "metadata"} <= project.keys()
    assert {"id", "name"} <= project["organization"].keys()

    bad = {"Authorization": "Basic " + base64.b64encode(b"pk-lf-test:nope").decode()}
    assert client.get(langfuse_receiver.base_url + "/api/public/projects", headers=bad).status_code == 401

    score = {"name": "q", "value": 1.0, "traceId": "ab" * 16}
    resp = client.post(langfuse_receiver.base_url + "/api/public/scores", headers=auth, json=[score])
    assert (resp.status_code, resp.json()) == (202, {"message": "Accepted"})
    assert langfuse_receiver.requests[-1].json() == [score]
    assert langfuse_receiver.scores == [score]
    no_value = client.post(langfuse_receiver.base_url + "/api/public/scores", headers=auth, json=[{"name": "q"}])
    assert no_value.status_code == 400 and langfuse_receiver.scores == [score]  # rejected: not recorded
    assert client.post(langfuse_receiver.base_url + "/api/public/scores", json=[]).status_code == 401

    assert client.get(langfuse_receiver.base_url + "/health").status_code == 200


# --------------------------------------------------------------------------- faults


def test_fail_next_with_retry_after_then_recovers(
    langfuse_receiver: LangfuseReceiver, client: httpx.Client, spans: Sequence[ReadableSpan]
) -> None:
    body = protobuf_body(spans)
    langfuse_receiver.fail_next(503, count=2, retry_after=2)
    langfuse_receiver.fail_next(429, retry_after="7", body="slow down")
    for expected in ("2", "2"):
        resp = post(client, langfuse_receiver, body)
        assert resp.status_code == 503 and resp.headers["retry-after"] == expected
    resp = post(client, langfuse_receiver, body)
    assert (resp.status_code, resp.headers["retry-after"], resp.text) == (429, "7", "slow down")
    assert langfuse_receiver.spans == []

    langfuse_receiver.fail_next(301)
    resp = post(client, langfuse_receiver, body)
    assert resp.status_code == 301 and resp.headers["location"] == "/api/public/otel/v1/traces"

    assert post(client, langfuse_receiver, body).status_code == 200
    assert [r.status for r in langfuse_receiver.trace_requests] == [503, 503, 429, 301, 200]
    assert [r.span_count for r in langfuse_receiver.trace_requests] == [2] * 5
    assert len(langfuse_receiver.spans) == 2  # only the accepted attempt counts


def test_delay(
    langfuse_receiver: LangfuseReceiver, client: httpx.Client, spans: Sequence[ReadableSpan]
) -> None:
    langfuse_receiver.set_delay(1.0)
    started = time.monotonic()
    assert post(client, langfuse_receiver, protobuf_body(spans)).status_code == 200
    assert time.monotonic() - started >= 1.0
    langfuse_receiver.set_delay(0)
    started = time.monotonic()
    assert post(client, langfuse_receiver, protobuf_body(spans)).status_code == 200
    assert time.monotonic() - started < 1.0


def test_blackhole_times_out_then_recovers(
    langfuse_receiver: LangfuseReceiver, spans: Sequence[ReadableSpan]
) -> None:
    langfuse_receiver.blackhole()
    with httpx.Client(timeout=0.3) as short, pytest.raises(httpx.ReadTimeout):
        post(short, langfuse_receiver, protobuf_body(spans))
    [req] = langfuse_receiver.wait_for_requests(1, timeout=2)
    assert req.status is None and req.span_count == 2
    assert langfuse_receiver.spans == []

    langfuse_receiver.blackhole(False)
    with httpx.Client(timeout=5) as c:
        assert post(c, langfuse_receiver, protobuf_body(spans)).status_code == 200
    assert len(langfuse_receiver.spans) == 2


def test_stop_does_not_hang_on_blocked_handlers(spans: Sequence[ReadableSpan]) -> None:
    receiver = LangfuseReceiver().start()
    errors: list[BaseException] = []

    def call() -> None:
        with httpx.Client(timeout=10) as c:
            try:
                post(c, receiver, protobuf_body(spans))
            except httpx.TransportError as exc:
                errors.append(exc)

    receiver.blackhole()
    blackholed = threading.Thread(target=call)
    blackholed.start()
    receiver.wait_for_requests(1, timeout=2)
    receiver.blackhole(False)
    receiver.set_delay(30)
    delayed = threading.Thread(target=call)
    delayed.start()
    time.sleep(0.1)  # let the second request reach the delay

    started = time.monotonic()
    receiver.stop()
    assert time.monotonic() - started < 2
    blackholed.join(3)
    delayed.join(3)
    assert not blackholed.is_alive() and not delayed.is_alive()
    assert len(errors) == 2  # both clients saw the connection die, no response
    assert receiver.spans == []


def test_drop_next_gives_connection_error(
    langfuse_receiver: LangfuseReceiver, client: httpx.Client, spans: Sequence[ReadableSpan]
) -> None:
    langfuse_receiver.drop_next()
    with pytest.raises(httpx.TransportError):
        post(client, langfuse_receiver, protobuf_body(spans))
    assert post(client, langfuse_receiver, protobuf_body(spans)).status_code == 200
    assert [r.status for r in langfuse_receiver.trace_requests] == [None, 200]
    assert len(langfuse_receiver.spans) == 2


def test_max_body_bytes_413_then_reset(
    langfuse_receiver: LangfuseReceiver, client: httpx.Client, spans: Sequence[ReadableSpan]
) -> None:
    body = protobuf_body(spans)
    langfuse_receiver.max_body_bytes = len(body) - 1
    assert post(client, langfuse_receiver, body).status_code == 413
    langfuse_receiver.max_body_bytes = len(body)
    assert post(client, langfuse_receiver, body).status_code == 200

    langfuse_receiver.max_body_bytes = 1
    langfuse_receiver.fail_next(500)
    langfuse_receiver.drop_next()
    langfuse_receiver.blackhole()
    langfuse_receiver.set_delay(5)
    langfuse_receiver.reset_faults()
    assert post(client, langfuse_receiver, body).status_code == 200
    assert len(langfuse_receiver.spans) == 4


def test_stop_then_start_rebinds_same_port(client: httpx.Client, spans: Sequence[ReadableSpan]) -> None:
    receiver = LangfuseReceiver().start()
    try:
        port = receiver.port
        assert post(client, receiver, protobuf_body(spans)).status_code == 200  # pooled keep-alive conn
        receiver.stop()
        assert not receiver.running
        with pytest.raises(httpx.TransportError):
            post(client, receiver, protobuf_body(spans))
        receiver.start()
        assert receiver.port == port and receiver.base_url.endswith(f":{port}")
        assert post(client, receiver, protobuf_body(spans)).status_code == 200
        assert len(receiver.spans) == 4  # storage survives restarts
    finally:
        receiver.stop()


def test_wait_for_spans_timeout_is_helpful(
    langfuse_receiver: LangfuseReceiver, client: httpx.Client, spans: Sequence[ReadableSpan]
) -> None:
    langfuse_receiver.fail_next(503)
    post(client, langfuse_receiver, protobuf_body(spans))
    with pytest.raises(TimeoutError, match=r"at least 1 span.*0 arrived.*503"):
        langfuse_receiver.wait_for_spans(1, timeout=0.1)


# --------------------------------------------------------------------------- misc API


def test_repr_env_and_fixture_env(langfuse_env: LangfuseReceiver) -> None:
    assert "sk-lf-test" not in repr(langfuse_env)
    assert langfuse_env.base_url in repr(langfuse_env)
    assert os.environ["LANGFUSE_BASE_URL"] == langfuse_env.base_url
    assert os.environ["LANGFUSE_PUBLIC_KEY"] == "pk-lf-test"
    assert os.environ["LANGFUSE_SECRET_KEY"] == "sk-lf-test"
    for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED", "LANGFUSE_HOST"):
        assert key not in os.environ
    assert langfuse_env.otlp_base_url + "/v1/traces" == langfuse_env.traces_url
    assert langfuse_env.auth_header == "Basic " + base64.b64encode(b"pk-lf-test:sk-lf-test").decode()


def test_received_request_repr_hides_credentials(
    langfuse_receiver: LangfuseReceiver, client: httpx.Client, spans: Sequence[ReadableSpan]
) -> None:
    post(client, langfuse_receiver, protobuf_body(spans))
    text = repr(langfuse_receiver.requests)
    assert langfuse_receiver.auth_header.split()[1] not in text and "200" in text


def test_json_lines_round_trip(tmp_path: Path, spans: Sequence[ReadableSpan]) -> None:
    decoded = decode_request(protobuf_body(spans), PROTOBUF)
    lines = "\n".join(json.dumps(spans_to_otlp_json([s])) for s in decoded) + "\n\n"
    assert decode_otlp_json_lines(lines) == decoded
    path = tmp_path / "spans.jsonl"
    path.write_text(json.dumps(otlp_json_body(spans)) + "\n")
    assert decode_otlp_json_lines(path) == decoded
    assert decode_otlp_json_lines(str(path)) == decoded
    assert decode_otlp_json_lines("") == []
    with pytest.raises(OTLPDecodeError, match="line 2"):
        decode_otlp_json_lines(lines.splitlines()[0] + "\n{bad\n")


# --------------------------------------------------------------------------- command line


def test_cli_prints_port_dumps_and_stops_on_sigterm(tmp_path: Path, spans: Sequence[ReadableSpan]) -> None:
    dump = tmp_path / "dump.jsonl"
    cmd = [sys.executable, "-m", "otel_basic.testing", "--port", "0", "--dump", str(dump)]
    proc = subprocess.Popen(
        [*cmd, "--secret-key", "s3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["port"] > 0 and info["base_url"] == f"http://127.0.0.1:{info['port']}"
        auth = "Basic " + base64.b64encode(b"pk-lf-test:s3").decode()
        resp = httpx.post(
            info["base_url"] + "/api/public/otel/v1/traces",
            content=protobuf_body(spans),
            headers={"Content-Type": PROTOBUF, "Authorization": auth},
            timeout=5,
        )
        assert resp.status_code == 200
        dumped: list[ReceivedSpan] = decode_otlp_json_lines(dump)
        assert dumped == decode_request(protobuf_body(spans), PROTOBUF)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
