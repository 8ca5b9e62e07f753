"""The only reader of ``os.environ``: ONE declared table of every setting, and a frozen :class:`Settings`.

Every variable is a row of :data:`TABLE`: name(s), type, unit, accepted range, default, doc, and the
parser. The README's configuration table (``python -m otel_basic settings --markdown``) and
doctor's output come from the same rows, so they cannot drift (a test compares the README).

Bad values never crash the host. A row's parser either

- **clamps** a number outside its range (``OTEL_BSP_SCHEDULE_DELAY=1e308`` -> the maximum),
- **falls back** to the default for a value it cannot read (``OTEL_BSP_MAX_QUEUE_SIZE=lots``),

and logs ONE warning (per variable and value, per process) naming the variable and the accepted
range; or, where a wrong guess would send data to the wrong place or unmasked (an endpoint URL,
one Langfuse key without the other, a certificate that does not exist, a masking rule), raises
:class:`ConfigError` and ``configure()`` turns that into one warning and an untraced app.

Standard ``OTEL_*`` variables follow the OpenTelemetry specification (names are the SDK's own
constants): durations are milliseconds, ``OTEL_EXPORTER_OTLP_ENDPOINT`` is a base URL to which
``/v1/traces`` is appended for HTTP, booleans are true only for ``true``. Where the project
deliberately differs (defaults), the row says so in ``spec_default``.
"""

from __future__ import annotations

import base64
import importlib.util
import ipaddress
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import platformdirs
from opentelemetry.environment_variables import OTEL_TRACES_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_ATTRIBUTE_COUNT_LIMIT,
    OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT,
    OTEL_BSP_EXPORT_TIMEOUT,
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY,
    OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT,
    OTEL_EXPORTER_OTLP_CERTIFICATE,
    OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE,
    OTEL_EXPORTER_OTLP_CLIENT_KEY,
    OTEL_EXPORTER_OTLP_COMPRESSION,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_INSECURE,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE,
    OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE,
    OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY,
    OTEL_EXPORTER_OTLP_TRACES_COMPRESSION,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    OTEL_EXPORTER_OTLP_TRACES_INSECURE,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_LINK_ATTRIBUTE_COUNT_LIMIT,
    OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SDK_DISABLED,
    OTEL_SERVICE_NAME,
    OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT,
    OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT,
    OTEL_SPAN_EVENT_COUNT_LIMIT,
    OTEL_SPAN_LINK_COUNT_LIMIT,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
)
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)

from otel_basic.redact import make_private_dir, redact_url, redact_urls_in

__all__ = [
    "DEFAULT_LANGFUSE_BASE_URL",
    "LANGFUSE_OTLP_PATH",
    "LANGFUSE_TRACES_PATH",
    "TABLE",
    "ConfigError",
    "Row",
    "Settings",
    "basic_auth",
    "is_loopback",
    "load_settings",
    "make_private_dir",
    "markdown_table",
    "parse_langfuse_base_url",
    "parse_url",
    "redact_url",
    "redact_urls_in",
]

Route = Literal["langfuse", "otlp", "file", "console", "disabled"]
Protocol = Literal["http/protobuf", "http/json", "grpc"]
Compression = Literal["gzip", "none"]
StepFlush = Literal["background", "wait", "off"]
MaskLevel = Literal["off", "detectors", "hide"]
Overflow = Literal["spool", "block", "drop"]

LANGFUSE_OTLP_PATH = "/api/public/otel"
LANGFUSE_TRACES_PATH = LANGFUSE_OTLP_PATH + "/v1/traces"
OTLP_TRACES_PATH = "/v1/traces"
DEFAULT_LANGFUSE_BASE_URL = "https://cloud.langfuse.com"
try:  # sent as x-langfuse-sdk-version, so Langfuse attributes our exports to a known version
    OUR_VERSION = _package_version("otel-basic")
except PackageNotFoundError:  # running from a source tree that was never installed
    OUR_VERSION = "0.0.0+unknown"
