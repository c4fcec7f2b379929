"""Server-side request forgery, end to end: the API refuses internal addresses for sources and webhooks;
ingest and the webhook sender refuse them again at connect time and on every redirect hop; URLs found in
remote content (comment feeds, an HTML page's feed link, a redirect) are http(s) only; file:// sources are
read only where enabled, only as an operator registered them, and only under MR_INGEST_FILE_ROOT.

Only loopback may be dialled on the test machine, so a name resolves through a table put in place of the
guard's lookup, and every dial is recorded by a spy under the guard that refuses anything but loopback (a
guard that let an internal address through shows up as a recorded dial, never as real traffic).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpcore
import httpx
import pytest

from devsupport.apiclient import api_client
from devsupport.factories import make_entries, rss
from devsupport.feedserver import FeedServer
from devsupport.sources import read_raw, register, sources_by_id
from services.ingest.service import IngestService
from shared import netguard
from shared.apikeys import create_key
from shared.bus.kafka import KafkaBus
from shared.db import SourceRow, create_engine, session_factory
from shared.events import utcnow
from shared.settings import BusKind, Settings
from shared.sources import SourceSpec
from tests.conftest import KafkaEnv

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

# One address of every class that is not globally reachable, with the words the refusal must contain.
INTERNAL: list[tuple[str, str]] = [
    ("100.64.0.1", "a shared address (100.64.0.0/10"),
    ("2002:7f00:1::", "a 6to4 address wrapping 127.0.0.1, a loopback address"),
    ("2002:a00:1::", "a 6to4 address wrapping 10.0.0.1, a private address"),
    ("2002:a9fe:a9fe::", "a 6to4 address wrapping 169.254.169.254, a cloud metadata address"),
    ("2002:c0a8:101::", "a 6to4 address wrapping 192.168.1.1, a private address"),
    ("2001:0:a00:1::f5ff:fffe", "a Teredo address wrapping 10.0.0.1, a private address"),
    ("2001:0:5db8:d70e:8000:63bf:3f57:fefe", "a Teredo address wrapping 192.168.1.1, a private address"),
    ("64:ff9b::a9fe:a9fe", "a NAT64 address wrapping 169.254.169.254, a cloud metadata address"),
    ("64:ff9b::7f00:1", "a NAT64 address wrapping 127.0.0.1, a loopback address"),
    ("64:ff9b:1::a00:1", "a local-use NAT64 address wrapping 10.0.0.1, a private address"),
    ("::ffff:127.0.0.2", "a loopback address"),  # mapped; 127.0.0.1 alone is on the allow-list
    ("::7f00:2", "an IPv4-compatible address wrapping 127.0.0.2, a loopback address"),
    ("127.0.0.2", "a loopback address"),
    ("::1", "a loopback address"),
    ("10.1.2.3", "a private address"),
    ("192.168.0.10", "a private address"),
    ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"),
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("240.0.0.1", "a reserved address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("169.254.1.1", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("fc00::1", "a unique-local (private) address"),
    ("fd12:3456::1", "a unique-local (private) address"),
    ("192.0.2.10", "a documentation address"),
    ("198.51.100.10", "a documentation address"),
    ("203.0.113.10", "a documentation address"),
    ("2001:db8::10", "a documentation address"),
]

# Where a loopback server (allowed) redirects: each target must be refused before anything is sent.
REDIRECTS: list[tuple[str, str]] = [
    ("http://100.64.0.1/feed", "100.64.0.1 is a shared address"),
    ("http://[2002:7f00:1::]/feed", "a 6to4 address wrapping 127.0.0.1"),
    ("http://[2002:a9fe:a9fe::]/feed", "a 6to4 address wrapping 169.254.169.254"),
    ("http://[64:ff9b::a00:1]/feed", "a NAT64 address wrapping 10.0.0.1"),
    ("http://[2001:0:a00:1::f5ff:fffe]/feed", "a Teredo address wrapping 10.0.0.1"),
    ("http://10.0.0.1/feed", "10.0.0.1 is a private address"),
    ("http://metadata.rebind.test/latest", "resolves to 169.254.169.254, a cloud metadata address"),
    ("http://cgnat.rebind.test/feed", "resolves to 100.64.0.1, a shared address"),
    ("file:///etc/passwd", "unsupported protocol 'file://'"),
]

NAMES = {"metadata.rebind.test": ["169.254.169.254"], "cgnat.rebind.test": ["100.64.0.1"]}


def url_of(ip: str, port: int = 8080, path: str = "/feed.xml") -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}{path}"


@dataclass
class Dials:
    """Every address the guard let through to the socket layer."""

    seen: list[str]

    def beyond_loopback(self) -> list[str]:
        return [h for h in self.seen if not ipaddress.ip_address(h).is_loopback]


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The guard's name lookup, at registration and at connect time: this table instead of DNS."""
    table: dict[str, list[str]] = dict(NAMES)

    async def lookup(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    monkeypatch.setattr(netguard, "lookup", lookup)
    return table


@pytest.fixture
def dials(monkeypatch: pytest.MonkeyPatch) -> Dials:
    """Records each connection under the guard and refuses all but loopback (this machine may dial nothing
    else): without the guard's refusal, an internal address would be recorded here."""
    record = Dials([])
    real = httpcore.AnyIOBackend.connect_tcp

    async def connect_tcp(self: httpcore.AnyIOBackend, host: str, port: int, **kw: Any) -> Any:
        record.seen.append(host)
        if not ipaddress.ip_address(host).is_loopback:
            raise httpcore.ConnectError(f"the test refuses to dial {host}")
        return await real(self, host, port, **kw)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect_tcp)
    return record


