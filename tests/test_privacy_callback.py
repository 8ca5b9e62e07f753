"""The email app's callback cannot be turned into a probe: refused targets get no traffic at all, the
checked address is the one connected to, redirects are not followed, and the API client learns only
"delivered", "refused: target not allowed" or "failed".

No test here sends anything to a non-loopback address: refusals happen before connecting, names are
resolved by an injected resolver, and every sink listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

import otel_basic
from basic import callback_guard
from basic.callback_guard import REFUSED, AllowList, CallbackRefused, check_peer, check_target, refusal_reason
from basic.email_workflow import EmailWorkflow
from basic.llm import OfflineLLM
from basic.samples import sample_email

NOTHING = AllowList()

REFUSED_ADDRESSES = [
    "169.254.169.254",  # cloud metadata (link-local)
    "::ffff:169.254.169.254",  # IPv4-mapped
    "::a9fe:a9fe",  # IPv4-compatible
    "64:ff9b::a9fe:a9fe",  # NAT64
    "2002:a9fe:a9fe::1",  # 6to4
    "fd00:ec2::254",  # AWS metadata over IPv6 (unique-local)
    "100.100.100.200",  # Alibaba metadata (shared address space)
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "127.0.0.1",
    "127.8.9.10",
    "::1",
    "::ffff:127.0.0.1",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "ff02::1",
    "fe80::1",
    "fc00::1",
    "fec0::1",
    "100.64.0.1",
    "192.0.2.10",  # documentation
    "240.0.0.1",  # reserved
    "255.255.255.255",
]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def resolver_for(answers: dict[str, list[str]], calls: list[str] | None = None) -> callback_guard.Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in answers:
            raise OSError("no such host")
        return answers[host]

    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://metadata/",
        "http://10.0.0.1:6379/",
        "http://127.0.0.1:8080/hook",
        "http://localhost:8080/hook",
        "http://app.localhost/",
        "http://[fd00:ec2::254]/",
        "http://0.0.0.0:80/",
        "https://rebind.example/hook",  # resolves to a private address (injected resolver)
        "https://mixed.example/hook",  # one public, one loopback answer: refused as a whole
        "http://nowhere.example/",  # does not resolve
        "ftp://files.example/",
        "not a url",
    ],
)
async def test_refused_targets(url: str) -> None:
    resolver = resolver_for({"rebind.example": ["10.1.2.3"], "mixed.example": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(CallbackRefused):
        await check_target(url, NOTHING, resolver)


async def test_a_public_target_is_pinned_to_the_checked_address() -> None:
    calls: list[str] = []
    resolver = resolver_for({"hooks.example": ["93.184.216.34", "2606:2800:220:1::1"]}, calls)
    target = await check_target("https://user:pw@hooks.example:8443/cb?x=1", NOTHING, resolver)
    assert calls == ["hooks.example"], "resolved once: a second answer (DNS rebinding) is never used"
    assert target.address == "93.184.216.34"
    assert target.url.host == "93.184.216.34" and target.url.port == 8443 and target.url.path == "/cb"
    assert target.headers == {"Host": "hooks.example:8443"}
    assert target.extensions["sni_hostname"] == "hooks.example", "TLS name and certificate stay on the name"
    assert callable(target.extensions["trace"]), "the peer is checked after connecting"


async def test_allow_list_opens_names_addresses_and_networks() -> None:
    allow = AllowList.parse("hooks.internal, 10.20.0.0/16 ,127.0.0.1,[::1]")
    resolver = resolver_for({"hooks.internal": ["10.99.0.1"], "svc.corp": ["10.20.3.4"], "other.corp": ["10.21.0.1"]})
    assert (await check_target("http://hooks.internal/x", allow, resolver)).address == "10.99.0.1"
    assert (await check_target("http://svc.corp/x", allow, resolver)).address == "10.20.3.4"
    assert (await check_target("http://127.0.0.1:9/x", allow, resolver)).address == "127.0.0.1"
    assert (await check_target("http://[::1]:9/x", allow, resolver)).address == "::1"
    with pytest.raises(CallbackRefused):
        await check_target("http://other.corp/x", allow, resolver)
    with pytest.raises(CallbackRefused):
        await check_target("http://169.254.169.254/", allow, resolver)


def test_allow_list_errors_name_the_variable() -> None:
    with pytest.raises(ValueError, match=r"BASIC_CALLBACK_ALLOW_HOSTS.*'http://x/'"):
        AllowList.parse("ok.example,http://x/")
    assert AllowList.from_env({"BASIC_CALLBACK_ALLOW_HOSTS": ""}) == AllowList()


# --- real traffic, loopback only ------------------------------------------------------------------------


class Sink:
    """An HTTP endpoint on 127.0.0.1 that records POSTs and answers ``status`` (with ``location``)."""

    def __init__(self, status: int = 200, location: str | None = None) -> None:
        self.requests: list[dict[str, str]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.requests.append(dict(self.headers))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


async def test_peer_address_is_checked_before_the_request_is_sent(sink: Sink) -> None:
    allow = AllowList.parse("127.0.0.1")
    target = await check_target(f"http://127.0.0.1:{sink.port}/hook", allow)
    async with callback_guard.client(5.0) as client:
        response = await client.post(target.url, json={}, headers=target.headers, extensions=target.extensions)
        assert response.status_code == 200 and len(sink.requests) == 1
        # As if the connection had reached another address than the checked one (e.g. rebinding through
        # some layer we do not control): aborted after connect, before a byte of the request is sent.
        forged = await check_target("http://127.0.0.2:1/", AllowList.parse("127.0.0.0/8"))
        with pytest.raises(CallbackRefused):
            await client.post(target.url, json={}, headers=target.headers, extensions=forged.extensions)
    assert len(sink.requests) == 1
    with pytest.raises(CallbackRefused):
        check_peer(("10.0.0.1", 80), "127.0.0.1")
    check_peer(("::1", 80, 0, 0), "::1")


async def test_name_resolved_once_then_the_request_goes_to_that_address(sink: Sink) -> None:
    """A name that resolves to the allow-listed sink: the request carries the name in Host, reaches the
    pinned address, and no second resolution happens."""
    calls: list[str] = []
    resolver = resolver_for({"hooks.test": ["127.0.0.1"]}, calls)
    target = await check_target(f"http://hooks.test:{sink.port}/hook", AllowList.parse("127.0.0.0/8"), resolver)
    async with callback_guard.client(5.0) as client:
        await client.post(target.url, json={}, headers=target.headers, extensions=target.extensions)
    assert calls == ["hooks.test"]
    assert sink.requests[0]["Host"] == f"hooks.test:{sink.port}"


def workflow() -> EmailWorkflow:
    return EmailWorkflow(llm=OfflineLLM(), callback_backoff=0.01, callback_timeout=2.0, callback_attempts=2)


async def test_loopback_sink_is_refused_by_default_and_gets_nothing(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BASIC_CALLBACK_ALLOW_HOSTS", raising=False)
    for url in (f"http://127.0.0.1:{sink.port}/hook", f"http://localhost:{sink.port}/hook",
                f"http://[::ffff:127.0.0.1]:{sink.port}/hook"):
        result = await workflow().run(email_data=sample_email("question"), callback=url)
        assert result.delivery is not None
        assert result.delivery.model_dump() == {
            "status": "failed", "ok": False, "target": "url", "attempts": 0, "status_code": None, "error": REFUSED,
        }
    assert sink.requests == [], "a refused target receives no traffic"


async def test_allow_listed_sink_gets_the_result(sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASIC_CALLBACK_ALLOW_HOSTS", "127.0.0.1")
    result = await workflow().run(email_data=sample_email("question"), callback=f"http://127.0.0.1:{sink.port}/hook")
    assert result.delivery is not None
    assert (result.delivery.status, result.delivery.ok, result.delivery.status_code) == ("delivered", True, None)
    assert len(sink.requests) == 1


@pytest.mark.parametrize("status", [302, 307, 404, 500])
async def test_failures_and_redirects_say_only_failed(status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASIC_CALLBACK_ALLOW_HOSTS", "127.0.0.1")
    # The redirect points at the metadata address: it must not be followed (nothing is sent there).
    sink = Sink(status, location="http://169.254.169.254/latest/meta-data/" if status < 400 else None)
    try:
        result = await workflow().run(email_data=sample_email("question"), callback=f"http://127.0.0.1:{sink.port}/h")
    finally:
        sink.close()
    assert result.delivery is not None
    dumped = result.delivery.model_dump()
    assert dumped == {"status": "failed", "ok": False, "target": "url", "attempts": 0, "status_code": None,
                      "error": "failed"}
    assert str(status) not in json.dumps(dumped)
    assert 1 <= len(sink.requests) <= 2


async def test_environment_proxies_are_not_used(sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy would resolve the name itself, after our check: the callback client ignores HTTP(S)_PROXY."""
    monkeypatch.setenv("BASIC_CALLBACK_ALLOW_HOSTS", "127.0.0.1")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "")
    result = await workflow().run(email_data=sample_email("question"), callback=f"http://127.0.0.1:{sink.port}/hook")
    assert result.delivery is not None and result.delivery.ok
    assert isinstance(callback_guard.client(1.0), httpx.AsyncClient)


