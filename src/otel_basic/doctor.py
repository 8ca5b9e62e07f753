"""``otel-basic doctor``: the troubleshooting checklist as a command, ending in ONE line of advice.

Why a command: "my traces are missing" has a dozen causes (no keys, one key, the wrong region, a
collector that is not running, a TLS-inspecting proxy, a spool full of rejected batches) and each
is found by a different manual check. The doctor runs them in the order the data travels and stops
at the first broken link with the exact fix. Every check has a short timeout (2 s by default) so
the doctor itself never hangs.

The configuration table comes from the settings' declared table (:func:`effective_rows`: one row
per variable with its value, default and source), the same table the README shows.

Secrets: the configuration comes from :meth:`Settings.describe` (masked), and everything the
report holds is scrubbed of the secret key, header values, the Basic token and credentials in
URLs (:func:`redact_url`) before it is shown, in text and in ``--json``.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from opentelemetry.sdk.trace import TracerProvider
from rich.console import Console
from rich.table import Table
from rich.text import Text

from otel_basic import sdk_env
from otel_basic.pipeline import build_resource, build_road, build_spool
from otel_basic.settings import (
    ConfigError,
    Settings,
    basic_auth,
    effective_rows,
    environ_snapshot,
    load_settings,
    redact_url,
    redact_urls_in,
)
from otel_basic.transport_options import httpx_client_options, ssl_context

CANARY_SPAN_NAME = "otel-basic.doctor.canary"
HEALTHY = "healthy"
NOTHING_CONFIGURED = (
    "nothing configured: set LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY or OTEL_EXPORTER_OTLP_ENDPOINT"
)
LANGFUSE_REGIONS = {
    "https://cloud.langfuse.com": "EU",
    "https://us.cloud.langfuse.com": "US",
    "https://hipaa.cloud.langfuse.com": "HIPAA",
}
_NOT_SECRET_HEADERS = {
    "x-langfuse-ingestion-version",
    "x-langfuse-public-key",
    "x-langfuse-sdk-name",
    "x-langfuse-sdk-version",
}
_ENV_PREFIXES = ("OTEL_", "LANGFUSE_")


@dataclass
class Check:
    """One step of the checklist. ``ok`` is None when the check did not apply or was skipped."""

    name: str
    ok: bool | None
    detail: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class DoctorReport:
    """Everything the doctor found; ``fix`` is None when healthy."""

    route: str
    reason: str
    config: dict[str, Any] | None
    variables_set: list[str]
    checks: list[Check] = field(default_factory=list)
    spool: dict[str, Any] | None = None
    settings_table: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def fix(self) -> str | None:
        for check in self.checks:
            if check.ok is False:
                return check.fix or check.detail
        return None

    @property
    def healthy(self) -> bool:
        return self.fix is None

    @property
    def verdict(self) -> str:
        return HEALTHY if self.healthy else "unhealthy"

    @property
    def line(self) -> str:
        """The last line of the doctor's output: ``healthy`` or the fix."""
        return self.fix or HEALTHY

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "reason": self.reason,
            "config": self.config,
            "variables_set": self.variables_set,
            "checks": [c.to_json() for c in self.checks],
            "spool": self.spool,
            "settings": self.settings_table,
            "warnings": self.warnings,
            "verdict": self.verdict,
            "fix": self.fix,
        }


# --- secrets -------------------------------------------------------------------------------------


def _secrets(env: Mapping[str, str], settings: Settings | None) -> list[str]:
    """Every string that must never be printed, longest first (so substrings go after)."""
    found: set[str] = set()

    def add(value: str | None) -> None:
        if value and len(value.strip()) >= 6:
            found.add(value.strip())
            for part in value.split():
                if len(part) >= 8:
                    found.add(part)

    secret = env.get("LANGFUSE_SECRET_KEY")
    public = env.get("LANGFUSE_PUBLIC_KEY")
    add(secret)
    if public and public.strip().startswith("sk-"):
        add(public)  # swapped keys: the "public" one is the secret
    if public and secret:
        add(basic_auth(public.strip(), secret.strip()))
        add(base64.b64encode(f"{public}:{secret}".encode()).decode())
    for name in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        raw = env.get(name) or ""
        add(raw)
        for item in raw.split(","):
            add(unquote(item.partition("=")[2]))
    if settings is not None:
        add(settings.langfuse_secret_key)
        for key, value in settings.headers.items():
            if key.lower() not in _NOT_SECRET_HEADERS:
                add(value)
    return sorted(found, key=len, reverse=True)


