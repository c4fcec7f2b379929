"""Server-side request forgery guard for URLs the system fetches on a user's behalf (feed sources, webhooks).

Only globally reachable addresses may be dialled: an address is refused when Python's `ipaddress` does not
call it global, when it is multicast or reserved, and when it is a tunnel or translation address (6to4,
Teredo, NAT64, IPv4-mapped or -compatible) that wraps an IPv4 address which would be refused itself — so
`[2002:7f00:1::]` is refused like 127.0.0.1. The operator's allow-list (`MR_INGEST_ALLOWED_NETWORKS`,
`MR_WEBHOOK_ALLOWED_NETWORKS`) is the only way round.

The check runs when a URL is registered (or discovered in remote content) and again at connect time, on
the address actually dialled: `GuardedBackend` resolves the name itself and connects to the checked IP,
so a name that resolves to a public address at registration and to 169.254.169.254 later (DNS rebinding)
is still refused. Every redirect hop connects through the same backend and is checked the same way.

`file://` URLs are never fetched through here; `local_file` decides whether an operator's file:// source
may be read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(reason: str, *cidrs: str) -> list[tuple[IPNetwork, str]]:
    return [(ipaddress.ip_network(c), reason) for c in cidrs]


# Named classes of addresses that are not globally reachable (the IANA special-purpose registries), most
# specific first, so that a refusal says what the address is. `is_global`, multicast and reserved catch
# the rest; the table also keeps the refusals the same on Python versions whose `is_global` differ.
_NAMED: list[tuple[IPNetwork, str]] = [
    # AWS, GCP, Azure, OpenStack; AWS IMDS over IPv6; Alibaba; Azure's wireserver; Oracle.
    *_nets(
        "a cloud metadata address",
        "169.254.169.254/32",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "168.63.129.16/32",
        "192.0.0.192/32",
    ),
    *_nets("an unspecified address", "0.0.0.0/8", "::/128"),
    *_nets("a loopback address", "127.0.0.0/8", "::1/128"),
    *_nets("a private address", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
    *_nets("a shared address (100.64.0.0/10, carrier-grade NAT)", "100.64.0.0/10"),
    *_nets("a link-local address", "169.254.0.0/16", "fe80::/10"),
    *_nets("an IETF protocol assignment address", "192.0.0.0/24", "2001::/23"),
    *_nets("a documentation address", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"),
    *_nets("a documentation address", "3fff::/20"),
    *_nets("a benchmarking address", "198.18.0.0/15"),
    *_nets("a multicast address", "224.0.0.0/4", "ff00::/8"),
    *_nets("a broadcast address", "255.255.255.255/32"),
    *_nets("a reserved address", "240.0.0.0/4"),
    *_nets("a discard-only address", "100::/64"),
    *_nets("a unique-local (private) address", "fc00::/7"),
    *_nets("a site-local address", "fec0::/10"),
]

# Addresses that carry an IPv4 address inside them (RFC 3056, 4380, 6052, 8215, 4291).
_6TO4 = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


def _low32(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def _wrapped(ip: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address], bool] | None:
    """(what kind of address, the IPv4 addresses it wraps, whether it is refused whatever it wraps)."""
    if ip in _6TO4:
        assert ip.sixtofour is not None
        return "a 6to4 address", [ip.sixtofour], False
    if ip in _TEREDO:
        assert ip.teredo is not None
        # A tunnel through a relay: not globally reachable in its own right (IANA), and its server and
        # client addresses are named when one of them is internal.
        return "a Teredo address", list(ip.teredo), True
    if ip in _NAT64:
        # DNS64 on an IPv6-only network answers 64:ff9b::a.b.c.d for public hosts: judged by what it wraps.
        return "a NAT64 address", [_low32(ip)], False
    if ip in _NAT64_LOCAL:
        # A network's own translator (RFC 8215); where it puts the IPv4 address depends on its prefix.
        return "a local-use NAT64 address", [_low32(ip)], True
    if ip in _V4_COMPATIBLE and int(ip) > 1:
        return "an IPv4-compatible address", [_low32(ip)], True
    return None


def _classify(ip: IPAddress) -> str | None:
    """What kind of address `ip` is, when it is not globally reachable; None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        wrapped = _wrapped(ip)
        if wrapped is not None:
            kind, inner, always = wrapped
            for v4 in inner:
                why = _classify(v4)
                if why is not None:
                    return f"{kind} wrapping {v4}, {why}"
            return f"{kind} (not globally reachable)" if always else None
    for net, reason in _NAMED:
        if ip in net:
            return reason
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "an address that is not globally reachable"
    return None


