"""Client options for the transports, from :class:`Settings`: TLS trust, mTLS, proxies, gRPC channels.

Pure functions the HTTP and gRPC transports call, so that both follow the same rules:

- **Trust.** ``OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`` if set; otherwise, with ``trust_env``
  (``OTEL_BASIC_TRUST_ENV``, default true), ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` (the OpenSSL and
  httpx convention) or ``REQUESTS_CA_BUNDLE`` (the requests convention); otherwise certifi's
  bundle (HTTP) or gRPC's bundled roots.
- **mTLS.** ``OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE`` + ``..._CLIENT_KEY``.
- **Proxies.** With ``trust_env``, ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``/``NO_PROXY`` apply
  as for every httpx client (read when the client is built; Settings keeps a snapshot of them, so
  a change makes ``configure()`` rebuild); gRPC honours ``grpc_proxy``/``https_proxy`` and
  ``no_grpc_proxy``/``no_proxy`` itself. ``OTEL_BASIC_TRUST_ENV=false`` turns all of this off.
- **gRPC security** (spec): ``https://`` = TLS, ``http://`` = plaintext; a scheme-less endpoint was
  already resolved by the settings (TLS unless ``OTEL_EXPORTER_OTLP_INSECURE=true``).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import certifi

from otel_basic.settings import Settings

if TYPE_CHECKING:
    import grpc

__all__ = ["ca_file", "grpc_channel", "grpc_target", "httpx_client_options", "proxy_configured", "ssl_context"]


def ca_file(settings: Settings) -> tuple[Path | None, Path | None]:
    """(CA file, CA directory) to trust, by the precedence in the module docstring; (None, None)
    means the default bundle."""
    if settings.certificate is not None:
        return settings.certificate, None
    if settings.trust_env:
        env = settings.network_env
        if env.get("SSL_CERT_FILE"):
            return Path(env["SSL_CERT_FILE"]), None
        if env.get("SSL_CERT_DIR"):
            return None, Path(env["SSL_CERT_DIR"])
        if env.get("REQUESTS_CA_BUNDLE"):
            return Path(env["REQUESTS_CA_BUNDLE"]), None
    return None, None


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context for HTTPS: verification always on, client certificate when configured."""
    cafile, capath = ca_file(settings)
    if cafile is None and capath is None:
        context = ssl.create_default_context(cafile=certifi.where())
    else:
        context = ssl.create_default_context(
            cafile=str(cafile) if cafile else None, capath=str(capath) if capath else None
        )
    if settings.client_certificate is not None and settings.client_key is not None:
        context.load_cert_chain(str(settings.client_certificate), str(settings.client_key))
    return context


def httpx_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client(...)``: ``verify``, ``trust_env``, ``follow_redirects``.

    A redirect is never followed: it would resend the credentials elsewhere and, for a POST,
    lose the body (the transport reports it as a configuration error instead)."""
    return {
        "verify": ssl_context(settings),
        "trust_env": settings.trust_env,
        "follow_redirects": False,
    }


def proxy_configured(settings: Settings) -> bool:
    """Whether any HTTP(S)_PROXY/ALL_PROXY variable is in effect. Then the HTTP transports leave
    every request to httpx, whose ``NO_PROXY`` rules decide per URL; ours would have to copy them
    exactly (they differ from curl's), so the direct socket is used only when no proxy is set."""
    if not settings.trust_env:
        return False
    return any(
        v.strip() for k, v in settings.network_env.items() if k.lower() in ("http_proxy", "https_proxy", "all_proxy")
    )


def grpc_target(settings: Settings, target: str | None = None) -> tuple[str, bool]:
    """(``host:port``, secure) for ``target`` (default the settings' endpoint)."""
    url = target or settings.endpoint
    parts = urlsplit(url if "://" in url else "//" + url)
    secure = parts.scheme == "https" if parts.scheme else settings.insecure is not True
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port or 4317}", secure


def grpc_channel(settings: Settings, target: str | None = None) -> grpc.Channel:
    """A gRPC channel to ``target`` (default the settings' endpoint), secure or not per the spec,
    with the configured roots, client certificate and proxy behaviour. Compression is per call
    (:class:`~otel_basic.transports.otlp_grpc.GrpcTransport`: large requests only)."""
    import grpc  # optional dependency (the [grpc] extra): only the gRPC route needs it

    address, secure = grpc_target(settings, target)
    options = [("grpc.enable_http_proxy", 1 if settings.trust_env else 0)]
    if not secure:
        return grpc.insecure_channel(address, options=options)
    cafile, capath = ca_file(settings)
    roots = cafile.read_bytes() if cafile is not None else (_dir_bundle(capath) if capath is not None else None)
    key = settings.client_key.read_bytes() if settings.client_key is not None else None
    chain = settings.client_certificate.read_bytes() if settings.client_certificate is not None else None
    credentials = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)
    return grpc.secure_channel(address, credentials, options=options)


def _dir_bundle(directory: Path) -> bytes | None:
    """gRPC takes one PEM blob: concatenate the certificates of an OpenSSL-style directory."""
    pems = [p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file() and p.suffix in (".pem", ".crt", ".0")]
    return b"\n".join(pems) or None
