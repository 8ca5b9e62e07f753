"""Static checks of the collector configs (otel-collector.yaml, collector/docker-compose.yml) and of
how :mod:`otel_basic.collector` configures rotel, without starting anything.

Why: otelcol-contrib and Docker are not runnable here, so these tests are what keeps the YAML
consistent (every pipeline reference defined, memory_limiter first, persistent queue, no secret,
localhost by default) and in step with the app's direct Langfuse path (same URL, same headers).
"""

from __future__ import annotations

import base64
import itertools
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_basic import collector as col
from otel_basic.settings import (
    DEFAULT_LANGFUSE_BASE_URL,
    LANGFUSE_OTLP_PATH,
    LANGFUSE_TRACES_PATH,
    ConfigError,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "otel-collector.yaml"
COMPOSE_PATH = ROOT / "collector" / "docker-compose.yml"
EXPORTER = "otlphttp/langfuse"

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ANY_REF = re.compile(r"\$\{([^}]*)\}")


def _resolve(value: Any, env: Mapping[str, str]) -> Any:
    """Expand ``${env:NAME}`` / ``${env:NAME:-default}`` as otelcol does (``:-``: unset or empty)."""
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: _resolve(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, env) for v in value]
    return value


@pytest.fixture(scope="module")
def raw_text() -> str:
    return CONFIG_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def config(raw_text: str) -> dict[str, Any]:
    data = yaml.safe_load(raw_text)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_PATH.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


# ---------------------------------------------------------------------- structure


def test_top_level_sections(config: dict[str, Any]) -> None:
    assert set(config) == {"extensions", "receivers", "processors", "exporters", "service"}