DEFAULT_OTLP_HTTP_ENDPOINT = "http://localhost:4318"
DEFAULT_OTLP_GRPC_ENDPOINT = "http://localhost:4317"
_LENIENT_TRUE = {"1", "true", "yes", "on"}
_LENIENT_FALSE = {"0", "false", "no", "off"}
_LENIENT_RANGE = "true/false, 1/0, yes/no, on/off"
#: Environment variables that HTTP clients read for proxies and trust (see transport_options).
NETWORK_ENV = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)
_SAMPLERS = (
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
)
_log = logging.getLogger("otel_basic")


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
    """Effective configuration. Secrets are excluded from ``repr`` and masked in :meth:`describe`.

    Two Settings are equal when every field that changes the pipeline is equal: ``configure()``
    rebuilds when any of them (sampler and span limits included) changed.
    """

    route: Route = "disabled"
    reason: str = "nothing configured"
    endpoint: str = ""
    protocol: Protocol = "http/protobuf"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    compression: Compression = "gzip"
    #: One OTLP request (OTEL_EXPORTER_OTLP_TIMEOUT), seconds.
    export_timeout: float = 10.0
    insecure_ok: bool = False
    # TLS and network (transport_options turns these into client options)
    certificate: Path | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None
    #: OTEL_EXPORTER_OTLP_INSECURE: None = not set (only matters for a scheme-less gRPC endpoint).
    insecure: bool | None = None
    trust_env: bool = True
    network_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    # batching
    schedule_delay: float = 1.0
    max_queue_size: int = 65536
    max_export_batch_size: int = 512
    #: One batch export, retries included (OTEL_BSP_EXPORT_TIMEOUT), seconds.
    batch_export_timeout: float = 30.0
    overflow: Overflow = "spool"
    export_workers: int = 4
    export_linger: float = 0.015
    loop_export: bool = True
    # sampling and span limits (the SDK's own variables, parsed here so a change rebuilds)
    traces_sampler: str = "parentbased_always_on"
    traces_sampler_arg: float = 1.0
    attribute_count_limit: int = 128
    attribute_value_length_limit: int | None = None
    span_attribute_count_limit: int | None = None
    span_attribute_value_length_limit: int | None = None
    span_event_count_limit: int = 128
    span_link_count_limit: int = 128
    event_attribute_count_limit: int | None = None
    link_attribute_count_limit: int | None = None
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
    log_trace_level: int | None = 40  # records outside any span at/above this become a trace; None: never
    stream_usage: bool = True  # ask OpenAI-compatible streams for usage (stream_options.include_usage)
    #: The warnings the values produced (already logged once); for doctor.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={redact_url(v) if f.name == 'endpoint' else v!r}"
            for f in fields(self)
            if f.repr and f.name != "warnings" and (v := getattr(self, f.name)) is not None
        )
        return f"Settings({shown})"

    @property
    def enabled(self) -> bool:
        return self.route != "disabled"

    def sampler(self) -> Sampler:
        """The SDK sampler for ``TracerProvider(sampler=...)`` (OTEL_TRACES_SAMPLER[_ARG])."""
        name, ratio = self.traces_sampler, self.traces_sampler_arg
        if name == "always_on":
            return ALWAYS_ON
        if name == "always_off":
            return ALWAYS_OFF
        if name == "parentbased_always_off":
            return DEFAULT_OFF
        if name == "traceidratio":
            return TraceIdRatioBased(ratio)
        if name == "parentbased_traceidratio":
            return ParentBasedTraceIdRatio(ratio)
        return DEFAULT_ON

    def span_limits(self) -> SpanLimits:
        """The SDK span limits for ``TracerProvider(span_limits=...)`` (OTEL_SPAN_*/OTEL_*_LIMIT).

        Every value is explicit, so the SDK never parses these variables itself (it raises on a
        bad one)."""
        unset = SpanLimits.UNSET

        def n(value: int | None) -> int:
            return unset if value is None else value

        return SpanLimits(
            max_attributes=self.attribute_count_limit,
            max_events=self.span_event_count_limit,
            max_links=self.span_link_count_limit,
            max_span_attributes=n(
                self.span_attribute_count_limit
                if self.span_attribute_count_limit is not None
                else self.attribute_count_limit
            ),
            max_event_attributes=n(
                self.event_attribute_count_limit
                if self.event_attribute_count_limit is not None
                else self.attribute_count_limit
            ),
            max_link_attributes=n(
                self.link_attribute_count_limit
                if self.link_attribute_count_limit is not None
                else self.attribute_count_limit
            ),
            max_attribute_length=n(self.attribute_value_length_limit),
            max_span_attribute_length=n(
                self.span_attribute_value_length_limit
                if self.span_attribute_value_length_limit is not None
                else self.attribute_value_length_limit
            ),
        )

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
            elif f.name == "network_env":
                value = {k: redact_url(v) for k, v in value.items()}
            elif f.name in ("endpoint", "langfuse_base_url"):
                value = redact_url(value)
            elif f.name == "warnings":
                value = list(value)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out


# --- the table ----------------------------------------------------------------------------------


class _Bad(Exception):
    """A value a row cannot use. ``clamped`` is the value to use instead, when one is obvious."""

    def __init__(self, problem: str, clamped: Any = None, *, has_clamp: bool = False) -> None:
        super().__init__(problem)
        self.problem = problem
        self.clamped = clamped
        self.has_clamp = has_clamp


Parser = Callable[[str], Any]


@dataclass(frozen=True)
class Row:
    """One setting. ``names``: environment variables, the first one set wins (TRACES_ first).

    ``key`` is the :class:`Settings` field it sets, or an input of the route decision (endpoints,
    keys, the on/off switches). ``on_invalid``: ``"default"`` (warn, use the default; numbers are
    clamped to ``range`` instead) or ``"disable"`` (a :class:`ConfigError`: tracing off).
    """

    names: tuple[str, ...]
    key: str
    type: str
    unit: str
    range: str
    default: str
    doc: str
    parse: Parser
    on_invalid: Literal["default", "disable"] = "default"
    spec_default: str = ""
    secret: bool = False
    group: str = "OpenTelemetry"


def _words(raw: str) -> str:
    """A raw value for a message: short, one line, never a secret (callers skip secret rows)."""
    text = redact_urls_in(raw.strip())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def _number(
    lo: float, hi: float, *, integer: bool = False, scale: float = 1.0, as_int: bool = False, zero_is_max: bool = False
) -> Parser:
    """A number in ``[lo, hi]`` (in the variable's unit); out of range -> clamped, garbage -> default.

    The result is multiplied by ``scale`` (milliseconds -> seconds, MB -> bytes); ``as_int``
    rounds the scaled result down to a whole number. ``zero_is_max``: an OTel timeout, where the spec
    says implementations SHOULD read 0 as indefinite; ours is the maximum (it was clamped to 1 ms, and
    every export timed out at once)."""

    def out(value: float) -> Any:
        if integer:
            return int(value)
        scaled = value * scale
        return int(scaled) if as_int else scaled

    def parse(raw: str) -> Any:
        try:
            value = float(raw.strip())
        except ValueError:
            raise _Bad(f"expected a number, got {_words(raw)}") from None
        if math.isnan(value):
            raise _Bad("expected a number, got NaN")
        if zero_is_max and value == 0:
            return out(hi)
        if integer and math.isfinite(value) and value != int(value):
            raise _Bad(f"expected a whole number, got {_words(raw)}")
        if value < lo or value > hi:
            raise _Bad(f"{_words(raw)} is out of range", out(lo if value < lo else hi), has_clamp=True)
        return out(value)

    return parse


def _choice(*allowed: str, aliases: Mapping[str, tuple[str, str]] | None = None) -> Parser:
    """One of ``allowed`` (case-insensitive); an alias maps to a value with a warning."""

    def parse(raw: str) -> str:
        low = raw.strip().lower()
        if low in allowed:
            return low
        if aliases and low in aliases:
            value, why = aliases[low]
            raise _Bad(why, value, has_clamp=True)
        raise _Bad(f"expected one of {', '.join(allowed)}, got {_words(raw)}")

    return parse


def _spec_bool(raw: str) -> bool:
    """The spec's boolean: ``true`` is true, ``false`` is false, anything else false with a warning."""
    low = raw.strip().lower()
    if low == "true":
        return True
    if low == "false":
        return False
    raise _Bad(f"expected true or false, got {_words(raw)}", False, has_clamp=True)


def _lenient_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in _LENIENT_TRUE:
        return True
    if low in _LENIENT_FALSE:
        return False
    raise _Bad(f"expected true or false, got {_words(raw)}")