@pytest.fixture
async def settings(kafka: KafkaEnv, pg_url: str, tmp_path: Path) -> Settings:
    root = tmp_path / "feeds"
    root.mkdir()
    return kafka.settings(
        database_url=pg_url,
        ingest_allowed_networks="127.0.0.1",
        ingest_file_root=root,
        webhook_allow_http=True,
        webhook_allowed_networks="127.0.0.1",
        webhook_worker=False,
    )


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[KafkaBus]:
    bus = KafkaBus(settings)
    await bus.start()
    await bus.ensure_topics([settings.topic_raw])
    yield bus
    await bus.stop()


@asynccontextmanager
async def ingest_of(settings: Settings, bus: KafkaBus) -> AsyncIterator[IngestService]:
    engine = create_engine(settings.database_url)
    try:
        yield IngestService(settings=settings, bus=bus, sessions=session_factory(engine))
    finally:
        await engine.dispose()


@dataclass
class Api:
    client: httpx.AsyncClient
    headers: dict[str, str]

    async def post(self, path: str, body: Mapping[str, object]) -> httpx.Response:
        return await self.client.post(path, json=body, headers=self.headers)


@asynccontextmanager
async def api_of(settings: Settings) -> AsyncIterator[Api]:
    """The API (its own in-memory bus: only its registration and ping matter here), with an admin key."""
    settings = settings.model_copy(update={"bus": BusKind.MEMORY, "api_auth": True})
    engine = create_engine(settings.database_url)
    async with session_factory(engine)() as session:
        key = (await create_key(session, name="ssrf", scopes=["admin"], created_by="test")).key
        await session.commit()
    try:
        async with api_client(settings, engine=engine) as client:
            yield Api(client, {"Authorization": f"Bearer {key}"})
    finally:
        await engine.dispose()


