"""Server-side request forgery guard for URLs the system fetches on a user's behalf (feed sources).

A URL whose host resolves to a loopback, private, link-local, reserved or cloud-metadata address is
refused unless an operator allowlist (`MR_INGEST_ALLOWED_NETWORKS`) permits it. The check runs when a
source is registered and again at connect time, on the address actually dialled: `GuardedBackend`
resolves the name itself and connects to the checked IP, so a name that resolves to a public address
at registration and to 169.254.169.254 later (DNS rebinding) is still refused. Redirects go through the
same transport and are checked the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_METADATA = (
    ipaddress.ip_network("169.254.169.254/32"),  # AWS, GCP, Azure, OpenStack
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS IMDS over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
)


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
        """Why `ip` may not be dialled, or None when it may."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allowed):
            return None
        if any(ip in net for net in _METADATA):
            return "a cloud metadata address"
        if ip.is_loopback:
            return "a loopback address"
        if ip.is_link_local:
            return "a link-local address"
        if ip.is_multicast or ip.is_reserved or ip.is_unspecified:
            return "a reserved address"
        if ip.is_private:
            return "a private address"
        return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeURL(f"the host {host!r} does not resolve ({exc.strerror})") from exc
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def _check(host: str, addresses: Iterable[IPAddress], policy: NetPolicy) -> list[IPAddress]:
    addresses = list(addresses)
    for ip in addresses:
        why = policy.refusal(ip)
        if why is not None:
            raise UnsafeURL(
                f"{host} resolves to {ip}, {why}; refused (an operator can allow it with {policy.setting})"
            )
    return addresses


async def check_url(url: str, policy: NetPolicy) -> None:
    """Raise UnsafeURL unless `url` is http(s) and every address its host resolves to may be dialled."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL(f"only http and https URLs can be fetched, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise UnsafeURL("the URL has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    _check(parts.hostname, await resolve(parts.hostname, port), policy)


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
