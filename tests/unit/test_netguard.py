"""The SSRF guard's policy and URL checks (addresses only: no name is resolved here)."""

from __future__ import annotations

import ipaddress

import pytest

from shared.netguard import NetPolicy, UnsafeURL, check_url


@pytest.mark.parametrize(
    ("ip", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.8", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("100.100.100.200", "cloud metadata"),
        ("0.0.0.0", "reserved"),
        ("224.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
def test_internal_addresses_are_refused(ip: str, why: str) -> None:
    refusal = NetPolicy().refusal(ipaddress.ip_address(ip))
    assert refusal is not None and why in refusal


def test_public_addresses_pass() -> None:
    assert NetPolicy().refusal(ipaddress.ip_address("93.184.215.14")) is None
    assert NetPolicy().refusal(ipaddress.ip_address("2606:2800:21f:cb07:6820:80da:af6b:8b2c")) is None


def test_the_allowlist_permits_exactly_what_it_names() -> None:
    policy = NetPolicy.from_setting("127.0.0.1, 10.20.0.0/16")
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.20.3.4")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) is not None
    assert policy.refusal(ipaddress.ip_address("10.21.0.1")) is not None
    with pytest.raises(ValueError, match="not an address"):
        NetPolicy.from_setting("localhost")


@pytest.mark.parametrize(
    "url",
    ["ftp://93.184.215.14/feed", "file:///etc/passwd", "gopher://x", "http:///nohost", "http://10.0.0.1/"],
)
async def test_check_url_refuses(url: str) -> None:
    with pytest.raises(UnsafeURL):
        await check_url(url, NetPolicy())


async def test_check_url_accepts_a_public_address() -> None:
    await check_url("https://93.184.215.14:8443/feed.xml", NetPolicy())