def assert_refused(response: httpx.Response, why: str, setting: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = response.json()["detail"]
    assert why in detail and setting in detail, detail


# -- registration ----------------------------------------------------------------------------------------


async def test_the_api_refuses_every_internal_address_for_sources_and_webhooks(
    settings: Settings, names: dict[str, list[str]]
) -> None:
    async with api_of(settings) as api:
        source = await api.post("/v1/sources", {"name": "ok", "url": "http://127.0.0.1:9/ok.xml"})
        assert source.status_code == 201, "127.0.0.1 is on the allow-list"
        for n, (ip, why) in enumerate(INTERNAL):
            names[f"h{n}.rebind.test"] = [ip]
            for url in (url_of(ip), f"http://h{n}.rebind.test:8080/feed.xml"):
                assert_refused(
                    await api.post("/v1/sources", {"name": f"s{n}", "url": url}),
                    why,
                    "MR_INGEST_ALLOWED_NETWORKS",
                )
                changed = await api.client.patch(
                    f"/v1/sources/{source.json()['id']}", json={"url": url}, headers=api.headers
                )
                assert_refused(changed, why, "MR_INGEST_ALLOWED_NETWORKS")
                hook = {"department": "support", "url": url}
                assert_refused(await api.post("/v1/webhooks", hook), why, "MR_WEBHOOK_ALLOWED_NETWORKS")
        listed = (await api.client.get("/v1/sources", headers=api.headers)).json()["items"]
        assert [s["url"] for s in listed] == ["http://127.0.0.1:9/ok.xml"], "nothing refused was stored"


@pytest.mark.parametrize("enabled", [False, True])
async def test_the_api_never_registers_a_file_url(settings: Settings, enabled: bool) -> None:
    root = settings.ingest_file_root
    (root / "feed.xml").write_bytes(rss(make_entries(2, prefix="f")))
    settings = settings.model_copy(update={"ingest_allow_file_urls": enabled})
    async with api_of(settings) as api:
        for url in ((root / "feed.xml").as_uri(), "file:///etc/passwd"):
            response = await api.post("/v1/sources", {"name": "local", "url": url})
            assert response.status_code == 422, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            assert "http" in response.text, "the refusal says which schemes are accepted"
        assert (await api.client.get("/v1/sources", headers=api.headers)).json()["items"] == []


# -- connect time ----------------------------------------------------------------------------------------


async def test_ingest_refuses_at_connect_time_a_name_that_resolves_to_an_internal_address(
    settings: Settings, bus: KafkaBus, server: FeedServer, names: dict[str, list[str]], dials: Dials
) -> None:
    server.serve("/feed.xml", rss(make_entries(3, prefix="ok")))
    names["ok.rebind.test"] = ["127.0.0.1"]
    ok = await register(settings, SourceSpec(name="ok", url=f"http://ok.rebind.test:{server.port}/feed.xml"))
    expected: dict[str, str] = {}
    async with api_of(settings) as api:
        for n, (ip, why) in enumerate(INTERNAL):
            host = f"h{n}.rebind.test"
            # DNS rebinding: the name is harmless when the source is registered, internal when it is polled.
            names[host] = ["127.0.0.1"]
            created = await api.post(
                "/v1/sources", {"name": host, "url": f"http://{host}:{server.port}/feed.xml"}
            )
            assert created.status_code == 201, created.text
            names[host] = [ip]
            expected[created.json()["id"]] = f"{host} resolves to {ipaddress.ip_address(ip)}, {why}"
    async with ingest_of(settings, bus) as ingest:
        assert await ingest.poll_all() == 3, "only the allowed source publishes"
    health = await sources_by_id(settings)
    assert health[ok].last_error is None
    for sid, why in expected.items():
        assert why in (health[sid].last_error or ""), health[sid].last_error
        assert "refused (an operator can allow it with MR_INGEST_ALLOWED_NETWORKS)" in (
            health[sid].last_error or ""
        )
        assert health[sid].consecutive_failures == 1
    assert dials.beyond_loopback() == [], "no internal address was dialled"
    assert server.requests == {"/feed.xml": 1}, "only the allowed source's request reached the server"


async def test_the_webhook_sender_refuses_at_connect_time_a_name_that_resolves_to_an_internal_address(
    settings: Settings, names: dict[str, list[str]], dials: Dials
) -> None:
    with receiver() as rx:
        async with api_of(settings) as api:
            names["hooks.rebind.test"] = ["127.0.0.1"]
            good = await api.post(
                "/v1/webhooks", {"department": "support", "url": rx.url("hooks.rebind.test")}
            )
            assert good.status_code == 201, good.text
            ping = await api.client.post(f"/v1/webhooks/{good.json()['id']}/test", headers=api.headers)
            assert ping.json()["status"] == "delivered", ping.text
            for ip, why in INTERNAL:
                names["hooks.rebind.test"] = [ip]
                ping = await api.client.post(f"/v1/webhooks/{good.json()['id']}/test", headers=api.headers)
                assert ping.status_code == 200, ping.text
                assert ping.json()["status"] == "dead" and ping.json()["last_status_code"] is None
                refusal = f"resolves to {ipaddress.ip_address(ip)}, {why}"
                assert refusal in ping.json()["last_error"], ping.json()["last_error"]
        assert rx.paths == ["/hook"], "only the first ping reached the receiver"
    assert dials.beyond_loopback() == []


# -- redirects -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307])
async def test_ingest_refuses_a_redirect_hop_to_an_internal_address_or_a_file(
    settings: Settings,
    bus: KafkaBus,
    server: FeedServer,
    names: dict[str, list[str]],
    dials: Dials,
    status: int,
) -> None:
    sources: dict[str, str] = {}
    for n, (target, why) in enumerate(REDIRECTS):
        url = server.serve(f"/hop-{n}", b"", status=status, headers={"Location": target})
        sources[await register(settings, SourceSpec(name=f"hop {n}", url=url))] = why
    async with ingest_of(settings, bus) as ingest:
        assert await ingest.poll_all() == 0
    health = await sources_by_id(settings)
    for sid, why in sources.items():
        assert why in (health[sid].last_error or ""), health[sid].last_error
        assert "/hop-" in health[sid].url, "a refused permanent redirect does not move the source"
    assert dials.beyond_loopback() == []
    assert await read_raw(settings, missing_ok=True) == []


async def test_the_webhook_sender_does_not_follow_a_redirect_to_an_internal_address(
    settings: Settings, dials: Dials
) -> None:
    with receiver(redirect_to="http://100.64.0.1/hook") as rx:
        async with api_of(settings) as api:
            hook = await api.post("/v1/webhooks", {"department": "support", "url": rx.url("127.0.0.1")})
            assert hook.status_code == 201, hook.text
            ping = await api.client.post(f"/v1/webhooks/{hook.json()['id']}/test", headers=api.headers)
        assert ping.json()["status"] == "dead" and ping.json()["last_status_code"] == 307
        assert "redirects are not followed" in ping.json()["last_error"]
        assert rx.paths == ["/hook"]
    assert dials.beyond_loopback() == [], "the redirect's target was never dialled"


# -- URLs found in remote content ------------------------------------------------------------------------


def _item(guid: str, link: str, comments: str) -> str:
    return (
        f"<item><guid>{guid}</guid><title>Tessellate post {guid}</title><link>{escape(link)}</link>"
        "<pubDate>Mon, 02 Nov 2026 10:00:00 +0000</pubDate>"
        "<description>Tessellate Boards 4.0 is out.</description>"
        f"<wfw:commentRss>{escape(comments)}</wfw:commentRss><slash:comments>3</slash:comments></item>"
    )


def _blog(items: list[str]) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
        'xmlns:wfw="http://wellformedweb.org/CommentAPI/" xmlns:slash="http://purl.org/rss/1.0/modules/slash/">'
        "<channel><title>Blog</title><link>https://blog.example.net/</link><description>d</description>"
        + "".join(items)
        + "</channel></rss>"
    ).encode()


