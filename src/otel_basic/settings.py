"""The only reader of ``os.environ``: one frozen, validated :class:`Settings`.

Everything else in otel_basic takes a Settings (or plain arguments). A bad value raises
:class:`ConfigError` naming the variable and never echoing a secret; ``configure()`` turns that
into one warning and a no-op telemetry, so the host application keeps running untraced.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import platformdirs

Route = Literal["langfuse", "otlp", "file", "disabled"]
Protocol = Literal["http/protobuf", "grpc"]
StepFlush = Literal["background", "wait", "off"]
MaskLevel = Literal["off", "detectors", "hide"]
Overflow = Literal["spool", "block", "drop"]

LANGFUSE_OTLP_PATH = "/api/public/otel"
LANGFUSE_TRACES_PATH = LANGFUSE_OTLP_PATH + "/v1/traces"
DEFAULT_LANGFUSE_BASE_URL = "https://cloud.langfuse.com"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A configuration value is wrong. The message names the variable, never a secret value."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


def _masked(value: str) -> str:
    return "****" if len(value) < 12 else f"{value[:4]}…{value[-2:]}"


@dataclass(frozen=True)
class Settings:
    """Effective configuration. Secrets are excluded from ``repr`` and masked in :meth:`describe`."""

    route: Route = "disabled"
    reason: str = "nothing configured"
    endpoint: str = ""
    protocol: Protocol = "http/protobuf"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    compression: Literal["gzip", "none"] = "gzip"
    export_timeout: float = 10.0
    insecure_ok: bool = False
    # batching
    schedule_delay: float = 1.0
    max_queue_size: int = 65536
    max_export_batch_size: int = 512
    overflow: Overflow = "spool"
    export_workers: int = 2
    # resource
    service_name: str = "otel-basic-app"
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    # langfuse
    langfuse_public_key: str | None = None
    langfuse_secret_key: str | None = field(default=None, repr=False)
    langfuse_base_url: str = DEFAULT_LANGFUSE_BASE_URL
    environment: str | None = None
    release: str | None = None
    # our knobs
    flush_timeout: float = 5.0
    step_flush: StepFlush = "background"
    log_level: int | None = 20
    spool_dir: Path | None = None
    spool_max_bytes: int = 64 * 1024 * 1024
    spool_retry_interval: float = 5.0
    file_path: Path | None = None
    mask: MaskLevel = "detectors"
    mask_patterns: Mapping[str, str] = field(default_factory=dict)
    mask_allow_keys: tuple[str, ...] = ()
    mask_hook: Callable[[str, str], str] | None = field(default=None, repr=False)
    mask_salt: str | None = field(default=None, repr=False)  # None: derived from the deployment identity
    max_attribute_chars: int = 16384
    install_signal_handlers: bool = True

    @property
    def enabled(self) -> bool:
        return self.route != "disabled"

    def describe(self) -> dict[str, Any]:
        """The configuration as printable data, secrets masked (for doctor and logs)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("langfuse_secret_key", "mask_salt"):
                value = _masked(value) if value else None
            elif f.name == "mask_hook":
                value = None if value is None else getattr(value, "__qualname__", "callable")
            elif f.name == "headers":
                value = {k: _masked(v) for k, v in value.items()}
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out


# --- parsing helpers: each names its variable in the error -------------------------------------


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def parse_bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(name, f"expected true or false, got {raw!r}")


def parse_number(name: str, raw: str, *, minimum: float = 0.0, integer: bool = False) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"expected a number, got {raw[:40]!r}") from None
    if value != value or value < minimum or value in (float("inf"), float("-inf")):
        raise ConfigError(name, f"must be a finite number >= {minimum:g}, got {raw[:40]!r}")
    if integer and value != int(value):
        raise ConfigError(name, f"expected a whole number, got {raw[:40]!r}")
    return value


def parse_url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(name, "must be an http:// or https:// URL (the scheme is missing or unknown)")
    if not parts.hostname:
        raise ConfigError(name, "must include a host name")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(name, "has an invalid port") from None
    return raw.rstrip("/")