def _text(raw: str) -> str:
    value = raw.strip()
    if any(not c.isprintable() for c in value):
        raise _Bad("contains control characters")
    return value


def _secret_text(raw: str) -> str:
    value = raw.strip()
    if any(not c.isprintable() or c.isspace() for c in value):
        raise _Bad("contains spaces or control characters (a pasted line break?)")
    return value


def _path(raw: str) -> Path:
    value = raw.strip()
    if "\x00" in value or any(not c.isprintable() for c in value):
        raise _Bad("is not a usable path (control characters)")
    return Path(value).expanduser()


def _readable_file(raw: str) -> Path:
    path = _path(raw)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise _Bad(f"{str(path)[:200]!r} is not a readable file")
    return path


def _spool_dir(raw: str) -> Path | None:
    if raw.strip().lower() in ("off", "none", "false"):
        return None
    return _path(raw)


def _log_level(raw: str) -> int | None:
    levels = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50, "off": None}
    low = raw.strip().lower()
    if low not in levels:
        raise _Bad(f"expected one of {', '.join(levels)}, got {_words(raw)}")
    return levels[low]


def parse_headers_value(raw: str) -> tuple[dict[str, str], list[str]]:
    """``k=v,k2=v2`` as in the spec (W3C baggage format, URL-decoded). Invalid entries are skipped
    with a problem text that gives their position, never their value (they carry credentials)."""
    headers: dict[str, str] = {}
    problems: list[str] = []
    for index, item in enumerate(raw.split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key).strip().lower()
        value = unquote(value).strip()
        if not sep or not key or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9a-z-]+", key):
            problems.append(f"entry {index} is not of the form key=value and was skipped")
            continue
        if any(c in value for c in "\r\n\x00"):
            problems.append(f"entry {index} ({key}) has a line break in its value and was skipped")
            continue
        headers[key] = value
    return headers, problems


def _headers(raw: str) -> dict[str, str]:
    headers, problems = parse_headers_value(raw)
    if problems:
        raise _Bad("; ".join(problems), headers, has_clamp=True)
    return headers