async def test_discovered_comment_feeds_are_http_only_and_pass_the_address_checks(
    settings: Settings, bus: KafkaBus, server: FeedServer, names: dict[str, list[str]], dials: Dials
) -> None:
    settings = settings.model_copy(update={"ingest_allow_file_urls": True})
    inside_root = settings.ingest_file_root / "comments.xml"
    inside_root.write_bytes(rss(make_entries(2, prefix="local")))
    hostile = [
        "file:///etc/passwd",
        inside_root.as_uri(),  # even a file the operator's own sources may read
        "http://100.64.0.1/comments",
        "http://[2002:a9fe:a9fe::]/comments",
        "http://[64:ff9b::a00:1]/comments",
        "http://metadata.rebind.test/comments",
        "http://10.0.0.1/comments",
        "gopher://127.0.0.1:70/comments",
        "http://[::1/comments",  # malformed: costs only itself
        "http://127.0.0.1:99999/comments",
    ]
    good = server.url("/post-ok/comments")
    server.serve("/post-ok/comments", rss(make_entries(2, prefix="c")))
    items = [_item(f"p{n}", f"https://blog.example.net/p{n}", u) for n, u in enumerate(hostile)]
    server.serve("/blog.xml", _blog([*items, _item("ok", "https://blog.example.net/ok", good)]))
    blog = await register(settings, SourceSpec(name="hostile blog", url=server.url("/blog.xml")))
    async with ingest_of(settings, bus) as ingest:
        await ingest.poll_all()
        children = [s for s in (await sources_by_id(settings)).values() if s.parent_id == blog]
        assert [c.url for c in children] == [good], "only the http feed on an allowed address is registered"
        await ingest.poll_all()
    assert dials.beyond_loopback() == []
    assert server.requests.get("/post-ok/comments") == 1