def parse_headers(name: str, raw: str) -> dict[str, str]:
    """``k=v,k2=v2`` as in the OTel spec, URL-decoded; values never appear in errors."""
    headers: dict[str, str] = {}
    for index, item in enumerate(raw.split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key).strip().lower()
        if not sep or not key or any(c.isspace() for c in key):
            raise ConfigError(name, f"entry {index} is not of the form key=value")
        headers[key] = unquote(value).strip()
    return headers


def parse_resource_attributes(name: str, raw: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for index, item in enumerate(raw.split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(name, f"entry {index} is not of the form key=value")
        attrs[unquote(key).strip()] = unquote(value).strip()
    return attrs


def parse_patterns(name: str, raw: str) -> dict[str, str]:
    """A JSON object of label -> regular expression (JSON, because regexes contain commas)."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError(name, 'expected a JSON object like {"order": "ORD-[0-9]+"}') from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(name, "expected a JSON object of label to regular expression strings")
    for label, pattern in data.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(name, f"pattern {label!r} is not a valid regular expression ({exc.msg})") from None
    return data


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def basic_auth(public_key: str, secret_key: str) -> str:
    return "Basic " + base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")


def _choice(name: str, raw: str, allowed: tuple[str, ...]) -> str:
    low = raw.strip().lower()
    if low not in allowed:
        raise ConfigError(name, f"expected one of {', '.join(allowed)}, got {raw[:40]!r}")
    return low


# --- the loader ---------------------------------------------------------------------------------


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from ``env`` (default ``os.environ``), then apply explicit ``overrides``.

    Precedence: arguments > OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT > LANGFUSE_*.
    """
    env = os.environ if env is None else env
    unknown = set(overrides) - {f.name for f in fields(Settings)} - {"enabled"}
    if unknown:
        raise TypeError(f"configure() got unknown settings: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}

    # --- on/off ---
    disabled_reason = None
    if (raw := _get(env, "OTEL_SDK_DISABLED")) and parse_bool("OTEL_SDK_DISABLED", raw):
        disabled_reason = "OTEL_SDK_DISABLED=true"
    if (raw := _get(env, "LANGFUSE_TRACING_ENABLED")) and not parse_bool("LANGFUSE_TRACING_ENABLED", raw):
        disabled_reason = "LANGFUSE_TRACING_ENABLED=false"

    # --- resource ---
    if raw := _get(env, "OTEL_RESOURCE_ATTRIBUTES"):
        values["resource_attributes"] = parse_resource_attributes("OTEL_RESOURCE_ATTRIBUTES", raw)
    if raw := _get(env, "OTEL_SERVICE_NAME"):
        values["service_name"] = raw
    elif "service.name" in values.get("resource_attributes", {}):
        values["service_name"] = values["resource_attributes"]["service.name"]
    values["environment"] = _get(env, "LANGFUSE_TRACING_ENVIRONMENT")
    values["release"] = _get(env, "LANGFUSE_RELEASE")

    # --- Langfuse credentials ---
    pk, sk = _get(env, "LANGFUSE_PUBLIC_KEY"), _get(env, "LANGFUSE_SECRET_KEY")
    if raw := _get(env, "LANGFUSE_BASE_URL"):
        values["langfuse_base_url"] = parse_url("LANGFUSE_BASE_URL", raw)
    elif raw := _get(env, "LANGFUSE_HOST"):
        values["langfuse_base_url"] = parse_url("LANGFUSE_HOST", raw)
    values["langfuse_public_key"], values["langfuse_secret_key"] = pk, sk

    # --- OTLP (wins over Langfuse) ---
    protocol_raw = _get(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _get(env, "OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol_raw:
        name = (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
            if _get(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            else ("OTEL_EXPORTER_OTLP_PROTOCOL")
        )
        values["protocol"] = _choice(name, protocol_raw, ("http/protobuf", "grpc"))
    protocol = values.get("protocol", "http/protobuf")
    endpoint = None
    if raw := _get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        endpoint = parse_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raw)
    elif raw := _get(env, "OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = parse_url("OTEL_EXPORTER_OTLP_ENDPOINT", raw)
        if protocol == "http/protobuf":
            endpoint += "/v1/traces"
    for name in ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
        if raw := _get(env, name):
            values["headers"] = parse_headers(name, raw)
            break
    for name in ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"):
        if raw := _get(env, name):
            values["compression"] = _choice(name, raw, ("gzip", "none"))
            break
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        if raw := _get(env, name):
            # The spec says milliseconds, the Python SDK reads seconds: accept both, by size.
            value = parse_number(name, raw, minimum=0.001)
            values["export_timeout"] = value / 1000.0 if value > 120 else value
            break

    # --- batching ---
    if raw := _get(env, "OTEL_BSP_SCHEDULE_DELAY"):
        values["schedule_delay"] = parse_number("OTEL_BSP_SCHEDULE_DELAY", raw) / 1000.0
    if raw := _get(env, "OTEL_BSP_MAX_QUEUE_SIZE"):
        values["max_queue_size"] = int(parse_number("OTEL_BSP_MAX_QUEUE_SIZE", raw, minimum=1, integer=True))
    if raw := _get(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        values["max_export_batch_size"] = int(
            parse_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raw, minimum=1, integer=True)
        )
    if raw := _get(env, "OTEL_BSP_EXPORT_TIMEOUT"):
        values["export_timeout"] = parse_number("OTEL_BSP_EXPORT_TIMEOUT", raw, minimum=1) / 1000.0

    # --- our knobs ---
    if raw := _get(env, "OTEL_BASIC_FLUSH_TIMEOUT"):
        values["flush_timeout"] = parse_number("OTEL_BASIC_FLUSH_TIMEOUT", raw, minimum=0.001)
    if raw := _get(env, "OTEL_BASIC_STEP_FLUSH"):
        values["step_flush"] = _choice("OTEL_BASIC_STEP_FLUSH", raw, ("background", "wait", "off"))
    if raw := _get(env, "OTEL_BASIC_LOG_LEVEL"):
        level = _choice("OTEL_BASIC_LOG_LEVEL", raw, ("debug", "info", "warning", "error", "critical", "off"))
        values["log_level"] = (
            None if level == "off" else {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}[level]
        )
    if raw := _get(env, "OTEL_BASIC_EXPORT_WORKERS"):
        values["export_workers"] = int(parse_number("OTEL_BASIC_EXPORT_WORKERS", raw, minimum=1, integer=True))
    if raw := _get(env, "OTEL_BASIC_OVERFLOW"):
        values["overflow"] = _choice("OTEL_BASIC_OVERFLOW", raw, ("spool", "block", "drop"))
    if raw := _get(env, "OTEL_BASIC_SPOOL_DIR"):
        values["spool_dir"] = None if raw.lower() in ("off", "none", "false") else Path(raw).expanduser()
    else:
        values["spool_dir"] = Path(platformdirs.user_cache_dir("otel-basic")) / "spool"
    if raw := _get(env, "OTEL_BASIC_SPOOL_MAX_MB"):
        values["spool_max_bytes"] = int(parse_number("OTEL_BASIC_SPOOL_MAX_MB", raw) * 1024 * 1024)
    if raw := _get(env, "OTEL_BASIC_SPOOL_RETRY_SECONDS"):
        values["spool_retry_interval"] = parse_number("OTEL_BASIC_SPOOL_RETRY_SECONDS", raw, minimum=0.05)
    if raw := _get(env, "OTEL_BASIC_FILE"):
        values["file_path"] = Path(raw).expanduser()
    if raw := _get(env, "OTEL_BASIC_MASK"):
        values["mask"] = _choice("OTEL_BASIC_MASK", raw, ("off", "detectors", "hide"))
    if raw := _get(env, "OTEL_BASIC_MASK_PATTERNS"):
        values["mask_patterns"] = parse_patterns("OTEL_BASIC_MASK_PATTERNS", raw)
    if raw := _get(env, "OTEL_BASIC_MASK_ALLOW_KEYS"):
        values["mask_allow_keys"] = tuple(k.strip() for k in raw.split(",") if k.strip())
    if raw := _get(env, "OTEL_BASIC_MASK_SALT"):
        values["mask_salt"] = raw
    if raw := _get(env, "OTEL_BASIC_MAX_ATTRIBUTE_CHARS"):
        values["max_attribute_chars"] = int(
            parse_number("OTEL_BASIC_MAX_ATTRIBUTE_CHARS", raw, minimum=64, integer=True)
        )
    if raw := _get(env, "OTEL_BASIC_ALLOW_INSECURE"):
        values["insecure_ok"] = parse_bool("OTEL_BASIC_ALLOW_INSECURE", raw)
    if raw := _get(env, "OTEL_BASIC_SIGNAL_HANDLERS"):
        values["install_signal_handlers"] = parse_bool("OTEL_BASIC_SIGNAL_HANDLERS", raw)

    enabled_override = overrides.pop("enabled", None)
    values.update({k: v for k, v in overrides.items()})
    if overrides.get("endpoint"):
        endpoint = parse_url("endpoint", str(overrides["endpoint"]))
        if (
            values.get("protocol", "http/protobuf") == "http/protobuf"
            and "/v1/traces" not in endpoint
            and LANGFUSE_OTLP_PATH not in endpoint
        ) or endpoint.endswith(LANGFUSE_OTLP_PATH):
            endpoint += "/v1/traces"

    # --- route ---
    pk, sk = values.get("langfuse_public_key"), values.get("langfuse_secret_key")
    if enabled_override is False:
        return _finish(values, route="disabled", reason="configure(enabled=False)")
    if disabled_reason and enabled_override is not True:
        return _finish(values, route="disabled", reason=disabled_reason)
    if bool(pk) != bool(sk):
        missing, present = (
            ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY") if sk else ("LANGFUSE_SECRET_KEY", "LANGFUSE_PUBLIC_KEY")
        )
        if endpoint is None:
            raise ConfigError(missing, f"{present} is set but {missing} is not; set both or neither")
    if endpoint is not None:
        values["endpoint"] = endpoint
        chosen = values.get("protocol", protocol)
        return _finish(values, route="otlp", reason=f"OTLP endpoint {endpoint} ({chosen})")
    if pk and sk:
        base = values.get("langfuse_base_url", DEFAULT_LANGFUSE_BASE_URL)
        headers = dict(values.get("headers") or {})
        headers["authorization"] = basic_auth(pk, sk)
        headers["x-langfuse-ingestion-version"] = "4"
        headers["x-langfuse-public-key"] = pk
        headers["x-langfuse-sdk-name"] = "otel-basic"
        values.update(endpoint=base + LANGFUSE_TRACES_PATH, headers=headers, protocol="http/protobuf")
        return _finish(values, route="langfuse", reason=f"Langfuse at {base}")
    if values.get("file_path"):
        return _finish(values, route="file", reason=f"local file {values['file_path']}")
    return _finish(
        values,
        route="disabled",
        reason="nothing configured (no OTEL_EXPORTER_OTLP_ENDPOINT, no LANGFUSE_* keys)",
    )


def _finish(values: dict[str, Any], *, route: Route, reason: str) -> Settings:
    values = {k: v for k, v in values.items() if v is not None or k in _NULLABLE}
    settings = Settings(**values)
    settings = replace(settings, route=route, reason=reason)
    if settings.max_export_batch_size > settings.max_queue_size:
        raise ConfigError("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "must not exceed OTEL_BSP_MAX_QUEUE_SIZE")
    if (
        route in ("langfuse", "otlp")
        and settings.endpoint.startswith("http://")
        and settings.headers
        and not is_loopback(settings.endpoint)
        and not settings.insecure_ok
    ):
        raise ConfigError(
            "LANGFUSE_BASE_URL" if route == "langfuse" else "OTEL_EXPORTER_OTLP_ENDPOINT",
            "refusing to send credentials over plain http:// to a non-loopback host; use https:// "
            "or set OTEL_BASIC_ALLOW_INSECURE=true",
        )
    return settings


_NULLABLE = {
    "environment",
    "release",
    "langfuse_public_key",
    "langfuse_secret_key",
    "mask_salt",
    "spool_dir",
    "file_path",
    "log_level",
}
