"""Webhook SSRF guard: refuse private and reserved targets, pin the address that was checked."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeAlias
from urllib.parse import SplitResult, urlsplit, urlunsplit

from gateway.errors import WebhookAddressBlocked

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver: TypeAlias = Callable[[str, int], Awaitable[list[str]]]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _table(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), label) for cidr, label in rows)


# Svix's block list as tightened in its PR #2539 (spec section 10); first match names the reason.
BLOCKED_NETWORKS = _table(
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "CGNAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("ff00::/8", "multicast"),
    ("fe80::/10", "link-local"),
    ("fc00::/7", "ULA"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("100::/64", "discard"),
    ("2002::/16", "6to4"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "NAT64 local-use"),
    ("5f00::/16", "SRv6"),
)


def canonical(ip: IPAddress) -> IPAddress:
    """Return ::ffff:a.b.c.d as a.b.c.d so the IPv4 ranges apply to it."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _parse_cidr(cidr: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(cidr)
    except ValueError as exc:
        raise ValueError(f"allowed_networks entry {cidr!r} is not a valid CIDR: {exc}") from None


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """The deployment's exemptions from the block list (`[webhooks] allowed_networks`)."""

    allowed_networks: tuple[str, ...] = ()
    _networks: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Parse once, so a bad entry fails at startup rather than on the first delivery.
        networks = tuple(_parse_cidr(cidr) for cidr in self.allowed_networks)
        object.__setattr__(self, "allowed_networks", tuple(self.allowed_networks))
        object.__setattr__(self, "_networks", networks)

    def is_allowed(self, ip: IPAddress) -> bool:
        """True when ip lies in one of allowed_networks, which exempts it from the block list."""
        ip = canonical(ip)
        return any(ip in network for network in self._networks)


def blocked_reason(ip: IPAddress, allowed: NetworkPolicy) -> str | None:
    """None when ip may be contacted, else why not: "127.0.0.1 is in 127.0.0.0/8 (loopback)"."""
    ip = canonical(ip)
    if allowed.is_allowed(ip):
        return None
    for network, label in BLOCKED_NETWORKS:
        if ip in network:
            return f"{ip} is in {network} ({label})"
    return None


@dataclass(frozen=True, slots=True)
class PinnedTarget:
    """Where to send a webhook: the checked IP, plus the names the server and TLS expect."""

    url: str
    host_header: str
    sni_hostname: str | None
    ip: str


@dataclass(frozen=True, slots=True)
class _Uri:
    parts: SplitResult
    host: str  # ASCII host name or IP literal text, without brackets or zone
    port: int  # explicit, else the scheme's default
    literal: IPAddress | None


def _split(uri: str) -> tuple[SplitResult, int | None]:
    try:
        parts = urlsplit(uri)
        return parts, parts.port  # .port raises for a non-numeric or out-of-range port
    except ValueError:
        raise WebhookAddressBlocked("webhook URI is not a valid URL") from None


def _strip_zone(host: str) -> str:
    # Only an IPv6 literal can carry a zone ("%25eth0" in a URI, "%eth0" from getaddrinfo).
    return host.partition("%")[0] if ":" in host else host


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return canonical(ipaddress.ip_address(_strip_zone(text)))
    except ValueError:
        return None


def _ascii_host(host: str) -> str:
    # Host header and SNI must be ASCII; IDNA also rejects empty or over-long labels.
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise WebhookAddressBlocked(f"webhook host {host!r} is not a valid host name") from None


def _parse_uri(uri: str) -> _Uri:
    parts, port = _split(uri)
    if parts.scheme not in _DEFAULT_PORTS:
        raise WebhookAddressBlocked("webhook URI must be http or https")
    if parts.username is not None or parts.password is not None:
        raise WebhookAddressBlocked("webhook URI must not contain credentials")
    if not parts.hostname:
        raise WebhookAddressBlocked("webhook URI has no host")
    host = _strip_zone(parts.hostname)
    literal = _parse_ip(host)
    if literal is None:
        host = _ascii_host(host)
    return _Uri(parts, host, _DEFAULT_PORTS[parts.scheme] if port is None else port, literal)


def check_uri_syntax(uri: str) -> None:
    """Refuse a URI that is not http(s), has no host or carries credentials; no DNS lookup."""
    _parse_uri(uri)


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the event loop's getaddrinfo: IPv4/IPv6 addresses, deduplicated, in order."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    inet = (socket.AF_INET, socket.AF_INET6)
    return list(dict.fromkeys(str(info[4][0]) for info in infos if info[0] in inet))


def _resolved_ip(host: str, text: str) -> IPAddress:
    ip = _parse_ip(text)
    if ip is None:
        raise WebhookAddressBlocked(f"webhook host {host} resolved to an invalid address {text!r}")
    return ip


async def _resolve(target: _Uri, resolver: Resolver) -> list[IPAddress]:
    try:
        found = await resolver(target.host, target.port)
    except (OSError, UnicodeError) as exc:
        message = f"webhook host {target.host} could not be resolved: {exc}"
        raise WebhookAddressBlocked(message) from None
    if not found:
        raise WebhookAddressBlocked(f"webhook host {target.host} resolved to no addresses")
    return [_resolved_ip(target.host, text) for text in found]


def _check_all(host: str, addresses: list[IPAddress], policy: NetworkPolicy) -> None:
    # Any blocked address refuses the host: a name that mixes public and private answers
    # is either misconfigured or an attack, and Svix's "keep the allowed ones" is laxer.
    for ip in addresses:
        reason = blocked_reason(ip, policy)
        if reason is not None:
            raise WebhookAddressBlocked(f"webhook host {host} is blocked: {reason}")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _pinned(target: _Uri, ip: IPAddress) -> PinnedTarget:
    parts = target.parts
    port = f":{parts.port}" if parts.port is not None else ""
    # The fragment is dropped: clients never send it. The zone is dropped too: link-local
    # targets are blocked unless allow-listed, and the pinned address is the checked one.
    url = urlunsplit((parts.scheme, _bracket(str(ip)) + port, parts.path, parts.query, ""))
    tls_name = parts.scheme == "https" and target.literal is None
    return PinnedTarget(
        url=url,
        host_header=_bracket(target.host) + port,
        sni_hostname=target.host if tls_name else None,
        ip=str(ip),
    )


async def pin(
    uri: str, policy: NetworkPolicy, resolver: Resolver = system_resolver
) -> PinnedTarget:
    """Check every address of uri's host and return a target pinned to the first one.

    Connecting to the returned IP, not the name, means a second DNS answer (rebinding)
    cannot swap in an address that was never checked.
    """
    target = _parsed(uri)
    if target.literal is not None:
        addresses: tuple[IPAddress, ...] = (target.literal,)
    else:
        addresses = tuple(await _resolve(target, resolver))  # every time: names change
    return _checked_pin(target, addresses, policy)


# Both are pure, and a delivery worker asks about the same endpoints many times a second: the
# parse and the address checks cost more than signing the request. Refusals are not cached.
@functools.lru_cache(maxsize=4096)
def _parsed(uri: str) -> _Uri:
    return _parse_uri(uri)


@functools.lru_cache(maxsize=4096)
def _checked_pin(
    target: _Uri, addresses: tuple[IPAddress, ...], policy: NetworkPolicy
) -> PinnedTarget:
    _check_all(target.host, list(addresses), policy)
    return _pinned(target, addresses[0])