async def test_a_discovered_file_url_stored_before_the_fix_is_never_read(
    settings: Settings, bus: KafkaBus, server: FeedServer
) -> None:
    # A comment feed row that an older version registered from a hostile blog's wfw:commentRss.
    settings = settings.model_copy(update={"ingest_allow_file_urls": True})
    local = settings.ingest_file_root / "c.xml"
    local.write_bytes(rss(make_entries(2, prefix="x")))
    parent = await register(settings, SourceSpec(name="blog", url=server.serve("/b.xml", rss([]))))
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            now = utcnow()
            row = SourceRow(
                id="discovered-file",
                name="Comments",
                url=local.as_uri(),
                kind="comments",
                enabled=True,
                poll_interval_s=900,
                influence=1,
                created_at=now,
                updated_at=now,
                consecutive_failures=0,
                items_seen=0,
                backfill="all",
                parent_id=parent,
                post_url="https://blog.example.net/1",
            )
            session.add(row)
            await session.commit()
    finally:
        await engine.dispose()
    async with ingest_of(settings, bus) as ingest:
        assert await ingest.poll_all() == 0
    health = await sources_by_id(settings)
    assert "a file:// URL found in remote content is never read" in (
        health["discovered-file"].last_error or ""
    )


def _page(href: str) -> bytes:
    return (
        "<!doctype html><html><head><title>Blog</title>"
        f'<link rel="alternate" type="application/rss+xml" href="{escape(href)}">'
        "</head><body>hi</body></html>"
    ).encode()


async def test_a_feed_link_in_an_html_page_is_http_only_and_passes_the_address_checks(
    settings: Settings, bus: KafkaBus, server: FeedServer, names: dict[str, list[str]], dials: Dials
) -> None:
    settings = settings.model_copy(update={"ingest_allow_file_urls": True})
    inside_root = settings.ingest_file_root / "feed.xml"
    inside_root.write_bytes(rss(make_entries(2, prefix="local")))
    cases = [
        ("file:///etc/passwd", "only http and https URLs"),
        (inside_root.as_uri(), "only http and https URLs"),
        ("http://100.64.0.1/feed", "100.64.0.1 is a shared address"),
        ("http://[2002:7f00:1::]/feed", "a 6to4 address wrapping 127.0.0.1"),
        ("http://cgnat.rebind.test/feed", "resolves to 100.64.0.1, a shared address"),
        ("http://[::1/feed", "announces a feed URL that cannot be read"),
        ("http://127.0.0.1:99999/feed", "not a URL that can be fetched"),
    ]
    expected = {}
    for n, (href, why) in enumerate(cases):
        url = server.serve(f"/page-{n}", _page(href), content_type="text/html; charset=utf-8")
        expected[await register(settings, SourceSpec(name=f"page {n}", url=url))] = why
    server.serve("/feed-ok.xml", rss(make_entries(2, prefix="ok")))
    fine = await register(
        settings,
        SourceSpec(
            name="fine",
            url=server.serve("/page-ok", _page("/feed-ok.xml"), content_type="text/html; charset=utf-8"),
        ),
    )
    async with ingest_of(settings, bus) as ingest:
        assert await ingest.poll_all() == 2
    health = await sources_by_id(settings)
    for sid, why in expected.items():
        assert why in (health[sid].last_error or ""), health[sid].last_error
        assert "/page-" in health[sid].url
    assert health[fine].last_error is None and health[fine].url == server.url("/feed-ok.xml")
    assert dials.beyond_loopback() == []


