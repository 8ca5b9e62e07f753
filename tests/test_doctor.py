"""`otel-basic doctor`: every misconfiguration gets its own, exact fix; secrets never printed."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from otel_basic.doctor import CANARY_SPAN_NAME, NOTHING_CONFIGURED, run_doctor, unauthorized_fix
from otel_basic.pipeline import build_spool
from otel_basic.road import encode
from otel_basic.settings import load_settings
from otel_basic.spool import Spool
from otel_basic.testing import LangfuseReceiver
from tests.conftest import PYTHON, subprocess_env

SECRET = "sk-lf-SUPERSECRET-123"
PUBLIC = "pk-lf-doctor"
OTEL_BASIC = str(Path(PYTHON).with_name("otel-basic"))


def _forbidden(public: str = PUBLIC, secret: str = SECRET) -> list[str]:
    token = base64.b64encode(f"{public}:{secret}".encode()).decode()
    return [secret, token, "SUPERSECRET"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spans(n: int, prefix: str = "spooled") -> list[ReadableSpan]:
    provider = TracerProvider()
    tracer = provider.get_tracer("tests.doctor")
    spans: list[ReadableSpan] = []
    for i in range(n):
        span = tracer.start_span(f"{prefix}-{i}")
        span.end()
        spans.append(span)  # type: ignore[arg-type]
    return spans


def _spool_for(env: dict[str, str]) -> Spool:
    spool = build_spool(load_settings(env))
    assert spool is not None
    return spool


@pytest.fixture
def receiver() -> Iterator[LangfuseReceiver]:
    with LangfuseReceiver(public_key=PUBLIC, secret_key=SECRET) as r:
        yield r


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    return {"OTEL_BASIC_SPOOL_DIR": str(tmp_path / "spool")}


# --- the table: one misconfiguration, one message ---------------------------------------------


CASES = [
    ("nothing configured", {}, NOTHING_CONFIGURED),
    (
        "only the secret key",
        {"LANGFUSE_SECRET_KEY": SECRET},
        "LANGFUSE_SECRET_KEY is set but LANGFUSE_PUBLIC_KEY is not",
    ),
    (
        "only the public key",
        {"LANGFUSE_PUBLIC_KEY": PUBLIC},
        "LANGFUSE_PUBLIC_KEY is set but LANGFUSE_SECRET_KEY is not",
    ),
    (
        "URL without scheme",
        {
            "LANGFUSE_PUBLIC_KEY": PUBLIC,
            "LANGFUSE_SECRET_KEY": SECRET,
            "LANGFUSE_BASE_URL": "cloud.langfuse.com",
        },
        "LANGFUSE_BASE_URL: must be an http:// or https:// URL",
    ),
    (
        "unresolvable host",
        {
            "LANGFUSE_PUBLIC_KEY": PUBLIC,
            "LANGFUSE_SECRET_KEY": SECRET,
            "LANGFUSE_BASE_URL": "https://langfuse.doctor-test.invalid",
        },
        "cannot resolve host langfuse.doctor-test.invalid",
    ),
    (
        "SDK disabled",
        {"OTEL_SDK_DISABLED": "true", "LANGFUSE_PUBLIC_KEY": PUBLIC, "LANGFUSE_SECRET_KEY": SECRET},
        "tracing disabled by OTEL_SDK_DISABLED=true",
    ),
    (
        "Langfuse tracing disabled",
        {"LANGFUSE_TRACING_ENABLED": "false", "LANGFUSE_PUBLIC_KEY": PUBLIC, "LANGFUSE_SECRET_KEY": SECRET},
        "tracing disabled by LANGFUSE_TRACING_ENABLED=false",
    ),
    (
        "swapped keys",
        {
            "LANGFUSE_PUBLIC_KEY": SECRET,
            "LANGFUSE_SECRET_KEY": PUBLIC,
            "LANGFUSE_BASE_URL": "http://127.0.0.1:9",
        },
        "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are swapped",
    ),
    (
        "malformed OTLP headers",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_HEADERS": "Bearer abc"},
        "OTEL_EXPORTER_OTLP_HEADERS: entry 1 is not of the form key=value",
    ),
]


@pytest.mark.parametrize(("case", "env", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_misconfiguration_has_its_own_fix(
    case: str, env: dict[str, str], expected: str, base_env: dict[str, str]
) -> None:
    report = run_doctor({**base_env, **env})
    assert not report.healthy
    assert expected in report.line, report.to_json()
    dumped = json.dumps(report.to_json())
    for secret in _forbidden():
        assert secret not in dumped


def test_messages_are_distinct(base_env: dict[str, str]) -> None:
    lines = [run_doctor({**base_env, **env}).line for _, env, _ in CASES]
    assert len(set(lines)) == len(lines)


def test_connection_refused_names_host_port_and_collector(base_env: dict[str, str]) -> None:
    port = _closed_port()
    for protocol in ("http/protobuf", "grpc"):
        env = {
            **base_env,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }
        report = run_doctor(env)
        assert report.line == (
            f"connection refused at 127.0.0.1:{port}: is the collector running? (`otel-basic collector`)"
        )
        assert report.route == "otlp"
        canary = next(c for c in report.checks if c.name == "canary")
        assert canary.ok is None  # skipped, not a second failure


def test_wrong_keys_get_the_401_fix(base_env: dict[str, str]) -> None:
    with LangfuseReceiver(public_key="pk-lf-other", secret_key="sk-lf-other") as other:
        env = {
            **base_env,
            "LANGFUSE_PUBLIC_KEY": PUBLIC,
            "LANGFUSE_SECRET_KEY": SECRET,
            "LANGFUSE_BASE_URL": other.base_url,
        }
        report = run_doctor(env)
        assert report.line.startswith(f"401 from Langfuse: these keys do not belong to {other.base_url}")
        assert other.spans == []


def test_401_on_cloud_names_the_other_region() -> None:
    eu = unauthorized_fix("https://cloud.langfuse.com")
    assert eu.startswith(
        "401 from Langfuse: these keys do not belong to https://cloud.langfuse.com — keys of another region? "
        "(LANGFUSE_BASE_URL is https://cloud.langfuse.com; US keys need https://us.cloud.langfuse.com"
    )
    assert "EU keys need https://cloud.langfuse.com" in unauthorized_fix("https://us.cloud.langfuse.com")


def test_rejected_canary_gets_the_401_fix(receiver: LangfuseReceiver, base_env: dict[str, str]) -> None:
    receiver.fail_next(401, count=1)  # keys fine for the API, ingestion says no
    report = run_doctor({**base_env, **receiver.env()})
    canary = next(c for c in report.checks if c.name == "canary")
    assert canary.ok is False
    assert report.line.startswith("401 from Langfuse")


def test_healthy_setup_sends_the_canary(receiver: LangfuseReceiver, base_env: dict[str, str]) -> None:
    report = run_doctor({**base_env, **receiver.env()})
    assert report.healthy, report.to_json()
    assert report.line == "healthy"
    assert report.route == "langfuse"
    names = {c.name: c.ok for c in report.checks}
    assert names["dns"] and names["tcp"] and names["credentials"] and names["canary"]
    assert names["tls"] is None  # http:// receiver
    assert CANARY_SPAN_NAME in receiver.span_names()


def test_waiting_spool_is_reported(receiver: LangfuseReceiver, base_env: dict[str, str]) -> None:
    env = {**base_env, **receiver.env()}
    spool = _spool_for(env)
    spool.write(encode(_spans(3)).message.SerializeToString(), 3, "detectors")
    spool.write(encode(_spans(2)).message.SerializeToString(), 2, "detectors")
    report = run_doctor(env)
    assert report.line == "5 spans are waiting in the spool: run `otel-basic replay`"
    assert report.spool is not None
    assert report.spool["batches"] == 2 and report.spool["spans"] == 5
    assert report.spool["oldest_age_seconds"] is not None


def test_rejected_spool_is_reported_with_its_reason(
    receiver: LangfuseReceiver, base_env: dict[str, str]
) -> None:
    env = {**base_env, **receiver.env()}
    spool = _spool_for(env)
    spool.write(encode(_spans(1)).message.SerializeToString(), 1, "detectors")
    spool.reject(encode(_spans(4)).message.SerializeToString(), 4, "HTTP 400 from the endpoint: bad span", "detectors")
    report = run_doctor(env)
    assert report.line == (
        "4 spans were rejected (HTTP 400 from the endpoint: bad span): fix it, then run "
        "`otel-basic replay --rejected`"
    )
    assert report.spool is not None
    assert report.spool["rejected_reasons"] == {"HTTP 400 from the endpoint: bad span": 4}


def test_file_route_is_healthy_and_writes_the_canary(tmp_path: Path, base_env: dict[str, str]) -> None:
    path = tmp_path / "spans.jsonl"
    report = run_doctor({**base_env, "OTEL_BASIC_FILE": str(path)})
    assert report.healthy, report.to_json()
    assert CANARY_SPAN_NAME in path.read_text()


# --- as a real process -------------------------------------------------------------------------


def _doctor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OTEL_BASIC, "doctor", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_cli_healthy_exit_0_and_no_secret(receiver: LangfuseReceiver) -> None:
    proc = _doctor(env=subprocess_env(**receiver.env()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().splitlines()[-1] == "healthy"
    for secret in _forbidden():
        assert secret not in proc.stdout + proc.stderr
    assert CANARY_SPAN_NAME in receiver.span_names()


def test_cli_json_parses_and_hides_the_secret(base_env: dict[str, str]) -> None:
    with LangfuseReceiver(public_key="pk-lf-other", secret_key="sk-lf-other") as other:
        env = subprocess_env(
            LANGFUSE_PUBLIC_KEY=PUBLIC, LANGFUSE_SECRET_KEY=SECRET, LANGFUSE_BASE_URL=other.base_url
        )
        proc = _doctor("--json", env=env)
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert set(data) >= {"config", "route", "checks", "spool", "verdict", "fix"}
    assert data["verdict"] == "unhealthy" and data["route"] == "langfuse"
    assert data["fix"].startswith("401 from Langfuse")
    assert all(set(c) == {"name", "ok", "detail"} for c in data["checks"])
    for secret in _forbidden():
        assert secret not in proc.stdout + proc.stderr


def test_cli_human_output_hides_the_secret_on_failure() -> None:
    port = _closed_port()
    env = subprocess_env(
        LANGFUSE_PUBLIC_KEY=PUBLIC,
        LANGFUSE_SECRET_KEY=SECRET,
        LANGFUSE_BASE_URL=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_HEADERS=f"x-api-key={SECRET}",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
    )
    proc = subprocess.run(
        [PYTHON, "-m", "otel_basic.cli", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout.rstrip().splitlines()[-1].startswith(f"connection refused at 127.0.0.1:{port}")
    for secret in _forbidden():
        assert secret not in proc.stdout + proc.stderr


def test_cli_nothing_configured_exit_1() -> None:
    env = subprocess_env()
    assert not any(k.startswith("LANGFUSE_") for k in env) and "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    proc = _doctor(env=env)
    assert proc.returncode == 1
    assert proc.stdout.rstrip().splitlines()[-1] == NOTHING_CONFIGURED
    assert os.environ.get("OTEL_BASIC_SPOOL_DIR")  # the conftest isolation is in place


def test_credentials_in_an_endpoint_url_never_show_in_text_or_json() -> None:
    password = "pw-in-the-url-123456"
    url = f"http://user:{password}@127.0.0.1:{_closed_port()}"
    env = subprocess_env(OTEL_EXPORTER_OTLP_ENDPOINT=url)
    text, js = _doctor(env=env), _doctor("--json", env=env)
    assert text.returncode == 1 and js.returncode == 1
    for out in (text, js):
        assert password not in out.stdout + out.stderr
    assert "****@127.0.0.1" in text.stdout
    data = json.loads(js.stdout)
    assert any(row["variable"] == "OTEL_EXPORTER_OTLP_ENDPOINT" for row in data["settings"])


def test_the_configuration_table_and_value_warnings(receiver: LangfuseReceiver) -> None:
    env = subprocess_env(**receiver.env(), OTEL_BSP_SCHEDULE_DELAY="1e308")
    proc = _doctor(env=env)
    assert proc.returncode == 1  # a value not used as written is a finding
    last = proc.stdout.rstrip().splitlines()[-1]
    assert last.startswith("OTEL_BSP_SCHEDULE_DELAY:") and "accepted: 1 – 3600000" in last
    data = json.loads(_doctor("--json", env=env).stdout)
    rows = {row["variable"]: row for row in data["settings"]}
    assert rows["OTEL_BSP_SCHEDULE_DELAY"]["source"] == "OTEL_BSP_SCHEDULE_DELAY"
    assert rows["OTEL_BSP_MAX_QUEUE_SIZE"]["source"] == "default"
    assert rows["LANGFUSE_SECRET_KEY"]["value"] != receiver.env()["LANGFUSE_SECRET_KEY"]
