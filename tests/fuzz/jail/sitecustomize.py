"""Loaded at start-up by the API process that the fuzz run starts (its PYTHONPATH), and by nothing else:
that process may resolve and dial loopback addresses only.

The fuzzer generates URLs for the operations that take one (sources, webhooks, a webhook's test ping),
and the API resolves them at registration and dials them when pinging. The fuzz run's hooks
(tests/fuzz/hooks.py) point the URLs they can at a local receiver; whatever else gets through is
stopped here: a name that is not loopback does not resolve, and a connection to any other address is
refused, so no generated request leaves the machine. This works at the socket layer, under asyncio's
own event loop (the API runs on it: uvloop is not installed) and under any HTTP client.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}
_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _literal(host: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        return ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is None or _literal(name) is not None or str(name).lower() in _LOOPBACK_NAMES:
        return _real_getaddrinfo(host, *args, **kwargs)
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (fuzz run: loopback names only)")


def _check(self: socket.socket, address: Any) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        ip = _literal(address[0])
        if ip is None or not ip.is_loopback:
            raise ConnectionRefusedError(f"fuzz run: connecting to {address[0]} is not allowed")


def _connect(self: socket.socket, address: Any) -> None:
    _check(self, address)
    _real_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check(self, address)
    return _real_connect_ex(self, address)


socket.getaddrinfo = _getaddrinfo
socket.socket.connect = _connect  # type: ignore[method-assign]
socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