class UnsafeURL(ValueError):
    """The URL may not be fetched; the message says why, for the person who registered it."""


@dataclass(frozen=True)
class NetPolicy:
    allowed: tuple[IPNetwork, ...] = ()
    # The setting an operator changes to allow an address, named in the refusal.
    setting: str = "MR_INGEST_ALLOWED_NETWORKS"

    @classmethod
    def from_setting(cls, value: str, *, setting: str = "MR_INGEST_ALLOWED_NETWORKS") -> NetPolicy:
        """Comma-separated addresses or networks, e.g. `127.0.0.1, 10.20.0.0/16`."""
        networks = []
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise ValueError(f"allowed network {item!r} is not an address or CIDR network") from exc
        return cls(tuple(networks), setting)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why `ip` may not be dialled, or None when it may.

        An IPv4-mapped address is the IPv4 address itself to the socket, so it is judged (and allowed) as
        that; any other wrapping address is allowed only when the allow-list names it, not what it wraps."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allowed):
            return None
        return _classify(ip)


async def system_lookup(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for `host`."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# The name lookup behind `resolve`, at registration and at connect time alike. Tests put a table in its
# place to make a name resolve to an internal address without DNS (only loopback may be dialled there).
lookup: Callable[[str, int], Awaitable[list[str]]] = system_lookup


async def resolve(host: str, port: int) -> list[IPAddress]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        answers = await lookup(host, port)
    except (OSError, ValueError) as exc:  # socket.gaierror; a name the IDNA codec refuses
        raise UnsafeURL(
            f"the host {host!r} does not resolve ({getattr(exc, 'strerror', None) or exc})"
        ) from exc
    return list(dict.fromkeys(ipaddress.ip_address(a) for a in answers))


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _check(host: str, addresses: Iterable[IPAddress], policy: NetPolicy) -> list[IPAddress]:
    addresses = list(addresses)
    if not addresses:
        raise UnsafeURL(f"the host {host!r} resolves to no address")
    for ip in addresses:
        why = policy.refusal(ip)
        if why is not None:
            what = f"{host} is {why}" if _literal(host) == ip else f"{host} resolves to {ip}, {why}"
            raise UnsafeURL(f"{what}; refused (an operator can allow it with {policy.setting})")
    return addresses


async def check_url(url: str, policy: NetPolicy) -> None:
    """Raise UnsafeURL unless `url` is http(s) and every address its host resolves to may be dialled."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"not a URL that can be fetched: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL(f"only http and https URLs can be fetched, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise UnsafeURL("the URL has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    _check(parts.hostname, await resolve(parts.hostname, port), policy)


def local_file(url: str, root: Path) -> Path:
    """The file a file:// URL names, resolved (symbolic links followed), when it lies under `root`.

    Raise UnsafeURL otherwise: a file:// source may read only the directory the operator configured
    (MR_INGEST_FILE_ROOT), never /etc/passwd or a key file beside the service."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise UnsafeURL(f"not a file:// URL: {url}")
    if parts.netloc not in ("", "localhost"):
        raise UnsafeURL(f"a file:// URL names a file on this machine, not on {parts.netloc!r}")
    try:
        path = Path(url2pathname(parts.path)).resolve()
    except (OSError, ValueError) as exc:  # a NUL byte, a symbolic-link loop
        raise UnsafeURL(f"cannot read the file:// URL {url}: {exc}") from exc
    base = root.resolve()
    if not path.is_relative_to(base):
        raise UnsafeURL(
            f"{path} is outside {base}; file:// sources may read only files under MR_INGEST_FILE_ROOT"
        )
    return path


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks, and connects to the checked address (never re-resolving the name)."""

    def __init__(self, policy: NetPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = _check(host, await resolve(host, port), self._policy)
        except UnsafeURL as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        last: Exception | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"no address to connect to for {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(policy: NetPolicy, *, limits: httpx.Limits | None = None) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every connection (redirects included) goes through the guard."""
    limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(policy),
    )
    return transport
