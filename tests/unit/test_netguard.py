"""The SSRF guard's policy, URL and file:// checks (no name is resolved through DNS here: a name's answers
come from a table put in place of the guard's lookup)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from shared import netguard
from shared.netguard import NetPolicy, UnsafeURL, check_url, local_file

# Every class of address that is not globally reachable, with the words its refusal must contain.
REFUSED: list[tuple[str, str]] = [
    ("127.0.0.1", "a loopback address"),
    ("127.255.0.9", "a loopback address"),
    ("::1", "a loopback address"),
    ("10.0.0.8", "a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"),
    ("100.64.0.1", "a shared address (100.64.0.0/10"),
    ("100.127.255.254", "a shared address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("169.254.10.10", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("fc00::1", "a unique-local (private) address"),
    ("fd12::1", "a unique-local (private) address"),
    ("fec0::1", "a site-local address"),
    ("0.0.0.0", "an unspecified address"),
    ("0.1.2.3", "an unspecified address"),
    ("::", "an unspecified address"),
    ("224.0.0.1", "a multicast address"),
    ("239.1.2.3", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("ff0e::1", "a multicast address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "a broadcast address"),
    ("192.0.2.1", "a documentation address"),
    ("198.51.100.7", "a documentation address"),
    ("203.0.113.9", "a documentation address"),
    ("2001:db8::1", "a documentation address"),
    ("3fff::1", "a documentation address"),
    ("198.18.0.1", "a benchmarking address"),
    ("192.0.0.8", "an IETF protocol assignment address"),
    ("100::1", "a discard-only address"),
    ("5f00::1", "a reserved address"),
    # IPv4-mapped: the socket dials the IPv4 address itself.
    ("::ffff:127.0.0.1", "a loopback address"),
    ("::ffff:100.64.0.1", "a shared address"),
    # 6to4 (2002:V4ADDR::/48) wrapping internal IPv4.
    ("2002:7f00:1::", "a 6to4 address wrapping 127.0.0.1, a loopback address"),
    ("2002:a00:1::1", "a 6to4 address wrapping 10.0.0.1, a private address"),
    ("2002:a9fe:a9fe::", "a 6to4 address wrapping 169.254.169.254, a cloud metadata address"),
    ("2002:a9fe:101::", "a 6to4 address wrapping 169.254.1.1, a link-local address"),
    ("2002:c0a8:101::", "a 6to4 address wrapping 192.168.1.1, a private address"),
    ("2002:6440:1::", "a 6to4 address wrapping 100.64.0.1, a shared address"),
    # Teredo (2001:0:SERVER:flags:port:~CLIENT): the server or the (obfuscated) client internal.
    ("2001:0:a00:1::f5ff:fffe", "a Teredo address wrapping 10.0.0.1, a private address"),
    ("2001:0:5db8:d70e:8000:63bf:3f57:fefe", "a Teredo address wrapping 192.168.1.1, a private address"),
    ("2001:0:5db8:d70e:8000:63bf:80ff:fffe", "a Teredo address wrapping 127.0.0.1, a loopback address"),
    ("2001:0:5db8:d70e:8000:63bf:a2b0:f129", "a Teredo address (not globally reachable)"),
    # NAT64, the well-known prefix (RFC 6052) and the local-use one (RFC 8215).
    ("64:ff9b::7f00:1", "a NAT64 address wrapping 127.0.0.1, a loopback address"),
    ("64:ff9b::a9fe:a9fe", "a NAT64 address wrapping 169.254.169.254, a cloud metadata address"),
    ("64:ff9b::c0a8:101", "a NAT64 address wrapping 192.168.1.1, a private address"),
    ("64:ff9b:1::a00:1", "a local-use NAT64 address wrapping 10.0.0.1, a private address"),
    ("64:ff9b:1::5db8:d70e", "a local-use NAT64 address (not globally reachable)"),
    # IPv4-compatible (::V4ADDR, deprecated).
    ("::7f00:1", "an IPv4-compatible address wrapping 127.0.0.1, a loopback address"),
    ("::5db8:d70e", "an IPv4-compatible address (not globally reachable)"),
]

# Globally reachable, also when wrapped: DNS64 on an IPv6-only network answers 64:ff9b::V4 for public hosts.
PUBLIC = [
    "93.184.215.14",
    "1.1.1.1",
    "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
    "2002:5db8:d70e::1",  # 6to4 wrapping 93.184.215.14
    "64:ff9b::5db8:d70e",  # NAT64 wrapping 93.184.215.14
    "::ffff:93.184.215.14",
]


@pytest.mark.parametrize(("ip", "why"), REFUSED)
def test_addresses_that_are_not_globally_reachable_are_refused(ip: str, why: str) -> None:
    refusal = NetPolicy().refusal(ipaddress.ip_address(ip))
    assert refusal is not None and why in refusal, refusal


@pytest.mark.parametrize("ip", PUBLIC)
def test_globally_reachable_addresses_pass(ip: str) -> None:
    assert NetPolicy().refusal(ipaddress.ip_address(ip)) is None


@pytest.mark.parametrize(("ip", "why"), REFUSED)
async def test_literal_urls_are_refused_with_the_reason_and_the_setting(ip: str, why: str) -> None:
    host = f"[{ip}]" if ":" in ip else ip
    with pytest.raises(UnsafeURL) as refused:
        await check_url(f"http://{host}:8080/feed", NetPolicy())
    assert why in str(refused.value) and "MR_INGEST_ALLOWED_NETWORKS" in str(refused.value)


def test_the_allowlist_permits_exactly_what_it_names() -> None:
    policy = NetPolicy.from_setting("127.0.0.1, 10.20.0.0/16, 100.64.0.0/10")
    for allowed in ("127.0.0.1", "10.20.3.4", "100.64.0.1", "::ffff:127.0.0.1"):
        assert policy.refusal(ipaddress.ip_address(allowed)) is None, allowed
    for refused in ("127.0.0.2", "10.21.0.1", "::1", "169.254.169.254"):
        assert policy.refusal(ipaddress.ip_address(refused)) is not None, refused
    # A tunnel address is another address: allowing 127.0.0.1 does not allow the 6to4 address wrapping it.
    assert policy.refusal(ipaddress.ip_address("2002:7f00:1::")) is not None
    assert NetPolicy.from_setting("2002:7f00:1::/48").refusal(ipaddress.ip_address("2002:7f00:1::")) is None
    with pytest.raises(ValueError, match="not an address"):
        NetPolicy.from_setting("localhost")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.215.14/feed",
        "file:///etc/passwd",
        "gopher://x",
        "http:///nohost",
        "http://10.0.0.1/",
        "http://93.184.215.14:99999/",
    ],
)
async def test_check_url_refuses(url: str) -> None:
    with pytest.raises(UnsafeURL):
        await check_url(url, NetPolicy())


async def test_check_url_accepts_a_public_address() -> None:
    await check_url("https://93.184.215.14:8443/feed.xml", NetPolicy())
    await check_url("https://[2002:5db8:d70e::1]/feed.xml", NetPolicy())


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A name table in place of DNS, for the guard's lookup."""
    table: dict[str, list[str]] = {}

    async def lookup(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    monkeypatch.setattr(netguard, "lookup", lookup)
    return table


@pytest.mark.parametrize(("ip", "why"), REFUSED)
async def test_a_name_is_judged_by_what_it_resolves_to(
    names: dict[str, list[str]], ip: str, why: str
) -> None:
    names["feeds.example.org"] = ["93.184.215.14", ip]  # one bad answer is enough
    with pytest.raises(UnsafeURL) as refused:
        await check_url("https://feeds.example.org/rss", NetPolicy())
    assert f"feeds.example.org resolves to {ipaddress.ip_address(ip)}, {why}" in str(refused.value)


async def test_a_name_with_only_public_answers_passes(names: dict[str, list[str]]) -> None:
    names["feeds.example.org"] = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    await check_url("https://feeds.example.org/rss", NetPolicy())
    with pytest.raises(UnsafeURL, match="does not resolve"):
        await check_url("https://nowhere.example.org/rss", NetPolicy())


def test_local_files_only_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "feeds"
    (root / "sub").mkdir(parents=True)
    feed = root / "sub" / "a.xml"
    feed.write_text("<rss/>")
    assert local_file(feed.as_uri(), root) == feed.resolve()
    assert local_file(f"file://localhost{feed}", root) == feed.resolve()
    secret = tmp_path / "secret.txt"
    secret.write_text("key")
    (root / "link.xml").symlink_to(secret)
    for url in (
        secret.as_uri(),
        "file:///etc/passwd",
        f"file://{root}/../secret.txt",
        f"file://{root}/%2e%2e/secret.txt",
        (root / "link.xml").as_uri(),  # a symbolic link out of the root
        f"file://otherhost{feed}",
        f"file://{root}/a%00.xml",
        f"file://{tmp_path}/feeds-sibling/x.xml",  # a sibling whose name starts like the root's
    ):
        with pytest.raises(UnsafeURL):
            local_file(url, root)