@pytest.mark.parametrize("level", ["detectors", "hide"])
async def test_callback_credentials_never_reach_telemetry(
    sink: Sink, langfuse_env: Any, monkeypatch: pytest.MonkeyPatch, level: str
) -> None:
    """The callback URL's user:password appears in the run's input, every step's input/output and the
    delivery span: the url_credentials detector removes it from all of them (with masking off, the
    password is on the wire: checked by hand)."""
    monkeypatch.setenv("BASIC_CALLBACK_ALLOW_HOSTS", "127.0.0.1")
    monkeypatch.setenv("OTEL_BASIC_MASK", level)
    otel_basic.configure()
    url = f"http://hook-user:Pw9-s3cret-v4lue@127.0.0.1:{sink.port}/hook?token=q-T0ken-42"
    result = await otel_basic.run_with_flush(workflow(), email_data=sample_email("question"), callback=url)
    assert result.delivery is not None and result.delivery.ok
    assert sink.requests and sink.requests[0]["Authorization"].startswith("Basic ")  # the credentials were used
    wire = b"\n".join(r.body for r in langfuse_env.trace_requests)
    assert b"deliver_result" in wire
    for secret in (b"Pw9-s3cret-v4lue", b"hook-user:"):
        assert secret not in wire


async def test_a_name_that_does_not_resolve_in_time_is_refused() -> None:
    async def slow(host: str, port: int) -> list[str]:
        await asyncio.sleep(5)
        return ["93.184.216.34"]

    with pytest.raises(CallbackRefused):
        await check_target("https://slow.example/", NOTHING, slow, timeout=0.05)