# -- file:// sources -------------------------------------------------------------------------------------


async def test_file_sources_are_read_only_where_enabled_and_only_under_the_root(
    settings: Settings, bus: KafkaBus, tmp_path: Path
) -> None:
    root = settings.ingest_file_root
    (root / "sub").mkdir()
    (root / "sub" / "inside.xml").write_bytes(rss(make_entries(3, prefix="in")))
    outside = tmp_path / "outside.xml"
    outside.write_bytes(rss(make_entries(3, prefix="out")))
    (root / "escape.xml").symlink_to(outside)
    cases = {
        "inside": ((root / "sub" / "inside.xml").as_uri(), None),
        "outside": (outside.as_uri(), "is outside"),
        "passwd": ("file:///etc/passwd", "is outside"),
        "dotdot": (f"file://{root}/sub/../../outside.xml", "is outside"),
        "symlink": ((root / "escape.xml").as_uri(), "is outside"),
        "remote host": (f"file://fileserver{root}/sub/inside.xml", "not on 'fileserver'"),
    }
    ids = {name: await register(settings, SourceSpec(name=name, url=url)) for name, (url, _) in cases.items()}

    disabled = settings.model_copy(update={"ingest_allow_file_urls": False})
    async with ingest_of(disabled, bus) as ingest:
        assert await ingest.poll_all() == 0
    health = await sources_by_id(settings)
    for sid in ids.values():
        assert "file:// sources are disabled (MR_INGEST_ALLOW_FILE_URLS)" in (health[sid].last_error or "")

    enabled = settings.model_copy(update={"ingest_allow_file_urls": True})
    async with ingest_of(enabled, bus) as ingest:
        assert await ingest.poll_all() == 3, "the file under the root is read"
    health = await sources_by_id(settings)
    for name, (_, why) in cases.items():
        error = health[ids[name]].last_error
        assert (error is None) if why is None else (why in (error or "")), (name, error)
    published = await read_raw(settings)
    assert {m.mention.source_id for m in published} == {ids["inside"]}


def test_the_bundled_examples_are_under_the_default_root() -> None:
    from services.embedded import EXAMPLE_SOURCES
    from shared.sources import load_sources_file

    root = Settings().ingest_file_root
    for spec in load_sources_file(EXAMPLE_SOURCES):
        assert netguard.local_file(spec.url, root).is_file(), spec.url


# -- a webhook receiver that can redirect ---------------------------------------------------------------


@dataclass
class Receiver:
    port: int
    paths: list[str]

    def url(self, host: str) -> str:
        return f"http://{host}:{self.port}/hook"


@contextmanager
def receiver(*, redirect_to: str | None = None) -> Iterator[Receiver]:
    """Answers POST /hook with 200, or with 307 to `redirect_to`; records the paths it was sent."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            paths.append(self.path)
            self.send_response(307 if redirect_to else 200)
            if redirect_to:
                self.send_header("Location", redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(httpd.server_address[1], paths)
    finally:
        httpd.shutdown()
        httpd.server_close()
