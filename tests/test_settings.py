"""Settings: precedence, the no-op cases, and one clear message per bad variable."""

from __future__ import annotations

import base64
import subprocess

import pytest

import otel_basic
from otel_basic.settings import ConfigError, load_settings

from .conftest import PYTHON, SECRET, subprocess_env

LF = {
    "LANGFUSE_PUBLIC_KEY": "pk-lf-1",
    "LANGFUSE_SECRET_KEY": SECRET,
    "LANGFUSE_BASE_URL": "https://lf.example.com",
}


def test_langfuse_variables_give_the_langfuse_endpoint_and_headers() -> None:
    s = load_settings(LF)
    assert s.route == "langfuse"
    assert s.endpoint == "https://lf.example.com/api/public/otel/v1/traces"
    assert s.headers["authorization"] == "Basic " + base64.b64encode(f"pk-lf-1:{SECRET}".encode()).decode()
    assert s.headers["x-langfuse-ingestion-version"] == "4"
    assert s.compression == "gzip" and s.protocol == "http/protobuf"


def test_base_url_wins_over_host_and_host_still_works() -> None:
    both = load_settings({**LF, "LANGFUSE_HOST": "https://old.example.com"})
    assert both.endpoint.startswith("https://lf.example.com/")
    env = {k: v for k, v in LF.items() if k != "LANGFUSE_BASE_URL"} | {
        "LANGFUSE_HOST": "https://old.example.com/"
    }
    assert load_settings(env).endpoint == "https://old.example.com/api/public/otel/v1/traces"


def test_otlp_endpoint_wins_over_langfuse_and_is_a_base_url() -> None:
    s = load_settings({**LF, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/"})
    assert s.route == "otlp"
    assert s.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert "authorization" not in s.headers  # the collector holds the credentials
    traces = load_settings({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/custom/path"})
    assert traces.endpoint == "http://127.0.0.1:9/custom/path"


def test_otlp_headers_protocol_compression_timeout() -> None:
    s = load_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Basic%20abc,x-langfuse-ingestion-version=4",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
        }
    )
    assert s.protocol == "grpc" and s.endpoint == "http://localhost:4317"
    assert s.headers == {"authorization": "Basic abc", "x-langfuse-ingestion-version": "4"}
    assert s.compression == "none" and s.export_timeout == 3


def test_explicit_arguments_win_over_environment() -> None:
    s = load_settings({**LF, "OTEL_SERVICE_NAME": "from-env"}, service_name="from-arg", flush_timeout=1.5)
    assert s.service_name == "from-arg" and s.flush_timeout == 1.5
    s2 = load_settings(LF, endpoint="http://127.0.0.1:4318")
    assert s2.route == "otlp" and s2.endpoint == "http://127.0.0.1:4318/v1/traces"


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({}, "nothing configured"),
        ({**LF, "OTEL_SDK_DISABLED": "true"}, "OTEL_SDK_DISABLED"),
        ({**LF, "LANGFUSE_TRACING_ENABLED": "false"}, "LANGFUSE_TRACING_ENABLED"),
    ],
)
def test_disabled_cases_are_noops(env: dict[str, str], reason: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    tel = otel_basic.configure()
    assert not tel.enabled and reason in tel.settings.reason
    report = otel_basic.flush(timeout=5)
    assert not report.enabled and report.duration == 0


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        (
            {
                "LANGFUSE_PUBLIC_KEY": "pk-lf-1",
                "LANGFUSE_SECRET_KEY": SECRET,
                "LANGFUSE_BASE_URL": "lf.example.com",
            },
            "LANGFUSE_BASE_URL",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318",
                "OTEL_EXPORTER_OTLP_HEADERS": f"oops{SECRET}",
            },
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        ({**LF, "OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({**LF, "OTEL_BSP_SCHEDULE_DELAY": "-5"}, "OTEL_BSP_SCHEDULE_DELAY"),
        ({"LANGFUSE_SECRET_KEY": SECRET}, "LANGFUSE_PUBLIC_KEY"),
        ({"LANGFUSE_PUBLIC_KEY": "pk-lf-1"}, "LANGFUSE_SECRET_KEY"),
        ({**LF, "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({**LF, "OTEL_BASIC_STEP_FLUSH": "sometimes"}, "OTEL_BASIC_STEP_FLUSH"),
        ({**LF, "OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED"),
        ({**LF, "OTEL_BASIC_EXPORT_WORKERS": "0"}, "OTEL_BASIC_EXPORT_WORKERS"),
        ({**LF, "OTEL_BASIC_MASK_PATTERNS": "{not json"}, "OTEL_BASIC_MASK_PATTERNS"),
        ({**LF, "OTEL_BASIC_MASK_PATTERNS": '{"x": "("}'}, "OTEL_BASIC_MASK_PATTERNS"),
        ({**LF, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "5000", "OTEL_BSP_MAX_QUEUE_SIZE": "100"},
         "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:99999"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ],
)
def test_bad_values_name_the_variable_and_never_the_secret(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.variable == variable
    assert variable in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


def test_bad_value_at_import_is_one_warning_and_the_app_keeps_running() -> None:
    env = subprocess_env(LANGFUSE_PUBLIC_KEY="pk-lf-1", LANGFUSE_SECRET_KEY=SECRET, LANGFUSE_BASE_URL="nope")
    code = (
        "import basic.observability as o\n"
        "assert o._tracer_provider is None and o._langfuse_client is None and o._langfuse_handler is None\n"
        "r = o.flush_langfuse(); assert not r.enabled\n"
        "print('app still running')\n"
    )
    proc = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "app still running" in proc.stdout
    assert "LANGFUSE_BASE_URL" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_repr_and_describe_hide_secrets() -> None:
    s = load_settings(LF)
    for text in (repr(s), str(s.describe())):
        assert SECRET not in text
        assert base64.b64encode(f"pk-lf-1:{SECRET}".encode()).decode() not in text


def test_plain_http_credentials_to_remote_host_refused_unless_opted_in() -> None:
    env = {**LF, "LANGFUSE_BASE_URL": "http://langfuse.internal.example:3000"}
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.variable == "LANGFUSE_BASE_URL" and "OTEL_BASIC_ALLOW_INSECURE" in str(info.value)
    assert load_settings({**env, "OTEL_BASIC_ALLOW_INSECURE": "true"}).route == "langfuse"
    assert load_settings({**LF, "LANGFUSE_BASE_URL": "http://127.0.0.1:3000"}).route == "langfuse"