def test_every_pipeline_reference_is_defined(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces"}, "Langfuse ingests traces only"
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in (config.get(kind) or {}), f"{name}.{kind}: {component} is not defined"
        assert pipeline["receivers"] and pipeline["exporters"]


def test_every_defined_component_is_used(config: dict[str, Any]) -> None:
    """An unused component is usually a typo in a pipeline (otelcol ignores it silently)."""
    used = {kind: set() for kind in ("receivers", "processors", "exporters")}  # type: dict[str, set[str]]
    for pipeline in config["service"]["pipelines"].values():
        for kind in used:
            used[kind].update(pipeline.get(kind, []))
    for kind, names in used.items():
        assert set(config[kind]) == names, f"unused {kind}: {set(config[kind]) - names}"


def test_service_extensions_are_defined_and_complete(config: dict[str, Any]) -> None:
    enabled = config["service"]["extensions"]
    assert len(enabled) == len(set(enabled))
    for ext in enabled:
        assert ext in config["extensions"], f"service.extensions names undefined {ext}"
    assert {"health_check", "file_storage"} <= set(enabled)
    # Every extension a component points at must be enabled, or otelcol fails at start.
    exporter = config["exporters"][EXPORTER]
    assert exporter["auth"]["authenticator"] in enabled
    assert exporter["sending_queue"]["storage"] in enabled
    assert set(config["extensions"]) == set(enabled), "defined but not enabled extensions do nothing"


def test_memory_limiter_first_then_batch(config: dict[str, Any]) -> None:
    for pipeline in config["service"]["pipelines"].values():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter"
        assert "batch" in processors
        assert processors.index("memory_limiter") < processors.index("batch")
    limiter = config["processors"]["memory_limiter"]
    assert limiter["check_interval"]
    assert 0 < limiter["spike_limit_percentage"] < limiter["limit_percentage"] <= 90


def test_receivers_bind_localhost_by_default(config: dict[str, Any]) -> None:
    protocols = config["receivers"]["otlp"]["protocols"]
    assert set(protocols) == {"grpc", "http"}
    defaults = _resolve(config, {})
    got = defaults["receivers"]["otlp"]["protocols"]
    assert got["grpc"]["endpoint"] == "127.0.0.1:4317"
    assert got["http"]["endpoint"] == "127.0.0.1:4318"
    assert defaults["extensions"]["health_check"]["endpoint"] == "127.0.0.1:13133"
    # The container sets OTEL_COLLECTOR_BIND=0.0.0.0 (published on 127.0.0.1 by compose).
    inside = _resolve(config, {"OTEL_COLLECTOR_BIND": "0.0.0.0"})["receivers"]["otlp"]["protocols"]
    assert inside["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert inside["http"]["endpoint"] == "0.0.0.0:4318"


def test_only_env_provider_references(raw_text: str) -> None:
    """Bare ``${VAR}`` is deprecated in otelcol; every reference must be ``${env:...}`` and known."""
    known = {"OTEL_COLLECTOR_BIND", "OTEL_COLLECTOR_STORAGE_DIR", "LANGFUSE_PUBLIC_KEY",
             "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL", "LANGFUSE_AUTH"}
    for line in raw_text.splitlines():
        line = line.split("#", 1)[0]  # comments may show the syntax itself
        for ref in _ANY_REF.findall(line):
            match = _ENV_REF.fullmatch("${" + ref + "}")
            assert match, f"not an ${{env:...}} reference: ${{{ref}}} in {line.strip()!r}"
            assert match.group(1) in known, f"unexpected variable {match.group(1)}"


# ---------------------------------------------------------------------- the Langfuse exporter


def test_exporter_endpoint_is_langfuse_otel_base(config: dict[str, Any]) -> None:
    endpoint = config["exporters"][EXPORTER]["endpoint"]
    assert endpoint == "${env:LANGFUSE_BASE_URL:-" + DEFAULT_LANGFUSE_BASE_URL + "}" + LANGFUSE_OTLP_PATH
    # otlphttp appends /v1/traces: the same URL the app's direct path posts to.
    for env in ({}, {"LANGFUSE_BASE_URL": "https://langfuse.example.com"}):
        resolved = _resolve(endpoint, env) + "/v1/traces"
        settings = load_settings({"LANGFUSE_PUBLIC_KEY": "pk-lf-x", "LANGFUSE_SECRET_KEY": "sk-lf-x", **env})
        assert settings.route == "langfuse"
        assert resolved == settings.endpoint == settings.langfuse_base_url + LANGFUSE_TRACES_PATH


def test_exporter_headers_match_the_direct_path(config: dict[str, Any]) -> None:
    """Collector and app must authenticate identically: Basic base64(pk:sk) + ingestion version 4."""
    env = {"LANGFUSE_PUBLIC_KEY": "pk-lf-1234", "LANGFUSE_SECRET_KEY": "sk-lf-5678"}
    resolved = _resolve(config, env)
    exporter = resolved["exporters"][EXPORTER]
    auth = resolved["extensions"][exporter["auth"]["authenticator"]]["client_auth"]
    collector_authorization = "Basic " + base64.b64encode(
        f"{auth['username']}:{auth['password']}".encode()).decode()
    direct = load_settings(env).headers
    assert collector_authorization == direct["authorization"]
    headers = {k.lower(): v for k, v in exporter["headers"].items()}
    assert headers == {"x-langfuse-ingestion-version": "4"}
    assert isinstance(config["exporters"][EXPORTER]["headers"]["x-langfuse-ingestion-version"], str)
    assert headers["x-langfuse-ingestion-version"] == direct["x-langfuse-ingestion-version"]
    # ... and rotel (otel_basic.collector) sends the very same two headers.
    rotel = {k.lower(): v for k, v in col.langfuse_exporter_headers("pk-lf-1234", "sk-lf-5678").items()}
    assert rotel == {"authorization": direct["authorization"], "x-langfuse-ingestion-version": "4"}


def test_persistent_queue_and_retry(config: dict[str, Any]) -> None:
    exporter = config["exporters"][EXPORTER]
    queue = exporter["sending_queue"]
    assert queue["enabled"] is True
    storage = queue["storage"]
    assert storage == "file_storage" and storage in config["extensions"]
    assert config["extensions"][storage]["directory"]
    retry = exporter["retry_on_failure"]
    assert retry["enabled"] is True
    elapsed = retry["max_elapsed_time"]
    assert elapsed == 0 or (isinstance(elapsed, str) and elapsed.endswith("h")), (
        "0 (never give up) or hours, so a Langfuse outage does not drop queued spans")
    assert exporter["compression"] == "gzip"


def test_no_literal_secret(raw_text: str) -> None:
    assert not re.search(r"\b[ps]k-lf-[A-Za-z0-9-]+", raw_text), "a Langfuse key is written in the file"
    assert not re.search(r"Basic\s+[A-Za-z0-9+/]{8,}={0,2}", raw_text), "a literal Basic credential"
    for blob in re.findall(r"[A-Za-z0-9+/]{20,}={0,2}", raw_text):
        mixed = all(re.search(cls, blob) for cls in ("[a-z]", "[A-Z]", "[0-9]"))
        if mixed and not blob.startswith("/"):
            pytest.fail(f"base64-looking blob in the config: {blob[:6]}...")
    config = yaml.safe_load(raw_text)
    auth = config["extensions"]["basicauth/langfuse"]["client_auth"]
    assert auth == {"username": "${env:LANGFUSE_PUBLIC_KEY}", "password": "${env:LANGFUSE_SECRET_KEY}"}


def test_optional_masking_stanza_is_valid_when_uncommented(raw_text: str, config: dict[str, Any]) -> None:
    """The commented redaction/transform processors must be real config once uncommented."""
    lines = raw_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# redaction/pii:")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("exporters:"))
    block = "\n".join(line[4:] for line in lines[start:end] if line.startswith("  # ") or line == "  #")
    processors = yaml.safe_load(block)
    assert set(processors) == {"redaction/pii", "transform/pii"}
    redaction = processors["redaction/pii"]
    assert redaction["allow_all_keys"] is True
    email = re.compile(redaction["blocked_values"][0])
    assert email.search("mail bob.smith@example.com now")
    statements = processors["transform/pii"]["trace_statements"][0]["statements"]
    assert statements[0].startswith("replace_all_patterns(attributes, \"value\"")
    assert "memory_limiter, redaction/pii, batch" in raw_text  # the how-to-enable line


# ---------------------------------------------------------------------- docker compose


def test_compose_collector_service(compose: dict[str, Any], config: dict[str, Any]) -> None:
    service = compose["services"]["otel-collector"]
    image = service["image"]
    assert image.startswith("otel/opentelemetry-collector-contrib:")
    tag = image.rsplit(":", 1)[1]
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"pin a version tag, not {tag!r}"
    assert tuple(int(p) for p in tag.split(".")) >= (0, 110, 0), "${env:X:-default} needs otelcol >= 0.110.0"

    # config mounted read-only where --config points
    mounts = [str(v) for v in service["volumes"]]
    config_mount = next(m for m in mounts if m.startswith("../otel-collector.yaml:"))
    _src, target, mode = config_mount.split(":")
    assert (COMPOSE_PATH.parent / _src).resolve() == CONFIG_PATH
    assert mode == "ro"
    assert f"--config={target}" in service["command"]

    # ports: localhost only
    ports = [str(p) for p in service["ports"]]
    assert ports, "no published ports"
    for port in ports:
        assert port.startswith("127.0.0.1:"), f"{port} is published on every interface"
    published = {p.split(":")[1] for p in ports}
    assert {"4317", "4318"} <= published

    # environment: bind inside the container, credentials passed through, storage dir agreed
    env = service["environment"]
    assert env["OTEL_COLLECTOR_BIND"] == "0.0.0.0"
    for name in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL"):
        assert str(env[name]).startswith("${" + name), f"{name} must be passed through, not written"
    storage_dir = env["OTEL_COLLECTOR_STORAGE_DIR"]
    assert _resolve(config, env)["extensions"]["file_storage"]["directory"] == storage_dir

    # a named volume holds the persistent queue
    volume_mount = next(m for m in mounts if m.endswith(":" + storage_dir))
    volume = volume_mount.split(":")[0]
    assert volume in (compose.get("volumes") or {}), "the storage volume must be a declared named volume"


def test_compose_storage_is_writable_by_the_collector_user(compose: dict[str, Any]) -> None:
    init = compose["services"]["storage-init"]
    collector = compose["services"]["otel-collector"]
    assert collector["depends_on"]["storage-init"]["condition"] == "service_completed_successfully"
    storage_dir = collector["environment"]["OTEL_COLLECTOR_STORAGE_DIR"]
    assert init["command"][:3] == ["chown", "-R", "10001:10001"] and init["command"][3] == storage_dir
    assert any(str(v).endswith(":" + storage_dir) for v in init["volumes"])
    assert ":" in init["image"] and not init["image"].endswith(":latest")


def test_compose_has_no_literal_secret() -> None:
    text = COMPOSE_PATH.read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        assert not re.search(r"\b[ps]k-lf-[A-Za-z0-9]", line), line


# ---------------------------------------------------------------------- otel_basic.collector (no process)


def _collector(**kwargs: Any) -> col.RotelCollector:
    kwargs.setdefault("http_port", 14318)
    kwargs.setdefault("grpc_port", 14317)
    return col.RotelCollector.for_langfuse("https://lf.example.com/", "pk-lf-abc", "sk-lf-secret", **kwargs)


def test_rotel_argv_carries_no_secret_and_env_carries_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTEL_OTLP_EXPORTER_TRACES_ENDPOINT", "http://stray.example.com")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-secret")
    collector = _collector(binary="/bin/true")
    argv = collector.argv()
    joined = " ".join(argv)
    assert "sk-lf-secret" not in joined and "Basic" not in joined
    assert argv[1] == "start"
    assert "--otlp-exporter-endpoint" in argv
    assert argv[argv.index("--otlp-exporter-endpoint") + 1] == "https://lf.example.com" + LANGFUSE_OTLP_PATH
    assert argv[argv.index("--otlp-http-endpoint") + 1] == "127.0.0.1:14318"
    assert argv[argv.index("--otlp-grpc-endpoint") + 1] == "127.0.0.1:14317"
    assert argv[argv.index("--otlp-exporter-protocol") + 1] == "http"
    env = collector.child_env()
    expected = "Basic " + base64.b64encode(b"pk-lf-abc:sk-lf-secret").decode()
    assert env["ROTEL_OTLP_EXPORTER_CUSTOM_HEADERS"] == (
        f"Authorization={expected},x-langfuse-ingestion-version=4")
    assert "ROTEL_OTLP_EXPORTER_TRACES_ENDPOINT" not in env, "stray ROTEL_* would override our flags"
    assert "LANGFUSE_SECRET_KEY" not in env
    assert "sk-lf-secret" not in repr(collector) and "Basic ****" in repr(collector)


def test_rotel_retry_flags() -> None:
    argv = _collector(binary="/bin/true", retry_initial_backoff=0.2, retry_max_backoff=1,
                      retry_max_elapsed_time=600, request_timeout=2.5).argv()
    flags = dict(itertools.pairwise(argv))
    assert flags["--otlp-exporter-retry-initial-backoff"] == "200ms"
    assert flags["--otlp-exporter-retry-max-backoff"] == "1000ms"
    assert flags["--otlp-exporter-retry-max-elapsed-time"] == "600000ms"
    assert flags["--otlp-exporter-request-timeout"] == "2500ms"
    assert "--otlp-exporter-retry-initial-backoff" not in _collector(binary="/bin/true").argv()
    with pytest.raises(ValueError):
        _collector(retry_initial_backoff=0)


def test_rotel_rejects_headers_it_cannot_carry() -> None:
    with pytest.raises(ValueError):
        col.RotelCollector("http://127.0.0.1:1/x", {"a": "b,c"})
    with pytest.raises(ValueError):
        col.RotelCollector("http://127.0.0.1:1/x", {"a=b": "c"})


def test_rotel_from_env_uses_the_app_variables() -> None:
    env = {"LANGFUSE_PUBLIC_KEY": "pk-lf-1", "LANGFUSE_SECRET_KEY": "sk-lf-2", "LANGFUSE_HOST": "http://localhost:3000"}
    collector = col.RotelCollector.from_env(env, http_port=1, grpc_port=2)
    assert collector.exporter_endpoint == "http://localhost:3000" + LANGFUSE_OTLP_PATH
    assert collector.child_env()["ROTEL_OTLP_EXPORTER_CUSTOM_HEADERS"].startswith(
        "Authorization=" + load_settings(env).headers["authorization"] + ",")
    keys_only = {"LANGFUSE_PUBLIC_KEY": "pk-lf-1", "LANGFUSE_SECRET_KEY": "sk-lf-2"}
    default = col.RotelCollector.from_env(keys_only)
    assert default.exporter_endpoint == DEFAULT_LANGFUSE_BASE_URL + LANGFUSE_OTLP_PATH


_KEYS = {"LANGFUSE_PUBLIC_KEY": "pk-lf-1", "LANGFUSE_SECRET_KEY": "s"}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "LANGFUSE_PUBLIC_KEY"),
        ({"LANGFUSE_PUBLIC_KEY": "pk-lf-1"}, "LANGFUSE_SECRET_KEY"),
        (_KEYS | {"LANGFUSE_BASE_URL": "lf.example.com"}, "LANGFUSE_BASE_URL"),  # no scheme
        (_KEYS | {"LANGFUSE_BASE_URL": "http://lf.example.com"}, "LANGFUSE_BASE_URL"),  # secret in clear
    ],
)
def test_rotel_from_env_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        col.RotelCollector.from_env(env)
    assert info.value.variable == variable
    assert "sk-lf" not in str(info.value)