def _resource(raw: str) -> dict[str, str]:
    """The spec: on any malformed entry, the whole value is discarded (with a warning)."""
    attrs: dict[str, str] = {}
    for index, item in enumerate(raw.split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _Bad(f"entry {index} is not of the form key=value; the whole value is ignored")
        attrs[unquote(key).strip()] = unquote(value).strip()
    return attrs


def _patterns(raw: str) -> dict[str, str]:
    """A JSON object of label -> regular expression (JSON, because regexes contain commas)."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise _Bad('expected a JSON object like {"order": "ORD-[0-9]+"}') from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise _Bad("expected a JSON object of label to regular expression strings")
    for label, pattern in data.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _Bad(f"pattern {label!r} is not a valid regular expression ({exc.msg})") from None
    return data


def _keys(raw: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def _traces_exporter(raw: str) -> str:
    """The spec's comma-separated list; otel-basic sends to one place: the first it supports."""
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    known = [n for n in names if n in ("otlp", "console", "none")]
    if names == ["none"] or (not known and not names):
        return "none"
    if not known:
        raise _Bad(f"expected otlp, console or none, got {_words(raw)}")
    if len(names) > 1:
        raise _Bad(f"otel-basic sends to one exporter; using {known[0]!r}", known[0], has_clamp=True)
    return known[0]


def _url_input(raw: str) -> str:
    return raw  # checked by the route decision, which knows the protocol and whether it is a base


_MS = "ms"
_UNLIMITED = "no limit"

TABLE: tuple[Row, ...] = (
    # --- Langfuse ---
    Row(("LANGFUSE_PUBLIC_KEY",), "langfuse_public_key", "string", "", "", "–",
        "With `LANGFUSE_SECRET_KEY`: send to `{base}/api/public/otel/v1/traces` with Basic auth. "
        "Setting only one of the two disables tracing.", _secret_text, "disable", group="Langfuse"),
    Row(("LANGFUSE_SECRET_KEY",), "langfuse_secret_key", "string (secret)", "", "", "–",
        "Never printed, logged or written.", _secret_text, "disable", secret=True, group="Langfuse"),
    Row(("LANGFUSE_BASE_URL", "LANGFUSE_HOST"), "langfuse_base_url", "URL", "", "http(s) URL, no query or fragment",
        "`https://cloud.langfuse.com`",
        "Langfuse host (`LANGFUSE_HOST` is the older name). A trailing `/` is ignored; a URL that already "
        "ends in `/api/public/otel`, has a query, a fragment or spaces disables tracing with a clear error.",
        _url_input, "disable", group="Langfuse"),
    Row(("LANGFUSE_TRACING_ENABLED",), "_langfuse_enabled", "bool", "", _LENIENT_RANGE, "`true`",
        "`false` turns tracing off.", _lenient_bool, group="Langfuse"),
    Row(("LANGFUSE_TRACING_ENVIRONMENT",), "environment", "string", "", "", "–",
        "Resource attributes `langfuse.environment` and `deployment.environment.name`.", _text, group="Langfuse"),
    Row(("LANGFUSE_RELEASE",), "release", "string", "", "", "–",
        "Resource attributes `langfuse.release` and `service.version`.", _text, group="Langfuse"),
    # --- OpenTelemetry: on/off, resource, sampling ---
    Row((OTEL_SDK_DISABLED,), "_sdk_disabled", "bool", "", "true/false", "`false`",
        "`true` gives a no-op telemetry (only `true` counts, as in the spec).", _spec_bool),
    Row((OTEL_TRACES_EXPORTER,), "_traces_exporter", "enum", "", "otlp, console, none", "`otlp`",
        "`none` turns tracing off; `console` prints spans to stdout; `otlp` with no endpoint and no "
        "Langfuse keys sends to `http://localhost:4318` (spec). Only the first of a list is used.",
        _traces_exporter),
    Row((OTEL_SERVICE_NAME,), "service_name", "string", "", "", "`otel-basic-app`",
        "Resource `service.name` (wins over `OTEL_RESOURCE_ATTRIBUTES`).", _text,
        spec_default="`unknown_service`"),
    Row((OTEL_RESOURCE_ATTRIBUTES,), "resource_attributes", "key=value list", "", "", "–",
        "Resource attributes, URL-decoded. A malformed entry discards the whole value (spec).", _resource),
    Row((OTEL_TRACES_SAMPLER,), "traces_sampler", "enum", "", ", ".join(_SAMPLERS), "`parentbased_always_on`",
        "The SDK's samplers.", _choice(*_SAMPLERS)),
    Row((OTEL_TRACES_SAMPLER_ARG,), "traces_sampler_arg", "float", "", "0 – 1", "`1.0`",
        "Ratio for the `traceidratio` samplers.", _number(0.0, 1.0)),
    # --- OTLP exporter ---
    Row((OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,), "_traces_endpoint", "URL", "", "http(s) URL",
        "–", "Full traces URL, used as is; wins over `OTEL_EXPORTER_OTLP_ENDPOINT` and over `LANGFUSE_*`. "
        "For gRPC, `host:port` without a scheme is allowed (TLS unless `..._INSECURE=true`).",
        _url_input, "disable"),
    Row((OTEL_EXPORTER_OTLP_ENDPOINT,), "_base_endpoint", "URL", "", "http(s) URL, no query or fragment",
        "–", "Base URL of a collector: `/v1/traces` is appended for HTTP. Wins over `LANGFUSE_*` "
        "(the collector holds the keys).", _url_input, "disable", spec_default="`http://localhost:4318`"),
    Row((OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL), "protocol", "enum", "",
        "http/protobuf, http/json, grpc", "`http/protobuf`", "Wire protocol.",
        _choice("http/protobuf", "http/json", "grpc")),
    Row((OTEL_EXPORTER_OTLP_TRACES_HEADERS, OTEL_EXPORTER_OTLP_HEADERS), "headers", "key=value list", "", "",
        "–", "Request headers, URL-decoded; a malformed entry is skipped with a warning (values are never "
        "printed).", _headers, secret=True),
    Row((OTEL_EXPORTER_OTLP_TRACES_COMPRESSION, OTEL_EXPORTER_OTLP_COMPRESSION), "compression", "enum", "",
        "gzip, none", "`gzip`; `none` to a loopback host", "Unset, a loopback endpoint (`localhost`, "
        "`127.0.0.0/8`, `::1`: a collector or Langfuse on this machine) gets `none`: there is no network to save, "
        "and compressing a per-step batch costs CPU (see the README's Performance). Bodies under 8 KiB are "
        "sent uncompressed either way (a few hundred bytes saved would cost a zlib setup per request). "
        "`deflate` (not in the OTLP spec) gives a warning and gzip.",
        _choice("gzip", "none", aliases={"deflate": ("gzip", "deflate is not an OTLP compression")}),
        spec_default="`none`"),
    Row((OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, OTEL_EXPORTER_OTLP_TIMEOUT), "export_timeout", "duration", _MS,
        "1 – 600000, 0 = no limit (600000)", "`10000`", "Bounds one OTLP request, its retries included.",
        _number(1, 600_000, scale=0.001, zero_is_max=True)),
    Row((OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE, OTEL_EXPORTER_OTLP_CERTIFICATE), "certificate", "path", "",
        "readable PEM file", "system trust", "CA bundle that verifies the endpoint (instead of the default "
        "trust store).", _readable_file, "disable"),
    Row((OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE, OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE),
        "client_certificate", "path", "", "readable PEM file", "–", "Client certificate for mTLS (with the "
        "client key).", _readable_file, "disable"),
    Row((OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY, OTEL_EXPORTER_OTLP_CLIENT_KEY), "client_key", "path", "",
        "readable PEM file", "–", "Client private key for mTLS.", _readable_file, "disable"),
    Row((OTEL_EXPORTER_OTLP_TRACES_INSECURE, OTEL_EXPORTER_OTLP_INSECURE), "insecure", "bool", "", "true/false",
        "`false`", "gRPC only, for an endpoint without a scheme: `true` = plaintext, otherwise TLS (spec).",
        _spec_bool),
    # --- batch span processor ---
    Row((OTEL_BSP_SCHEDULE_DELAY,), "schedule_delay", "duration", _MS, "1 – 3600000", "`1000`",
        "How long a span may wait in the batch when nothing flushes.", _number(1, 3_600_000, scale=0.001),
        spec_default="`5000`", group="Batching"),
    Row((OTEL_BSP_EXPORT_TIMEOUT,), "batch_export_timeout", "duration", _MS, "1 – 3600000, 0 = no limit (3600000)",
        "`30000`", "Bounds one batch export (its requests, each bounded by `OTEL_EXPORTER_OTLP_TIMEOUT`). "
        "It does not change the OTLP timeout.", _number(1, 3_600_000, scale=0.001, zero_is_max=True),
        group="Batching"),
    Row((OTEL_BSP_MAX_QUEUE_SIZE,), "max_queue_size", "int", "spans", "1 – 1000000", "`65536`",
        "In-memory queue. A 20k-span burst fits (the stock 2048 lost 45–54 %).",
        _number(1, 1_000_000, integer=True), spec_default="`2048`", group="Batching"),
    Row((OTEL_BSP_MAX_EXPORT_BATCH_SIZE,), "max_export_batch_size", "int", "spans", "1 – queue size", "`512`",
        "Spans per request; larger than the queue is clamped to it.", _number(1, 1_000_000, integer=True),
        group="Batching"),
    # --- span limits ---
    Row((OTEL_ATTRIBUTE_COUNT_LIMIT,), "attribute_count_limit", "int", "", "0 – 100000", "`128`",
        "Attributes per span, event and link.", _number(0, 100_000, integer=True), group="Span limits"),
    Row((OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT,), "attribute_value_length_limit", "int", "chars", "1 – 2147483647",
        _UNLIMITED, "Longest attribute value (SDK cut, no marker; see `OTEL_BASIC_MAX_ATTRIBUTE_CHARS`).",
        _number(1, 2**31 - 1, integer=True), group="Span limits"),
    Row((OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT,), "span_attribute_count_limit", "int", "", "0 – 100000",
        "`OTEL_ATTRIBUTE_COUNT_LIMIT`", "Attributes per span.", _number(0, 100_000, integer=True),
        group="Span limits"),
    Row((OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT,), "span_attribute_value_length_limit", "int", "chars",
        "1 – 2147483647", "`OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`", "Longest span attribute value.",
        _number(1, 2**31 - 1, integer=True), group="Span limits"),
    Row((OTEL_SPAN_EVENT_COUNT_LIMIT,), "span_event_count_limit", "int", "", "0 – 100000", "`128`",
        "Events per span.", _number(0, 100_000, integer=True), group="Span limits"),
    Row((OTEL_SPAN_LINK_COUNT_LIMIT,), "span_link_count_limit", "int", "", "0 – 100000", "`128`",
        "Links per span.", _number(0, 100_000, integer=True), group="Span limits"),
    Row((OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT,), "event_attribute_count_limit", "int", "", "0 – 100000",
        "`OTEL_ATTRIBUTE_COUNT_LIMIT`", "Attributes per event.", _number(0, 100_000, integer=True),
        group="Span limits"),
    Row((OTEL_LINK_ATTRIBUTE_COUNT_LIMIT,), "link_attribute_count_limit", "int", "", "0 – 100000",
        "`OTEL_ATTRIBUTE_COUNT_LIMIT`", "Attributes per link.", _number(0, 100_000, integer=True),
        group="Span limits"),
    # --- otel-basic ---
    Row(("OTEL_BASIC_FLUSH_TIMEOUT",), "flush_timeout", "duration", "s", "0.001 – 3600", "`5`",
        "Default deadline of `flush`/`aflush`/`flush_langfuse` and of the exit flushes.",
        _number(0.001, 3600), group="otel-basic"),
    Row(("OTEL_BASIC_STEP_FLUSH",), "step_flush", "enum", "", "background, wait, off", "`background`",
        "Per-step flush: `background` starts the export as the step ends and never waits; `wait` also awaits "
        "delivery of the step's child spans, off the event loop, for at most `OTEL_BASIC_FLUSH_TIMEOUT`; "
        "`off` leaves it to the batch timer and the final flush.",
        _choice("background", "wait", "off"), group="otel-basic"),
    Row(("OTEL_BASIC_EXPORT_LINGER_MS",), "export_linger", "duration", _MS, "0 – 1000", "`15`",
        "A step's end starts an export this long after it, so the steps that end meanwhile share one request "
        "(a flush, a full batch and the exit never wait for it; a run's end waits only until this long has passed "
        "since the last export started). `0`: one request per step end.",
        _number(0, 1000, scale=0.001), group="otel-basic"),
    Row(("OTEL_BASIC_LOOP_EXPORT",), "loop_export", "bool", "", _LENIENT_RANGE, "`true`",
        "A step's export is made by the app's event loop (non-blocking; cheaper than an export thread beside it); "
        "retries, spooling and a blocked loop's spans (within 0.1 s) are the export workers'. HTTP without a proxy "
        "only. `false`: the export workers make every export.", _lenient_bool, group="otel-basic"),
    Row(("OTEL_BASIC_EXPORT_WORKERS",), "export_workers", "int", "", "1 – 16", "`4`",
        "Exports in flight at most: the first worker sends; the others once an export has been out 12 ms "
        "on a slow endpoint (its last three answers each over 12 ms), or 1 s on a fast one. Against a distant "
        "endpoint, with runs ending faster than one round trip, two were too few (bench/RESULTS.md).",
        _number(1, 16, integer=True), group="otel-basic"),
    Row(("OTEL_BASIC_OVERFLOW",), "overflow", "enum", "", "spool, block, drop", "`spool`",
        "When the queue is full: `spool` writes the oldest batch to disk; `block` makes the producer wait up "
        "to 1 s, then spools; `drop` drops. Every case is counted.", _choice("spool", "block", "drop"),
        group="otel-basic"),
    Row(("OTEL_BASIC_SPOOL_DIR",), "spool_dir", "path", "", "path or `off`", "`<user cache dir>/otel-basic/spool`",
        "Where undelivered spans wait (created `0700`).", _spool_dir, group="otel-basic"),
    Row(("OTEL_BASIC_SPOOL_MAX_MB",), "spool_max_bytes", "float", "MB", "1 – 102400", "`64`",
        "Spool size cap; the oldest batches are evicted first, counted and logged.",
        _number(1, 102_400, scale=1024 * 1024, as_int=True), group="otel-basic"),
    Row(("OTEL_BASIC_SPOOL_RETRY_SECONDS",), "spool_retry_interval", "duration", "s", "0.05 – 86400", "`5`",
        "While nothing else is being sent, retry the spool this often.", _number(0.05, 86_400),
        group="otel-basic"),
    Row(("OTEL_BASIC_FILE",), "file_path", "path", "", "", "–",
        "Write OTLP/JSON lines to this file when no endpoint is configured.", _path, group="otel-basic"),
    Row(("OTEL_BASIC_MASK",), "mask", "enum", "", "off, detectors, hide", "`detectors`",
        "Masking level (see Privacy). An unknown value disables tracing rather than guess.",
        _choice("off", "detectors", "hide"), "disable", group="otel-basic"),
    Row(("OTEL_BASIC_MASK_PATTERNS",), "mask_patterns", "JSON object", "", "label → regex", "–",
        'Extra masking rules, e.g. `{"order": "ORD-[0-9]{6}"}`. Invalid JSON or regex disables tracing.',
        _patterns, "disable", group="otel-basic"),
    Row(("OTEL_BASIC_MASK_ALLOW_KEYS",), "mask_allow_keys", "list", "", "comma-separated globs", "–",
        "Extra attribute keys that masking never touches.", _keys, group="otel-basic"),
    Row(("OTEL_BASIC_MASK_SALT",), "mask_salt", "string (secret)", "", "", "derived",
        "Key of the HMAC behind masking tokens (`<email:…>`). Unset: derived from the Langfuse public key (or "
        "the endpoint) and the service name, so every process and replica of one deployment gives the same "
        "person the same token; set it (a secret) when tokens must not be guessable.",
        _secret_text, secret=True, group="otel-basic"),
    Row(("OTEL_BASIC_MAX_ATTRIBUTE_CHARS",), "max_attribute_chars", "int", "chars", "64 – 16777216", "`16384`",
        "Longer string attributes are cut, with a marker and the original size.",
        _number(64, 16_777_216, integer=True), group="otel-basic"),
    Row(("OTEL_BASIC_ALLOW_INSECURE",), "insecure_ok", "bool", "", _LENIENT_RANGE, "`false`",
        "Allow credentials over plain `http://` to a non-loopback host.", _lenient_bool, group="otel-basic"),
    Row(("OTEL_BASIC_TRUST_ENV",), "trust_env", "bool", "", _LENIENT_RANGE, "`true`",
        "Honour `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY` and `SSL_CERT_FILE`/`SSL_CERT_DIR`/"
        "`REQUESTS_CA_BUNDLE` as other Python HTTP clients do.", _lenient_bool, group="otel-basic"),
    Row(("OTEL_BASIC_LOG_LEVEL",), "log_level", "enum", "", "debug, info, warning, error, critical, off",
        "`info`", "Lowest level bridged to span events (`off` disables the bridge).", _log_level,
        group="otel-basic"),
    Row(("OTEL_BASIC_LOG_TRACE_LEVEL",), "log_trace_level", "enum", "", "debug, info, warning, error, critical, off",
        "`error`", "Records logged outside any span at or above this level become their own `log.<LEVEL>` trace "
        "(`off`: never).", _log_level, group="otel-basic"),
    Row(("OTEL_BASIC_STREAM_USAGE",), "stream_usage", "bool", "", _LENIENT_RANGE, "`true`",
        "Ask llama-index's OpenAI-compatible streams for token usage (`stream_options.include_usage`); "
        "`false` for a server that rejects that field.", _lenient_bool, group="otel-basic"),
    Row(("OTEL_BASIC_SIGNAL_HANDLERS",), "install_signal_handlers", "bool", "", _LENIENT_RANGE, "`true`",
        "Install the SIGTERM/SIGINT flush handlers.", _lenient_bool, group="otel-basic"),
)

_ROWS_BY_KEY = {row.key: row for row in TABLE}
_DEFAULTS = Settings()


# --- URLs ---------------------------------------------------------------------------------------


def _split(name: str, raw: str) -> SplitResult:
    value = raw.strip()
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ConfigError(name, "contains a space or a line break; expected a single URL")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a port that is not a number or out of range
    except ValueError as exc:
        problem = "has an invalid port" if "port" in str(exc).lower() else "is not a valid URL (" + str(exc) + ")"
        raise ConfigError(name, problem) from None
    return parts


def parse_url(name: str, raw: str, *, base: bool = True, grpc: bool = False, insecure: bool | None = None) -> str:
    """A checked, normalised URL (scheme and host lower case, no trailing ``/``).

    ``base``: a base URL (no query or fragment: a path is appended to it). ``grpc``: ``host:port``
    without a scheme is allowed, as the spec says; it becomes ``https://`` unless ``insecure``."""
    parts = _split(name, raw)
    if grpc and (parts.scheme not in ("http", "https") or not parts.netloc):
        parts = _split(name, "//" + raw.strip())
        scheme = "http" if insecure else "https"
        parts = parts._replace(scheme=scheme)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(name, "must be an http:// or https:// URL (the scheme is missing or unknown)")
    if not parts.hostname:
        raise ConfigError(name, "must include a host name")
    if base and (parts.query or parts.fragment or raw.strip().endswith(("?", "#"))):
        raise ConfigError(name, "must not have a query (?...) or a fragment (#...): it is a base URL")
    if parts.fragment:
        raise ConfigError(name, "must not have a fragment (#...)")
    netloc = parts.netloc
    host_start = netloc.rfind("@") + 1
    netloc = netloc[:host_start] + netloc[host_start:].lower()
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, netloc, path, parts.query, ""))