def scrub(value: Any, secrets: list[str]) -> Any:
    """``value`` with every secret replaced by ``****`` (recursively through dicts and lists)."""
    if isinstance(value, str):
        value = redact_urls_in(value)
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, "****")
        return value
    if isinstance(value, dict):
        return {scrub(k, secrets): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    return value


def _scrubbed(report: DoctorReport, secrets: list[str]) -> DoctorReport:
    return dataclasses.replace(
        report,
        reason=scrub(report.reason, secrets),
        config=scrub(report.config, secrets),
        checks=[
            Check(c.name, c.ok, scrub(c.detail, secrets), scrub(c.fix, secrets) if c.fix else None)
            for c in report.checks
        ],
        spool=scrub(report.spool, secrets),
        settings_table=scrub(report.settings_table, secrets),
        warnings=scrub(report.warnings, secrets),
    )


# --- helpers -------------------------------------------------------------------------------------


def _endpoint_variable(settings: Settings, env: Mapping[str, str]) -> str:
    if settings.route == "langfuse":
        if not env.get("LANGFUSE_BASE_URL") and env.get("LANGFUSE_HOST"):
            return "LANGFUSE_HOST"
        return "LANGFUSE_BASE_URL"
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    return "OTEL_EXPORTER_OTLP_ENDPOINT"


def unauthorized_fix(base: str, status: int = 401) -> str:
    """The fix for a 401: almost always keys of another region or another Langfuse instance."""
    if base in LANGFUSE_REGIONS:
        others = "; ".join(f"{name} keys need {url}" for url, name in LANGFUSE_REGIONS.items() if url != base)
        return (
            f"{status} from Langfuse: these keys do not belong to {base} — keys of another region? "
            f"(LANGFUSE_BASE_URL is {base}; {others})"
        )
    return (
        f"{status} from Langfuse: these keys do not belong to {base}: copy LANGFUSE_PUBLIC_KEY and "
        f"LANGFUSE_SECRET_KEY from that instance's project settings, or fix LANGFUSE_BASE_URL"
    )


def _run_with_timeout(fn: Callable[[], Any], timeout: float) -> tuple[bool, Any]:
    """(finished, result or exception); getaddrinfo has no timeout of its own."""
    box: list[Any] = []

    def target() -> None:
        try:
            box.append(fn())
        except Exception as exc:
            box.append(exc)

    thread = threading.Thread(target=target, name="otel-basic-doctor", daemon=True)
    thread.start()
    thread.join(timeout)
    return (bool(box), box[0] if box else None)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# --- the checks ----------------------------------------------------------------------------------


def _check_keys(settings: Settings) -> Check | None:
    pk, sk = settings.langfuse_public_key or "", settings.langfuse_secret_key or ""
    if pk.startswith("sk-lf-") and sk.startswith("pk-lf-"):
        fix = "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are swapped: the public key starts with pk-lf-"
        return Check("keys", False, "the keys are swapped", fix)
    for name, value, prefix in (
        ("LANGFUSE_PUBLIC_KEY", pk, "pk-lf-"),
        ("LANGFUSE_SECRET_KEY", sk, "sk-lf-"),
    ):
        if value[:1] in ("'", '"'):
            return Check("keys", False, f"{name} is quoted", f"{name} starts with a quote: remove the quotes")
        if name == "LANGFUSE_SECRET_KEY" and value.startswith("pk-lf-"):
            fix = "LANGFUSE_SECRET_KEY holds a public key (pk-lf-…): copy the secret key (sk-lf-…)"
            return Check("keys", False, "the secret key is a public key", fix)
        if name == "LANGFUSE_PUBLIC_KEY" and value.startswith("sk-lf-"):
            fix = "LANGFUSE_PUBLIC_KEY holds a secret key (sk-lf-…): copy the public key (pk-lf-…)"
            return Check("keys", False, "the public key is a secret key", fix)
        if not value.startswith(prefix):
            return Check(
                "keys", None, f"{name} does not start with {prefix} (fine for some self-hosted setups)"
            )
    return Check("keys", True, "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are set and look right")


def _check_dns(host: str, port: int, var: str, timeout: float) -> tuple[Check, list[Any]]:
    started = time.monotonic()
    finished, result = _run_with_timeout(
        lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
    )
    if not finished:
        fix = f"cannot resolve host {host} within {timeout:g} s: check your DNS/network and {var}"
        return Check("dns", False, f"no answer for {host} within {timeout:g} s", fix), []
    if isinstance(result, Exception):
        why = result.strerror if isinstance(result, OSError) and result.strerror else type(result).__name__
        return Check("dns", False, f"{host}: {why}", f"cannot resolve host {host}: check {var}"), []
    addrs = list(result)
    shown = ", ".join(sorted({str(a[4][0]) for a in addrs})[:3])
    ms = (time.monotonic() - started) * 1000
    return Check("dns", True, f"{host} → {shown} ({ms:.0f} ms)"), addrs


def _check_tcp(host: str, port: int, addrs: list[Any], route: str, var: str, timeout: float) -> Check:
    where = f"{host}:{port}"
    errors: list[OSError] = []
    deadline = time.monotonic() + timeout
    for family, socktype, proto, _, sockaddr in addrs:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock = socket.socket(family, socktype, proto)
        sock.settimeout(left)
        started = time.monotonic()
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            errors.append(exc)
            continue
        finally:
            sock.close()
        return Check("tcp", True, f"connected to {where} in {(time.monotonic() - started) * 1000:.0f} ms")
    if any(isinstance(e, ConnectionRefusedError) for e in errors):
        if route == "otlp":
            fix = f"connection refused at {where}: is the collector running? (`otel-basic collector`)"
        else:
            fix = f"connection refused at {where}: is Langfuse running there? check {var}"
        return Check("tcp", False, f"connection refused at {where}", fix)
    if not errors or any(isinstance(e, TimeoutError | socket.timeout) for e in errors):
        fix = f"no answer from {where} within {timeout:g} s: a firewall or proxy in the way? check {var}"
        return Check("tcp", False, f"timed out connecting to {where}", fix)
    why = errors[-1].strerror or type(errors[-1]).__name__
    return Check("tcp", False, f"{where}: {why}", f"cannot connect to {where} ({why}): check {var}")


def _check_tls(settings: Settings, host: str, port: int, var: str, timeout: float) -> Check:
    # The same trust as the exporter (transport_options: the OTLP certificate, SSL_CERT_FILE, ...).
    context = ssl_context(settings)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.settimeout(timeout)
            with context.wrap_socket(raw, server_hostname=host) as tls:
                version = tls.version() or "TLS"
    except ssl.SSLCertVerificationError as exc:
        why = exc.verify_message or exc.reason or "certificate not trusted"
        fix = (
            f"TLS handshake failed with {host}:{port}: {why}. A TLS-inspecting proxy? Route through a "
            f"collector that trusts it, or check {var}"
        )
        return Check("tls", False, f"certificate problem: {why}", fix)
    except ssl.SSLError as exc:
        why = exc.reason or type(exc).__name__
        fix = f"TLS handshake failed with {host}:{port} ({why}): is it a plain http:// endpoint? check {var}"
        return Check("tls", False, f"handshake failed: {why}", fix)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        return Check(
            "tls", False, f"handshake failed: {why}", f"TLS handshake failed with {host}:{port}: {why}"
        )
    return Check("tls", True, f"{version} handshake with {host}, certificate valid")


def _check_credentials(settings: Settings, timeout: float) -> Check:
    base = settings.langfuse_base_url
    assert settings.langfuse_public_key and settings.langfuse_secret_key
    auth = basic_auth(settings.langfuse_public_key, settings.langfuse_secret_key)
    url = base + "/api/public/projects"
    try:
        with httpx.Client(**httpx_client_options(settings)) as client:  # the exporter's trust and proxies
            response = client.get(url, headers={"authorization": auth}, timeout=timeout)
    except httpx.HTTPError as exc:
        why = f"{type(exc).__name__} calling {url}"
        return Check("credentials", False, why, f"cannot reach the Langfuse API at {base}: {why}")
    status = response.status_code
    if status == 200:
        try:
            project = response.json()["data"][0]
            return Check("credentials", True, f"keys accepted: project {project['name']!r} ({project['id']})")
        except (ValueError, KeyError, IndexError, TypeError):
            return Check("credentials", True, "keys accepted by the Langfuse API")
    if status == 401:
        return Check("credentials", False, f"HTTP 401 from {url}", unauthorized_fix(base))
    if status == 403:
        fix = f"403 from Langfuse at {base}: the keys have no access to this project (or it is suspended)"
        return Check("credentials", False, f"HTTP 403 from {url}", fix)
    if 300 <= status < 400:
        location = response.headers.get("location", "?")[:200]
        fix = (
            f"LANGFUSE_BASE_URL {base} redirects ({status}) to {location}: "
            "set LANGFUSE_BASE_URL to the final address"
        )
        return Check("credentials", False, f"HTTP {status} redirect to {location}", fix)
    if status == 404:
        fix = (
            f"no Langfuse API at {base} (404): LANGFUSE_BASE_URL must be the address of the Langfuse UI, "
            "without a path (e.g. https://cloud.langfuse.com)"
        )
        return Check("credentials", False, f"HTTP 404 from {url}", fix)
    fix = f"Langfuse at {base} answered HTTP {status}: a server problem; try again later"
    return Check("credentials", False, f"HTTP {status} from {url}", fix)


def _check_canary(settings: Settings, timeout: float) -> Check:
    """Export one real span through the real transport and read its verdict."""
    road = build_road(settings, timeout=timeout, spool=False)
    provider = TracerProvider(resource=build_resource(settings), shutdown_on_exit=False)
    span = provider.get_tracer("otel_basic.doctor").start_span(
        CANARY_SPAN_NAME, attributes={"otel_basic.doctor": True}
    )
    span.end()
    trace_id = format(span.get_span_context().trace_id, "032x")
    where = redact_url(settings.endpoint) if settings.endpoint else str(settings.file_path)
    try:
        tally, verdict = road.probe([span], time.monotonic() + timeout)  # type: ignore[list-item]
    finally:
        road.close()
        provider.shutdown()
    if tally.delivered == 1:
        return Check("canary", True, f"span {CANARY_SPAN_NAME} accepted by {where} (trace {trace_id})")
    message = tally.reason or "export failed"
    status = verdict.status if verdict is not None else None
    if settings.route == "langfuse" and status in (401, 403):
        fix = unauthorized_fix(settings.langfuse_base_url, status)
    elif status is not None and 300 <= status < 400:
        fix = f"{message}"
    else:
        fix = f"the canary span was not accepted: {message}"
    return Check("canary", False, message, fix)


def _check_file(settings: Settings) -> Check:
    assert settings.file_path is not None
    path = settings.file_path
    directory = path.parent if str(path.parent) else Path(".")
    target = path if path.exists() else directory
    if not target.exists():
        return Check("file", True, f"{directory} will be created")
    if not os.access(target, os.W_OK):
        return Check(
            "file", False, f"{target} is not writable", f"cannot write {target}: check OTEL_BASIC_FILE"
        )
    return Check("file", True, f"{path} is writable")


def _spool_check(settings: Settings) -> tuple[Check, dict[str, Any] | None]:
    spool = build_spool(settings)
    if spool is None:
        why = "not used for the file route" if settings.route == "file" else "off (OTEL_BASIC_SPOOL_DIR=off)"
        return Check("spool", None, why), None
    state = spool.state()
    info = {
        "dir": str(spool.dir),
        "batches": state.batches,
        "spans": state.spans,
        "bytes": state.bytes,
        "oldest_age_seconds": None if state.oldest_age is None else round(state.oldest_age, 1),
        "rejected_batches": state.rejected_batches,
        "rejected_spans": state.rejected_spans,
        "rejected_reasons": dict(state.rejected_reasons),
    }
    waiting = (
        f"{state.spans} spans in {state.batches} batches waiting "
        f"({state.bytes} bytes, oldest {_age(state.oldest_age)})"
    )
    parts = [waiting if state.batches else "nothing waiting"]
    if state.rejected_batches:
        parts.append(f"{state.rejected_spans} spans rejected")
    detail = "; ".join(parts) + f" [{spool.dir}]"
    if state.rejected_batches:
        reasons = sorted(state.rejected_reasons.items(), key=lambda kv: -kv[1])
        reason = reasons[0][0] if reasons else "unknown"
        more = f" and {len(reasons) - 1} other reasons" if len(reasons) > 1 else ""
        fix = (
            f"{state.rejected_spans} spans were rejected ({reason}{more}): fix it, then run "
            "`otel-basic replay --rejected`"
        )
        return Check("spool", False, detail, fix), info
    if state.batches:
        fix = f"{state.spans} spans are waiting in the spool: run `otel-basic replay`"
        return Check("spool", False, detail, fix), info
    return Check("spool", True, detail), info


# --- the doctor ----------------------------------------------------------------------------------


def run_doctor(env: Mapping[str, str] | None = None, *, timeout: float = 2.0) -> DoctorReport:
    """Run every check for the configuration in ``env`` (default: the process environment); never raises."""
    from_process = env is None
    env = environ_snapshot() if env is None else dict(env)
    variables = sorted(k for k, v in env.items() if k.startswith(_ENV_PREFIXES) and v.strip())
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        report = DoctorReport("invalid", str(exc), None, variables)
        report.checks.append(Check("configuration", False, str(exc), str(exc)))
        return _scrubbed(report, _secrets(env, None))
    config = settings.describe()
    pk = config.get("langfuse_public_key")
    if isinstance(pk, str) and not pk.startswith("pk-"):
        config["langfuse_public_key"] = pk[:3] + "****" if pk.startswith("sk-") else pk
    report = DoctorReport(settings.route, settings.reason, config, variables)
    report.settings_table = effective_rows(settings, env)
    # Values otel_basic's import already fixed in os.environ (sdk_env) are still findings.
    report.warnings = [*(sdk_env.applied if from_process else ()), *settings.warnings]
    try:
        _diagnose(report, settings, env, timeout)
    except Exception as exc:  # a doctor that crashes is no help: report the crash as a finding
        report.checks.append(Check("doctor", False, f"internal error: {type(exc).__name__}"))
    return _scrubbed(report, _secrets(env, settings))


def _diagnose(report: DoctorReport, settings: Settings, env: Mapping[str, str], timeout: float) -> None:
    checks = report.checks
    route_text = {
        "langfuse": "direct to Langfuse",
        "otlp": "OTLP endpoint (collector)",
        "file": "local file",
        "disabled": "disabled",
    }[settings.route]
    if settings.route == "disabled":
        if settings.reason.startswith(("OTEL_SDK_DISABLED", "LANGFUSE_TRACING_ENABLED")):
            fix = f"tracing disabled by {settings.reason}: unset it to send traces"
        else:
            fix = NOTHING_CONFIGURED
        checks.append(Check("configuration", False, f"route: {route_text} ({settings.reason})", fix))
        return
    detail = f"route: {route_text} ({settings.reason})"
    if settings.route == "otlp" and settings.langfuse_public_key:
        detail += "; the LANGFUSE_* keys are not used: the OTLP endpoint wins (the collector holds the keys)"
    checks.append(Check("configuration", True, detail))
    if report.warnings:  # a value not used as written: the app runs, but not as configured
        more = f" (and {len(report.warnings) - 1} more)" if len(report.warnings) > 1 else ""
        checks.append(Check("values", False, "; ".join(report.warnings), report.warnings[0] + more))

    if settings.route == "file":
        checks.append(_check_file(settings))
        if checks[-1].ok is not False:
            checks.append(_check_canary(settings, max(timeout, 2.0)))
        return

    if settings.route == "langfuse":
        key_check = _check_keys(settings)
        if key_check is not None:
            checks.append(key_check)
    var = _endpoint_variable(settings, env)
    parts = urlsplit(settings.endpoint)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    network_ok = True
    dns, addrs = _check_dns(host, port, var, timeout)
    checks.append(dns)
    if dns.ok:
        checks.append(_check_tcp(host, port, addrs, settings.route, var, timeout))
        network_ok = checks[-1].ok is True
    else:
        network_ok = False
    if network_ok and parts.scheme == "https":
        checks.append(_check_tls(settings, host, port, var, timeout))
        network_ok = checks[-1].ok is True
    elif parts.scheme != "https":
        checks.append(Check("tls", None, "plain http:// (no TLS)"))
    auth_failed = False
    if settings.route == "langfuse":
        if network_ok:
            checks.append(_check_credentials(settings, max(timeout, 2.0)))
            auth_failed = checks[-1].ok is False and checks[-1].detail.startswith(("HTTP 401", "HTTP 403"))
        else:
            checks.append(Check("credentials", None, "skipped: the host is not reachable"))
    if network_ok and not auth_failed:
        checks.append(_check_canary(settings, max(timeout * 2, 3.0)))
    else:
        checks.append(Check("canary", None, "skipped: fix the problem above first"))
    spool_check, report.spool = _spool_check(settings)
    checks.append(spool_check)


# --- output --------------------------------------------------------------------------------------


def render(report: DoctorReport, console: Console) -> None:
    """The human report; the caller prints :attr:`DoctorReport.line` last, as one plain line."""
    console.print(Text("otel-basic doctor", style="bold"))
    if report.settings_table:
        table = Table(title="effective configuration (secrets masked)", title_justify="left", show_edge=False)
        table.add_column("variable", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        table.add_column("from", style="dim", no_wrap=True)
        for row in report.settings_table:
            if row["source"] != "default" or row["variable"].startswith(("LANGFUSE_", "OTEL_EXPORTER_OTLP_")):
                table.add_row(row["variable"], Text(row["value"]), row["source"])
        console.print(table)
        console.print(Text("(unset variables keep the defaults of the README's configuration table)", style="dim"))
        for warning in report.warnings:
            console.print(Text(f"warning: {warning}", style="yellow"))
    else:
        names = ", ".join(report.variables_set) or "none"
        console.print(Text.assemble(("variables set: ", "bold"), names))
    console.print(Text.assemble(("route: ", "bold"), (report.route, "bold cyan"), f"  ({report.reason})"))
    checks = Table(title="checks", title_justify="left", show_edge=False)
    checks.add_column("", no_wrap=True)
    checks.add_column("check", style="bold", no_wrap=True)
    checks.add_column("detail", overflow="fold")
    for check in report.checks:
        mark = Text("✓", "green") if check.ok else Text("✗", "red") if check.ok is False else Text("-", "dim")
        checks.add_row(mark, check.name, Text(check.detail, style="" if check.ok is not None else "dim"))
    console.print(checks)
    if report.spool and report.spool.get("rejected_reasons"):
        for reason, spans in report.spool["rejected_reasons"].items():
            console.print(Text(f"  rejected: {spans} spans: {reason}", style="red"))