def test_main_without_credentials_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL", "LANGFUSE_HOST",
                 "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert col.main(["--http-port", "14318", "--grpc-port", "14317"]) == 2
    assert "LANGFUSE_PUBLIC_KEY" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        col.main(["--http-port", "4318", "--grpc-port", "4318"])


def test_free_port_is_bindable() -> None:
    import socket

    port = col.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_compose_refuses_a_trailing_slash_and_defaults_an_empty_base_url(compose: dict[str, Any]) -> None:
    check = compose["services"]["config-check"]
    assert compose["services"]["otel-collector"]["depends_on"]["config-check"]["condition"] == (
        "service_completed_successfully"
    )
    # compose's `:-` (unlike otelcol's) also replaces a set-but-empty value
    assert check["environment"]["LANGFUSE_BASE_URL"] == "${LANGFUSE_BASE_URL:-https://cloud.langfuse.com}"
    assert compose["services"]["otel-collector"]["environment"]["LANGFUSE_BASE_URL"] == (
        "${LANGFUSE_BASE_URL:-https://cloud.langfuse.com}"
    )
    script = check["command"][2].replace("$$", "$")  # compose unescapes $$
    for value, ok in (
        ("https://cloud.langfuse.com", True),
        ("http://localhost:3000", True),
        ("https://cloud.langfuse.com/", False),
        ("cloud.langfuse.com", False),
    ):
        proc = subprocess.run(["sh", "-c", script], env={"LANGFUSE_BASE_URL": value}, capture_output=True, text=True)
        assert (proc.returncode == 0) is ok, (value, proc.stderr)
        if not ok:
            assert "LANGFUSE_BASE_URL" in proc.stderr


def test_batch_size_stays_under_langfuses_body_limit(config: dict[str, Any]) -> None:
    batch = config["processors"]["batch"]
    max_span_bytes = 4 * 16384 * 1  # ~4 content attributes cut at OTEL_BASIC_MAX_ATTRIBUTE_CHARS (ASCII)
    assert batch["send_batch_max_size"] * max_span_bytes <= 16 * 1024 * 1024
    assert batch["send_batch_size"] <= batch["send_batch_max_size"]


def test_collector_comments_state_what_the_route_does_not_guarantee() -> None:
    text = CONFIG_PATH.read_text(encoding="utf-8")
    for fact in ("429, 502, 503, 504", "a 500", "413 drops the", "v0.110.0", "localhost:8888"):
        assert fact in text, fact
    assert "429/5xx" not in text and "0.108" not in text