def is_loopback(url: str) -> bool:
    """A loopback IP literal (127.0.0.0/8, ``::1``) or ``localhost`` itself. Not ``*.localhost``: the system
    resolver may ask DNS for those names, so credentials sent there could leave the machine (a hostile
    review pointed one at another host and received the Basic auth in clear)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _has_userinfo(url: str) -> bool:
    return "@" in urlsplit(url).netloc


def basic_auth(public_key: str, secret_key: str) -> str:
    return "Basic " + base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")


# --- warnings: once per (variable, value) per process ----------------------------------------------

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(message: str) -> None:
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    _log.warning("otel-basic: %s", message)


# --- the loader ---------------------------------------------------------------------------------


class _Reader:
    """Reads rows from an environment, collecting warnings."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.warnings: list[str] = []
        self.source: dict[str, str] = {}

    def raw(self, row: Row) -> tuple[str, str] | None:
        for name in row.names:
            value = self.env.get(name)
            if value is not None and value.strip():
                return name, value
        return None

    def read(self, row: Row) -> Any:
        """The row's value from the environment, or ``_UNSET``."""
        found = self.raw(row)
        if found is None:
            return _UNSET
        name, raw = found
        self.source[row.key] = name
        return self.apply(row, name, raw)

    def apply(self, row: Row, name: str, raw: str) -> Any:
        try:
            return row.parse(raw)
        except _Bad as bad:
            problem = bad.problem
            if row.secret:
                problem = problem.replace(raw.strip(), "****")
            accepted = f" (accepted: {row.range})" if row.range else ""
            if bad.has_clamp:
                self.warn(f"{name}: {problem}{accepted}; using {_shown(bad.clamped, row)}")
                return bad.clamped
            if row.on_invalid == "disable":
                raise ConfigError(name, f"{problem}{accepted}") from None
            self.warn(f"{name}: {problem}{accepted}; using the default {row.default}")
            return _UNSET

    def warn(self, message: str) -> None:
        """Collect a warning; a later one for the same variable replaces it (one per variable)."""
        head = message.partition(":")[0]
        self.warnings[:] = [w for w in self.warnings if w.partition(":")[0] != head]
        self.warnings.append(message)

    def log(self) -> None:
        for message in self.warnings:
            _warn_once(message)


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def _shown(value: Any, row: Row) -> str:
    if row.secret:
        return "the valid entries"
    if row.unit == _MS and isinstance(value, float):
        return f"{value * 1000:.12g} ms"
    if row.unit == "MB" and isinstance(value, int | float):
        return f"{value / 1024 / 1024:.12g} MB"
    if isinstance(value, float):
        return f"{value:.12g}"
    return repr(value) if isinstance(value, str) else str(value)


