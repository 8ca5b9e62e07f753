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
            "OTEL_EXPORTER_OTLP_TIMEOUT": "3000",
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
        ({**LF, "LANGFUSE_BASE_URL": "http://[::1"}, "LANGFUSE_BASE_URL"),
        ({**LF, "LANGFUSE_BASE_URL": "", "LANGFUSE_HOST": "http://[::1"}, "LANGFUSE_HOST"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://[::1"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        ({**LF, "LANGFUSE_BASE_URL": "HTTP://remote.example"}, "LANGFUSE_BASE_URL"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://u:{SECRET}@remote.example"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({**LF, "LANGFUSE_BASE_URL": "https://lf.example.com/api/public/otel"}, "LANGFUSE_BASE_URL"),
        ({**LF, "LANGFUSE_BASE_URL": "https://lf.example.com?region=eu"}, "LANGFUSE_BASE_URL"),
        ({**LF, "LANGFUSE_BASE_URL": "https://lf.example.com/#x"}, "LANGFUSE_BASE_URL"),
        ({**LF, "LANGFUSE_BASE_URL": "https://lf.example .com"}, "LANGFUSE_BASE_URL"),
        ({**LF, "LANGFUSE_BASE_URL": "https://lf.example.com\nhttps://other"}, "LANGFUSE_BASE_URL"),
        ({**LF, "OTEL_BASIC_MASK": "hid"}, "OTEL_BASIC_MASK"),
        ({**LF, "OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"}, "OTEL_EXPORTER_OTLP_CERTIFICATE"),
        ({"LANGFUSE_SECRET_KEY": SECRET}, "LANGFUSE_PUBLIC_KEY"),
        ({"LANGFUSE_PUBLIC_KEY": "pk-lf-1"}, "LANGFUSE_SECRET_KEY"),
        ({**LF, "OTEL_BASIC_MASK_PATTERNS": "{not json"}, "OTEL_BASIC_MASK_PATTERNS"),
        ({**LF, "OTEL_BASIC_MASK_PATTERNS": '{"x": "("}'}, "OTEL_BASIC_MASK_PATTERNS"),
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


def test_the_refusal_says_which_credentials_it_refused_to_send() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://10.0.0.5:4318", "OTEL_EXPORTER_OTLP_HEADERS": f"x-key={SECRET}"}
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert "OTEL_EXPORTER_OTLP_[TRACES_]HEADERS" in str(info.value) and SECRET not in str(info.value)


def test_plain_http_credentials_to_remote_host_refused_unless_opted_in() -> None:
    env = {**LF, "LANGFUSE_BASE_URL": "http://langfuse.internal.example:3000"}
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.variable == "LANGFUSE_BASE_URL" and "OTEL_BASIC_ALLOW_INSECURE" in str(info.value)
    assert load_settings({**env, "OTEL_BASIC_ALLOW_INSECURE": "true"}).route == "langfuse"
    assert load_settings({**LF, "LANGFUSE_BASE_URL": "http://127.0.0.1:3000"}).route == "langfuse"


@pytest.mark.parametrize("host", ["foo.localhost", "localhost.example.com", "127.0.0.1.nip.io", "localhost."])
def test_plain_http_credentials_to_a_name_dns_may_resolve_elsewhere_are_refused(host: str) -> None:
    """Only ``localhost`` and loopback IP literals count as this machine: ``*.localhost`` names may go to
    DNS, so Basic auth over plain http to them could leave the machine."""
    with pytest.raises(ConfigError):
        load_settings({**LF, "LANGFUSE_BASE_URL": f"http://{host}:3000"})
    assert load_settings({**LF, "LANGFUSE_BASE_URL": "http://localhost:3000"}).route == "langfuse"


# --- the declared table: every row x {valid edges, invalid, extreme} -------------------------------

import logging  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from otel_basic import settings as settings_module  # noqa: E402
from otel_basic.settings import TABLE, Row, Settings  # noqa: E402

_DEFAULT = Settings()
_NUMERIC = {"int", "float", "duration"}
_SCALE = {"ms": 0.001, "MB": 1024 * 1024}


def _bounds(row: Row) -> tuple[float, float]:
    lo, _, hi = row.range.split(", 0 = ")[0].partition(" – ")  # "1 – 600000, 0 = no limit (600000)"
    return float(lo), (65536 if hi == "queue size" else float(hi))  # the default queue size


def _field_value(row: Row, env_value: float) -> Any:
    value = env_value * _SCALE.get(row.unit, 1.0)
    if row.type == "int" or row.key == "spool_max_bytes":
        return int(value)
    return value


def _cases() -> list[tuple[Row, str, str, Any]]:
    """(row, raw value, kind, expected field value or a marker). kinds: valid, invalid, extreme."""
    cases: list[tuple[Row, str, str, Any]] = []
    for row in TABLE:
        if row.type in _NUMERIC:
            lo, hi = _bounds(row)
            cases += [(row, repr(lo), "valid", _field_value(row, lo)), (row, repr(hi), "valid", _field_value(row, hi))]
            for raw in ("lots", "nan", "12abc"):
                cases.append((row, raw, "invalid", "default"))
            if row.type == "int":
                cases.append((row, "2.5", "invalid", "default"))
            for raw, edge in (("1e308", hi), ("inf", hi), ("1e23", hi), ("-1e308", lo), ("-inf", lo)):
                cases.append((row, raw, "extreme", _field_value(row, edge)))
            if lo > 0:
                cases.append((row, "-5", "extreme", _field_value(row, lo)))
        elif row.type == "enum" or row.type == "bool":
            text = row.range.replace("/", ",") if row.type == "bool" else row.range
            for value in (a.strip() for a in text.split(",")):
                cases.append((row, value.upper(), "valid", "any"))
            effect = "disable" if row.on_invalid == "disable" else "default"
            if row.parse is settings_module._spec_bool:
                effect = "false"  # the spec: anything but "true" is false (with a warning)
            cases.append((row, "carrier-pigeon", "invalid", effect))
            cases.append((row, "x" * 10_000, "extreme", effect))
        elif row.type == "URL":
            cases.append((row, "https://ok.example.com", "valid", "any"))
            for raw in ("http://[::1", "ftp://x", "http://", "https://h:99999", "https://a b"):
                cases.append((row, raw, "invalid", "disable"))
            cases.append((row, "https://" + "a" * 100_000 + ".com", "extreme", "any"))
        elif row.type == "path" and row.on_invalid == "disable":
            cases.append((row, "/nonexistent/file.pem", "invalid", "disable"))
            cases.append((row, "/dev/null\x01", "extreme", "disable"))
        elif row.type == "key=value list":
            cases.append((row, "a=b,c=d", "valid", "any"))
            cases.append((row, "garbage", "invalid", "default"))
            cases.append((row, "=" * 50_000, "extreme", "default"))
        elif row.type == "JSON object":
            cases.append((row, '{"order": "ORD-[0-9]+"}', "valid", "any"))
            cases.append((row, "{nope", "invalid", "disable"))
            cases.append((row, '{"x": "(((("}', "extreme", "disable"))
        elif row.type.startswith("string"):
            cases.append((row, "ok-value", "valid", "any"))
            cases.append((row, "a\x07b", "invalid", "disable" if row.on_invalid == "disable" else "default"))
    return cases


LF_SAFE = {**LF, "OTEL_BASIC_SPOOL_DIR": "off"}
_ALL_CASES = _cases()


def test_every_row_is_covered_by_the_table_test() -> None:
    covered = {row.key for row, _, _, _ in _ALL_CASES}
    # plain paths and free lists accept anything printable: nothing is invalid for them
    uncovered = {row.names[0] for row in TABLE if row.key not in covered}
    assert uncovered <= {"OTEL_BASIC_SPOOL_DIR", "OTEL_BASIC_FILE", "OTEL_BASIC_MASK_ALLOW_KEYS"}, uncovered


@pytest.mark.parametrize(
    ("row", "raw", "kind", "expected"),
    _ALL_CASES,
    ids=[f"{r.names[0]}={raw[:20]!r}-{kind}" for r, raw, kind, _ in _ALL_CASES],
)
def test_every_setting_valid_invalid_extreme(
    row: Row, raw: str, kind: str, expected: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings_module._warned.clear()
    variable = row.names[0]
    env = {**LF_SAFE, variable: raw}
    if variable == "LANGFUSE_PUBLIC_KEY" or variable == "LANGFUSE_SECRET_KEY":
        env = {k: v for k, v in env.items()} | {variable: raw}
    caplog.set_level(logging.WARNING, logger="otel_basic")
    started = time.monotonic()
    if expected == "disable":
        with pytest.raises(ConfigError) as info:
            load_settings(env)
        assert info.value.variable == variable
        assert SECRET not in str(info.value)
        return
    s = load_settings(env)
    # No quadratic parse of a 10-100 KB value (that would take minutes); generous, the suite runs in parallel.
    assert time.monotonic() - started < 10.0
    mine = [w for w in s.warnings if w.startswith(variable + ":")]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"otel-basic: {variable}:")]
    if kind == "valid":
        assert mine == [], mine
        if expected != "any" and not row.key.startswith("_"):
            value = getattr(s, row.key)
            assert math.isclose(value, expected, rel_tol=1e-9), (value, expected)
        return
    if expected == "any":  # an extreme but acceptable value: no traceback, that is all
        return
    assert len(mine) == 1, s.warnings  # exactly one warning naming the variable
    assert len(logged) == 1, logged  # ... logged once
    if row.range:
        assert row.range in mine[0]  # ... with the accepted range
    assert SECRET not in mine[0]
    if row.key.startswith("_"):
        return
    value = getattr(s, row.key)
    if expected == "false":
        assert value is False
    elif expected == "default":
        if row.key == "headers":
            assert "a" not in value
        elif row.key == "spool_dir":
            pass
        else:
            assert value == getattr(_DEFAULT, row.key), (value, getattr(_DEFAULT, row.key))
    else:
        assert math.isclose(value, expected, rel_tol=1e-9), (value, expected)
    # and the pipeline can be built from it without a traceback (clamped values are usable)
    assert s.route == "langfuse"


