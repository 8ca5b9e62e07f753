"""Where the email app may POST a result: public addresses only, unless the deployment allow-lists more.

Why: the callback URL comes from the API client. Without a check, ``python -m basic.server`` POSTs to
whatever it is given (``http://169.254.169.254/...`` cloud metadata, ``http://10.0.0.1:6379/`` an internal
Redis) and its answer becomes a port and service probe of the server's network. So:

- The name is refused before resolving if it is a local or metadata name (``localhost``, ``*.localhost``,
  ``*.internal``, ``metadata.google.internal``, ``metadata``, ``instance-data``).
- The name is resolved once. *Every* address it resolves to must be public (globally routable and not
  loopback, private, unique-local, link-local, multicast, unspecified, reserved, shared/CGNAT or a
  metadata address), also when an IPv4 address hides inside IPv6 (``::ffff:a.b.c.d``, ``::a.b.c.d``,
  NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``).
- The connection goes to that checked address (the URL's host is replaced by it; ``Host`` and TLS SNI and
  certificate checks still use the name), so a second, different DNS answer (DNS rebinding) is never
  used. Right after the TCP connect, before the request is sent, the peer address is compared with it
  again (an httpcore trace hook). Environment proxies are not used (a proxy would resolve the name
  itself); redirects are not followed.
- ``BASIC_CALLBACK_ALLOW_HOSTS`` (comma-separated host names, addresses and CIDR networks, e.g.
  ``hooks.internal.example,10.20.0.0/16,127.0.0.1``) opens what a deployment needs: an allow-listed
  name skips the name check and the address checks; an address inside an allow-listed network passes.

The API client learns only ``delivered``, ``refused: target not allowed`` or ``failed``; status codes,
error texts and the reason for a refusal go to telemetry (the ``deliver_result`` span), never to it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from basic.models import Delivery

__all__ = [
    "ALLOW_ENV",
    "FAILED",
    "REFUSED",
    "AllowList",
    "CallbackRefused",
    "PinnedTarget",
    "Resolver",
    "check_peer",
    "check_target",
    "client",
    "for_client",
    "refusal_reason",
]

ALLOW_ENV = "BASIC_CALLBACK_ALLOW_HOSTS"
REFUSED = "refused: target not allowed"
"""What the API client is told when the target is refused (and nothing more)."""
FAILED = "failed"
"""What the API client is told when delivery to an allowed target failed (and nothing more)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``: how names are resolved (tests inject one; the default asks the OS)."""

_REFUSED_NAMES = frozenset({"localhost", "metadata", "metadata.google.internal", "metadata.goog", "instance-data"})
_REFUSED_SUFFIXES = (".localhost", ".internal", ".local")
_METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class CallbackRefused(Exception):
    """The callback target is not allowed. The message is the reason, for telemetry only."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """An IPv4 address carried inside an IPv6 one (mapped, compatible, NAT64, 6to4)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal_reason(ip: IPAddress) -> str | None:
    """Why a callback may not go to ``ip`` by default, or ``None`` for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = refusal_reason(inner)
            if reason is not None:
                return f"{reason} (inside IPv6)"
        if ip in _NAT64_LOCAL:
            return "local-use NAT64 address"
        if ip.is_site_local:
            return "site-local address"
    if ip in _METADATA:
        return "cloud metadata address"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    )
    for name, hit in checks:
        if hit:
            return f"{name} address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


@dataclass(frozen=True)
class AllowList:
    """Host names, addresses and networks a deployment opens for callbacks (``BASIC_CALLBACK_ALLOW_HOSTS``)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, raw: str, variable: str = ALLOW_ENV) -> AllowList:
        """Comma-separated names, addresses (``127.0.0.1``, ``::1``) and CIDR networks (``10.0.0.0/8``)."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (e.strip() for e in raw.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            if not name or any(c in name for c in "/:@ *?") or len(name) > 253:
                raise ValueError(
                    f"{variable}: {entry!r} is neither a host name, an IP address nor a CIDR network "
                    "(expected e.g. hooks.example.com,10.0.0.0/8,127.0.0.1)"
                )
            hosts.add(name)
        return cls(frozenset(hosts), tuple(networks))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AllowList:
        return cls.parse((os.environ if env is None else env).get(ALLOW_ENV, ""))

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            inner = _embedded_ipv4(ip)
            if inner is not None:
                candidates.append(inner)
        return any(c.version == n.version and c in n for c in candidates for n in self.networks)


@dataclass(frozen=True)
class PinnedTarget:
    """A checked target: the request goes to ``url`` (the checked address in place of the name)."""

    url: httpx.URL
    address: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def check_target(
    url: str, allow: AllowList | None = None, resolver: Resolver | None = None, timeout: float = 5.0
) -> PinnedTarget:
    """Resolve and check a callback URL; raises :class:`CallbackRefused` (reason in the message).

    Nothing is sent anywhere by this function: a refused target gets no traffic at all. A name that
    does not resolve within ``timeout`` seconds is refused (it could not be checked).
    """
    allow = AllowList.from_env() if allow is None else allow
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise CallbackRefused("not a valid URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CallbackRefused("not an http(s) URL with a host")
    host = parsed.host.lower().rstrip(".")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    name_allowed = allow.allows_host(host)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is None and not name_allowed and (host in _REFUSED_NAMES or host.endswith(_REFUSED_SUFFIXES)):
        raise CallbackRefused("local or metadata host name")
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = await asyncio.wait_for((resolver or _system_resolver)(host, port), timeout)
        except (OSError, UnicodeError, TimeoutError) as exc:
            raise CallbackRefused("host name does not resolve") from exc
    if not addresses:
        raise CallbackRefused("host name does not resolve")
    checked: list[IPAddress] = []
    for raw in addresses:
        try:
            ip = ipaddress.ip_address(raw.split("%", 1)[0])
        except ValueError as exc:
            raise CallbackRefused("resolver returned something that is not an address") from exc
        reason = refusal_reason(ip)
        if reason is not None and not name_allowed and not allow.allows_address(ip):
            raise CallbackRefused(reason)  # one bad answer refuses the name: DNS may mix them on purpose
        checked.append(ip)
    pinned = checked[0]
    headers = {"Host": parsed.netloc.decode("ascii").rsplit("@", 1)[-1]}
    extensions: dict[str, Any] = {"trace": _peer_guard(str(pinned))}
    if parsed.scheme == "https" and literal is None:
        extensions["sni_hostname"] = host  # TLS name and certificate check stay on the name
    return PinnedTarget(parsed.copy_with(host=str(pinned)), str(pinned), headers, extensions)


def check_peer(peer: object, address: str) -> None:
    """Raise :class:`CallbackRefused` unless ``peer`` (a socket address) is the checked ``address``."""
    try:
        host = str(peer[0]) if isinstance(peer, tuple) else ""
        same = ipaddress.ip_address(host.split("%", 1)[0]) == ipaddress.ip_address(address)
    except ValueError:
        same = False
    if not same:
        raise CallbackRefused("connected to an address other than the checked one")


def _peer_guard(address: str) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """An httpcore ``trace`` hook: right after the TCP connect, before a byte of the request is sent, the
    peer must be the checked address (a refusal aborts the request with :class:`CallbackRefused`)."""

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            stream = info.get("return_value")
            check_peer(stream.get_extra_info("server_addr") if stream is not None else None, address)

    return trace


def client(timeout: float) -> httpx.AsyncClient:
    """The HTTP client for callbacks: no redirects, no environment proxies (a proxy resolves names itself)."""
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)


def for_client(delivery: Delivery) -> Delivery:
    """What the API client is told about a URL delivery: delivered (with the attempts it took), refused, or
    failed. Status codes, error texts and failed attempt counts would tell it which ports answer what."""
    if delivery.target != "url":
        return delivery
    if delivery.ok:
        return Delivery(status=delivery.status, ok=True, target="url", attempts=delivery.attempts)
    return Delivery(status="failed", ok=False, target="url", error=REFUSED if delivery.error == REFUSED else FAILED)