_INPUT_OVERRIDES = {"endpoint", "traces_endpoint", "enabled"}


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from ``env`` (default ``os.environ``), then apply explicit ``overrides``.

    Precedence: ``OTEL_TRACES_EXPORTER``/on-off switches; then arguments > environment;
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` > ``OTEL_EXPORTER_OTLP_ENDPOINT`` > ``LANGFUSE_*``.
    ``endpoint=`` is a base URL exactly like ``OTEL_EXPORTER_OTLP_ENDPOINT``; ``traces_endpoint=``
    is used as is, like ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``. Raises :class:`ConfigError` only
    where tracing must stay off; every other bad value is one logged warning.
    """
    env = os.environ if env is None else env
    known = {f.name for f in fields(Settings)} | _INPUT_OVERRIDES
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"configure() got unknown settings: {', '.join(sorted(unknown))}")
    reader = _Reader(env)
    values: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    for row in TABLE:
        value = reader.read(row)
        if value is _UNSET:
            continue
        (inputs if row.key.startswith("_") else values)[row.key] = value

    # Explicit arguments: the same rows check them (a string is parsed, a number is range-checked).
    for key, value in overrides.items():
        if key in _INPUT_OVERRIDES:
            continue
        arg_row = _ROWS_BY_KEY.get(key)
        name = f"configure({key}=...)"
        if arg_row is not None and isinstance(value, str) and key not in ("service_name", "environment", "release"):
            checked = reader.apply(arg_row, name, value)
            if checked is not _UNSET:
                values[key] = checked
        elif arg_row is not None and isinstance(value, int | float) and not isinstance(value, bool):
            values[key] = _check_number(reader, arg_row, name, value)
        else:
            values[key] = value
        if arg_row is not None:
            reader.source[key] = "argument"

    if "service_name" not in values and "service.name" in values.get("resource_attributes", {}):
        values["service_name"] = values["resource_attributes"]["service.name"]
    if "network_env" not in values:
        values["network_env"] = {k: env[k] for k in NETWORK_ENV if env.get(k, "").strip()}
    if "spool_dir" not in values and "spool_dir" not in reader.source:
        values["spool_dir"] = Path(platformdirs.user_cache_dir("otel-basic")) / "spool"
    queue = values.get("max_queue_size", _DEFAULTS.max_queue_size)
    if values.get("max_export_batch_size", _DEFAULTS.max_export_batch_size) > queue:
        name = reader.source.get("max_export_batch_size", OTEL_BSP_MAX_EXPORT_BATCH_SIZE)
        reader.warn(f"{name}: must not exceed OTEL_BSP_MAX_QUEUE_SIZE (accepted: 1 – queue size); using {queue}")
        values["max_export_batch_size"] = queue
    if (values.get("client_certificate") is None) != (values.get("client_key") is None):
        missing = OTEL_EXPORTER_OTLP_CLIENT_KEY if values.get("client_key") is None else (
            OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE)
        raise ConfigError(missing, "mTLS needs both the client certificate and the client key")
    settings = _route(values, inputs, overrides, reader)
    reader.log()
    return replace(settings, warnings=tuple(reader.warnings))


def _check_number(reader: _Reader, row: Row, name: str, value: float) -> Any:
    """An argument in the field's unit, checked against the row's range (given in the env's unit)."""
    scale = {_MS: 0.001, "MB": 1024 * 1024}.get(row.unit, 1.0)
    checked = reader.apply(row, name, repr(float(value) / scale))
    if checked is _UNSET:
        return getattr(_DEFAULTS, row.key)
    return checked


def _route(values: dict[str, Any], inputs: dict[str, Any], overrides: Mapping[str, Any], reader: _Reader) -> Settings:
    enabled = overrides.get("enabled")
    if enabled is False:
        return _finish(values, route="disabled", reason="configure(enabled=False)")
    if enabled is not True:
        if inputs.get("_sdk_disabled"):
            return _finish(values, route="disabled", reason="OTEL_SDK_DISABLED=true")
        if inputs.get("_langfuse_enabled") is False:
            return _finish(values, route="disabled", reason="LANGFUSE_TRACING_ENABLED=false")
        if inputs.get("_traces_exporter") == "none":
            return _finish(values, route="disabled", reason="OTEL_TRACES_EXPORTER=none")
    if inputs.get("_traces_exporter") == "console":
        return _finish(values, route="console", reason="OTEL_TRACES_EXPORTER=console (spans printed to stdout)")

    protocol: str = values.get("protocol", "http/protobuf")
    grpc = protocol == "grpc"
    insecure = values.get("insecure")
    endpoint: str | None = None
    variable = ""
    if overrides.get("traces_endpoint"):
        variable = "configure(traces_endpoint=...)"
        endpoint = parse_url(variable, str(overrides["traces_endpoint"]), base=False, grpc=grpc, insecure=insecure)
    elif overrides.get("endpoint"):
        variable = "configure(endpoint=...)"
        endpoint = _base_endpoint(variable, str(overrides["endpoint"]), protocol, insecure, reader)
    elif "_traces_endpoint" in inputs:
        variable = OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
        endpoint = parse_url(variable, inputs["_traces_endpoint"], base=False, grpc=grpc, insecure=insecure)
    elif "_base_endpoint" in inputs:
        variable = OTEL_EXPORTER_OTLP_ENDPOINT
        endpoint = _base_endpoint(variable, inputs["_base_endpoint"], protocol, insecure, reader)

    if "langfuse_base_url" in values:
        name = reader.source.get("langfuse_base_url", "LANGFUSE_BASE_URL")
        values["langfuse_base_url"] = parse_langfuse_base_url(name, str(values["langfuse_base_url"]))
    pk, sk = values.get("langfuse_public_key"), values.get("langfuse_secret_key")
    if bool(pk) != bool(sk) and endpoint is None:
        missing, present = (
            ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY") if sk else ("LANGFUSE_SECRET_KEY", "LANGFUSE_PUBLIC_KEY")
        )
        raise ConfigError(missing, f"{present} is set but {missing} is not; set both or neither")
    if endpoint is not None or (inputs.get("_traces_exporter") == "otlp" and not (pk and sk)):
        _require_grpc(grpc, reader)
    if endpoint is not None:
        values["endpoint"] = endpoint
        return _finish(values, route="otlp", reason=f"OTLP endpoint {redact_url(endpoint)} ({protocol})",
                       variable=variable)
    if pk and sk:
        base = values.get("langfuse_base_url", DEFAULT_LANGFUSE_BASE_URL)
        headers = dict(values.get("headers") or {})
        headers["authorization"] = basic_auth(pk, sk)
        headers["x-langfuse-ingestion-version"] = "4"
        headers["x-langfuse-public-key"] = pk
        headers["x-langfuse-sdk-name"] = "otel-basic"
        headers["x-langfuse-sdk-version"] = OUR_VERSION
        if grpc:
            reader.warn("OTEL_EXPORTER_OTLP_PROTOCOL: Langfuse has no gRPC endpoint; using http/protobuf")
        values.update(
            endpoint=base + LANGFUSE_TRACES_PATH,
            headers=headers,
            protocol="http/json" if protocol == "http/json" else "http/protobuf",
        )
        return _finish(values, route="langfuse", reason=f"Langfuse at {redact_url(base)}",
                       variable=reader.source.get("langfuse_base_url", "LANGFUSE_BASE_URL"))
    if values.get("file_path"):
        return _finish(values, route="file", reason=f"local file {values['file_path']}")
    if inputs.get("_traces_exporter") == "otlp":
        default = DEFAULT_OTLP_GRPC_ENDPOINT if grpc else DEFAULT_OTLP_HTTP_ENDPOINT + OTLP_TRACES_PATH
        values["endpoint"] = default
        return _finish(values, route="otlp", reason=f"OTEL_TRACES_EXPORTER=otlp, default endpoint {default}")
    return _finish(
        values,
        route="disabled",
        reason="nothing configured (no OTEL_EXPORTER_OTLP_ENDPOINT, no LANGFUSE_* keys)",
    )


def _require_grpc(grpc: bool, reader: _Reader) -> None:
    if grpc and importlib.util.find_spec("grpc") is None:
        raise ConfigError(
            reader.source.get("protocol", OTEL_EXPORTER_OTLP_PROTOCOL),
            "grpc needs the grpcio package: pip install 'otel-basic[grpc]' (or use http/protobuf)",
        )


def _base_endpoint(name: str, raw: str, protocol: str, insecure: bool | None, reader: _Reader) -> str:
    url = parse_url(name, raw, base=True, grpc=protocol == "grpc", insecure=insecure)
    if protocol == "grpc":
        return url
    if urlsplit(url).path.endswith(OTLP_TRACES_PATH):
        reader.warn(
            f"{name} is a base URL and already ends in /v1/traces: /v1/traces is appended again (spec); "
            "for a full URL use OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or configure(traces_endpoint=...)"
        )
    return url + OTLP_TRACES_PATH


def parse_langfuse_base_url(name: str, raw: str) -> str:
    """A Langfuse host URL: a checked base URL that does not already contain the OTLP path."""
    url = parse_url(name, raw, base=True)
    path = urlsplit(url).path
    if LANGFUSE_OTLP_PATH in path:
        raise ConfigError(
            name,
            f"is the Langfuse host, without {LANGFUSE_OTLP_PATH} (otel-basic appends "
            f"{LANGFUSE_TRACES_PATH}); remove the path",
        )
    return url


def _finish(values: dict[str, Any], *, route: Route, reason: str, variable: str = "") -> Settings:
    values = {k: v for k, v in values.items() if v is not None or k in _NULLABLE}
    settings = replace(Settings(**values), route=route, reason=reason)
    if "compression" not in values and route in ("langfuse", "otlp") and is_loopback(settings.endpoint):
        settings = replace(settings, compression="none")  # nothing to save on loopback; the CPU is not free
    if route in ("langfuse", "otlp"):
        parts = urlsplit(settings.endpoint)
        carries_secret = bool(settings.headers) or _has_userinfo(settings.endpoint)
        if (
            parts.scheme == "http"
            and carries_secret
            and not is_loopback(settings.endpoint)
            and not settings.insecure_ok
        ):
            where = "user:password in the URL" if _has_userinfo(settings.endpoint) else (
                "the Langfuse keys" if route == "langfuse" else "headers from OTEL_EXPORTER_OTLP_[TRACES_]HEADERS"
            )
            raise ConfigError(
                variable or ("LANGFUSE_BASE_URL" if route == "langfuse" else OTEL_EXPORTER_OTLP_ENDPOINT),
                f"refusing to send credentials ({where}) over plain http:// to a non-loopback host; use https:// "
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
    "log_trace_level",
    "certificate",
    "client_certificate",
    "client_key",
    "insecure",
    "attribute_value_length_limit",
    "span_attribute_count_limit",
    "span_attribute_value_length_limit",
    "event_attribute_count_limit",
    "link_attribute_count_limit",
}


# --- generated documentation --------------------------------------------------------------------


def markdown_table(rows: Iterable[Row] = TABLE) -> str:
    """The README's configuration table, generated from :data:`TABLE`."""
    lines = [
        "| variable | type, unit | accepted | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        names = ", ".join(f"`{n}`" for n in row.names)
        kind = row.type + (f", {row.unit}" if row.unit else "")
        default = row.default + (f" (spec: {row.spec_default})" if row.spec_default else "")
        bad = "disables tracing" if row.on_invalid == "disable" else "warning, default/clamp"
        accepted = (row.range or "any") + f"; invalid: {bad}"
        lines.append(f"| {names} | {kind} | {accepted} | {default} | {row.doc} |")
    return "\n".join(lines) + "\n"


def effective_rows(settings: Settings, env: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """One row per setting: variable, effective value (secrets masked), default, and where it came from.

    doctor prints this, so its output and the README follow the same table."""
    env = os.environ if env is None else env
    described = settings.describe()
    out: list[dict[str, str]] = []
    for row in TABLE:
        found = _Reader(env).raw(row)
        source = found[0] if found else "default"
        if row.key.startswith("_"):
            value = found[1].strip() if found and not row.secret else ("****" if found else "")
            value = redact_url(value) if "URL" in row.type else value
        else:
            value = _display(described.get(row.key))
        out.append({"variable": row.names[0], "value": value or "–", "default": row.default, "source": source})
    return out


def environ_snapshot() -> dict[str, str]:
    """A copy of the process environment, for code that passes one on (doctor, the collector's child)."""
    return dict(os.environ)


def _display(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "–"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "–"
    return str(value)