def test_warning_is_logged_once_per_process_even_when_configure_is_called_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings_module._warned.clear()
    caplog.set_level(logging.WARNING, logger="otel_basic")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "1e308")
    for _ in range(3):
        otel_basic.configure(enabled=False)
        load_settings()
    assert sum("OTEL_BSP_SCHEDULE_DELAY" in r.getMessage() for r in caplog.records) == 1


def test_spec_semantics_of_durations_and_timeouts() -> None:
    s = load_settings({**LF, "OTEL_EXPORTER_OTLP_TIMEOUT": "100", "OTEL_BSP_EXPORT_TIMEOUT": "45000"})
    assert s.export_timeout == pytest.approx(0.1)  # 100 ms, as the spec says (not 100 s)
    assert s.batch_export_timeout == pytest.approx(45.0)  # does not override the OTLP timeout
    s = load_settings({**LF, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_TIMEOUT": "9"})
    assert s.export_timeout == pytest.approx(2.5)  # the TRACES_ variable wins
    assert load_settings({**LF, "OTEL_BSP_SCHEDULE_DELAY": "250"}).schedule_delay == pytest.approx(0.25)


def test_protocols_compression_and_scheme_less_grpc() -> None:
    js = load_settings(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    )
    assert js.enabled and js.protocol == "http/json" and js.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert load_settings({**LF, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}).protocol == "http/json"
    deflate = load_settings({**LF, "OTEL_EXPORTER_OTLP_COMPRESSION": "deflate"})
    assert deflate.enabled and deflate.compression == "gzip"
    assert any("deflate" in w for w in deflate.warnings)
    grpc = {"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert load_settings(grpc).endpoint == "https://localhost:4317"  # spec: TLS unless insecure
    plain = load_settings({**grpc, "OTEL_EXPORTER_OTLP_INSECURE": "true"})
    assert plain.enabled and plain.endpoint == "http://localhost:4317" and plain.insecure is True
    assert load_settings({**grpc, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4317"}).endpoint == (
        "http://localhost:4317"
    )


def test_traces_exporter_variable() -> None:
    assert load_settings({**LF, "OTEL_TRACES_EXPORTER": "none"}).route == "disabled"
    console = load_settings({**LF, "OTEL_TRACES_EXPORTER": "console"})
    assert console.route == "console" and console.enabled
    default = load_settings({"OTEL_TRACES_EXPORTER": "otlp"})
    assert default.route == "otlp" and default.endpoint == "http://localhost:4318/v1/traces"
    assert load_settings({**LF, "OTEL_TRACES_EXPORTER": "otlp"}).route == "langfuse"
    both = load_settings({**LF, "OTEL_TRACES_EXPORTER": "console,otlp"})
    assert both.route == "console" and any("OTEL_TRACES_EXPORTER" in w for w in both.warnings)


def test_endpoint_argument_has_the_same_path_semantics_as_the_variable() -> None:
    base = "http://127.0.0.1:4318/prefix"
    from_env = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": base})
    from_arg = load_settings({}, endpoint=base)
    assert from_env.endpoint == from_arg.endpoint == base + "/v1/traces"
    exact = "http://127.0.0.1:4318/custom/path"
    assert load_settings({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": exact}).endpoint == exact
    assert load_settings({}, traces_endpoint=exact).endpoint == exact
    doubled = load_settings({}, endpoint="http://127.0.0.1:4318/v1/traces")
    assert doubled.endpoint.endswith("/v1/traces/v1/traces")
    assert any("traces_endpoint" in w for w in doubled.warnings)


def test_arguments_are_range_checked_like_variables() -> None:
    s = load_settings(LF, flush_timeout=1e12, export_workers=10**23, schedule_delay=float("nan"))
    assert s.flush_timeout == 3600 and s.export_workers == 16 and s.schedule_delay == _DEFAULT.schedule_delay
    assert sum("configure(" in w for w in s.warnings) == 3


def test_sampler_and_span_limits_are_settings_so_a_change_rebuilds() -> None:
    a = load_settings(LF)
    b = load_settings({**LF, "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"})
    assert a != b
    assert "TraceIdRatioBased" in type(b.sampler()).__name__ and "0.25" in b.sampler().get_description()
    c = load_settings({**LF, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "7", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "99"})
    assert a != c
    limits = c.span_limits()
    assert limits.max_span_attributes == 7 and limits.max_span_attribute_length == 99
    assert limits.max_event_attributes == 128
    assert a.span_limits().max_span_attribute_length is None


def test_scheme_and_host_are_case_insensitive_for_the_plain_http_refusal() -> None:
    for url in ("HTTP://remote.example", "Http://REMOTE.example:80", "http://u:pw@remote.example"):
        with pytest.raises(ConfigError):
            load_settings({**LF, "LANGFUSE_BASE_URL": url})
    assert load_settings({**LF, "LANGFUSE_BASE_URL": "HTTP://LOCALHOST:3000/"}).endpoint == (
        "http://localhost:3000/api/public/otel/v1/traces"
    )


def test_credentials_in_a_url_never_show() -> None:
    url = f"https://user:{SECRET}@collector.example:4318"
    s = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": url})
    assert s.route == "otlp"
    for text in (repr(s), str(s.describe()), s.reason, str(settings_module.effective_rows(s, {}))):
        assert SECRET not in text
    assert settings_module.redact_url(url) == "https://****@collector.example:4318"
    assert SECRET not in settings_module.redact_url(f"https://h/?token={SECRET}")
    assert SECRET not in settings_module.redact_urls_in(f"ConnectError sending to {url}/v1/traces")


def test_private_dirs_whatever_the_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0)
    try:
        made = settings_module.make_private_dir(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old)
    for path in (tmp_path / "a", tmp_path / "a" / "b", made):
        assert path.stat().st_mode & 0o777 == 0o700


def test_readme_configuration_table_is_generated_from_the_declared_table() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert settings_module.markdown_table() in readme, "run: python -m otel_basic.settings --markdown"
    for row in TABLE:
        assert f"`{row.names[0]}`" in readme


HOSTILE = {
    "LANGFUSE_BASE_URL": "http://[::1",
    "OTEL_BASIC_SPOOL_MAX_MB": "1e308",
    "OTEL_BSP_SCHEDULE_DELAY": "1e308",
    "OTEL_BASIC_FLUSH_TIMEOUT": "1e12",
    "OTEL_BASIC_EXPORT_WORKERS": "1e23",
    "OTEL_BSP_MAX_QUEUE_SIZE": "-inf",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "nan",
    "OTEL_TRACES_SAMPLER_ARG": "1e308",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "1e23",
    "OTEL_SDK_DISABLED": "\x00",
}


@pytest.mark.parametrize("entry", ["import basic.observability", "import otel_basic; otel_basic.configure()"])
def test_hostile_environment_never_gives_a_traceback(entry: str) -> None:
    env = subprocess_env(LANGFUSE_PUBLIC_KEY="pk-lf-1", LANGFUSE_SECRET_KEY=SECRET, **HOSTILE)
    env.pop("OTEL_SDK_DISABLED")  # a NUL byte cannot go through exec; the table test covers it
    code = entry + "\nimport otel_basic; print('flush', bool(otel_basic.flush(timeout=1)) or 'ok')\n"
    proc = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "LANGFUSE_BASE_URL" in proc.stderr and SECRET not in proc.stderr + proc.stdout


def test_extreme_values_are_clamped_and_spans_still_arrive(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_basic.testing import LangfuseReceiver

    with LangfuseReceiver() as receiver:
        hostile = {k: v for k, v in HOSTILE.items() if k not in ("LANGFUSE_BASE_URL", "OTEL_SDK_DISABLED")}
        env = {**receiver.env(), **hostile}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        started = time.monotonic()
        tel = otel_basic.configure()
        assert tel.enabled and time.monotonic() - started < 10
        with otel_basic.get_tracer("t").start_as_current_span("survives-extremes"):
            pass
        report = otel_basic.flush(timeout=5)
        assert report, report
        assert "survives-extremes" in receiver.span_names()


def test_console_exporter_prints_spans() -> None:
    code = (
        "import otel_basic\n"
        "assert otel_basic.configure().enabled\n"
        "with otel_basic.get_tracer('t').start_as_current_span('printed-span'):\n"
        "    pass\n"
        "print('flushed', bool(otel_basic.flush(timeout=5)))\n"
    )
    env = subprocess_env(OTEL_TRACES_EXPORTER="console")
    proc = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"name":"printed-span"' in proc.stdout and "flushed True" in proc.stdout  # OTLP/JSON lines


@pytest.mark.parametrize(
    "variable",
    [
        "OTEL_BSP_MAX_QUEUE_SIZE=100",  # valid, but smaller than the SDK's default batch
        "OTEL_BSP_MAX_QUEUE_SIZE=0",
        "OTEL_BSP_SCHEDULE_DELAY=0",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=0",
        "OTEL_BSP_SCHEDULE_DELAY=1e308",
        "OTEL_BSP_MAX_QUEUE_SIZE=nan",
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=²",  # "²".isdigit() is true, int("²") raises: crashed the import
        "OTEL_BSP_SCHEDULE_DELAY=²",
        "LANGFUSE_FLUSH_AT=²",
        "OTEL_BSP_SCHEDULE_DELAY= ",  # blank or "unset": the SDK logged a traceback parsing it
        "OTEL_BSP_MAX_QUEUE_SIZE=unset",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=4096",  # valid for our queue, above the SDK's default 2048
        "LANGFUSE_FLUSH_AT=abc",
    ],
)
def test_bsp_values_the_sdk_reads_itself_never_turn_tracing_off(variable: str) -> None:
    """The Langfuse client's processor (an SDK BatchSpanProcessor) reads OTEL_BSP_* on its own."""
    from otel_basic.testing import LangfuseReceiver

    name, value = variable.split("=", 1)
    with LangfuseReceiver() as receiver:
        code = (
            "import otel_basic\nt = otel_basic.configure()\nprint('enabled', t.enabled)\n"
            "otel_basic.get_tracer('t').start_span('arrives').end()\n"
            "print('flush', bool(otel_basic.flush(timeout=5)))\n"
        )
        env = subprocess_env(**receiver.env(), **{name: value})
        proc = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert "enabled True" in proc.stdout and "flush True" in proc.stdout, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count(name) <= 1, proc.stderr  # one warning, naming the variable
        assert [s.name for s in receiver.spans] == ["arrives"]


def test_a_zero_otel_timeout_means_no_limit_as_the_spec_says() -> None:
    """The spec: implementations SHOULD read a zero timeout as indefinite. It was clamped to 1 ms, so every
    export timed out at once; now it is the maximum, without a warning."""
    s = load_settings({**LF, "OTEL_EXPORTER_OTLP_TIMEOUT": "0", "OTEL_BSP_EXPORT_TIMEOUT": "0"})
    assert s.export_timeout == 600.0 and s.batch_export_timeout == 3600.0
    assert not [w for w in s.warnings if "TIMEOUT" in w], s.warnings
