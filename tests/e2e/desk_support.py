"""What the desk's end-to-end tests (and the screenshots) stand on: the two stacks as a user starts them,
a hostile feed, and a page in Debian's Chromium driven by Playwright.

- `embedded_stack`: `mention-router run` (the process `make run` starts), its `Desk:` line read from
  stdout, with the bundled example feeds;
- `kafka_stack`: the four services as separate processes on the real Kafka and PostgreSQL, the example
  feeds imported with `mention-router sources import`, an admin key from MR_API_BOOTSTRAP_KEY;
- both with a hostile feed served on loopback (script tags, event handlers, `javascript:` links in
  titles, text, author names, URLs and the source's name) registered through the API.

The browser is Debian's `chromium` (deploy/local/chromium.sh installs it; MR_CHROMIUM names another):
Playwright's own browser download cannot work here. No browser is an error, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
from playwright.async_api import Browser, ConsoleMessage, Page, Request

from bench.infra import create_database, delete_topics, drop_database
from devsupport.feedserver import FeedServer
from devsupport.processes import ServiceProcesses, free_port
from devsupport.scenario import wait_for
from services.embedded import desk_link
from shared.db import migrate
from shared.settings import DEPARTMENTS, REPO_ROOT, Settings

# --- the browser ------------------------------------------------------------------------------------


def chromium_path() -> str:
    """Debian's Chromium (or MR_CHROMIUM). AssertionError when there is none: the desk's tests need a
    real browser, and `make test` installs one (deploy/local/chromium.sh)."""
    configured = os.environ.get("MR_CHROMIUM")
    candidates = (
        [configured] if configured else ["chromium", "chromium-browser", "/usr/lib/chromium/chromium"]
    )
    for candidate in candidates:
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    raise AssertionError(
        f"no Chromium found (tried {', '.join(c for c in candidates if c)}): run `deploy/local/chromium.sh "
        "install` (Debian's chromium package), or set MR_CHROMIUM to a Chromium executable"
    )


ANSWERED = re.compile(r"^Failed to load resource: the server responded with a status of 4\d\d\b")


@dataclass
class DeskPage:
    """A page of the desk in a fresh browser context (its own session storage), with every URL it
    requested and every console error or page error it saw."""

    page: Page
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, browser: Browser, *, width: int = 1280, height: int = 900) -> DeskPage:
        context = await browser.new_context(viewport={"width": width, "height": height}, locale="en-GB")
        page = await context.new_page()
        desk = cls(page)

        def console(message: ConsoleMessage) -> None:
            # An API's 4xx answer (a 404 for another department's mention, a 412, a 401) is logged by
            # the browser as a failed resource: the page handles those; anything else is a problem.
            if message.type == "error" and not ANSWERED.match(message.text):
                desk.problems.append(f"console: {message.text}")

        def request(r: Request) -> None:
            desk.requests.append(r.url)

        page.on("console", console)
        page.on("pageerror", lambda error: desk.problems.append(f"page error: {error}"))
        page.on("request", request)
        return desk

    async def close(self) -> None:
        await self.page.context.close()

    async def ready(self) -> None:
        """The desk signed in and its first screen drawn."""
        await self.page.wait_for_selector("body[data-ready=true]", timeout=20_000)

    async def sign_in(self, key: str, name: str = "") -> None:
        await self.page.fill("#signin-key", key)
        await self.page.fill("#signin-actor", name)
        await self.page.click("#signin-form button[type=submit]")

    async def queue_open(self) -> dict[str, int]:
        """Department -> the open count its card shows."""
        cards = self.page.locator(".queue")
        counts = {}
        for i in range(await cards.count()):
            card = cards.nth(i)
            department = await card.get_attribute("data-department")
            counts[str(department)] = int(await card.locator(".open dd").inner_text())
        return counts

    async def pwned(self) -> Any:
        return await self.page.evaluate("() => window.__pwned")

    def assert_clean(self, *keys: str) -> None:
        """No key in any URL the page requested, and no console or page errors (CSP reports among them)."""
        for key in keys:
            leaked = [u for u in self.requests if key in u]
            assert not leaked, f"the key went out in URLs: {leaked}"
        assert not [u for u in self.requests if "api_key" in u.lower()]
        assert not self.problems, self.problems


# --- a hostile feed ---------------------------------------------------------------------------------

HOSTILE_TITLE = '<img src=x onerror="window.__pwned=1">Tessellate export <b>fails</b>'
HOSTILE_TEXT = (
    "How do I export a board to PDF in Tessellate? <script>window.__pwned=1</script> It fails every time. "
    '<a href="javascript:window.__pwned=1" onclick="window.__pwned=1">see here</a>'
)
HOSTILE_AUTHOR = '"><svg onload="window.__pwned=1"></svg>'
HOSTILE_LINK = "javascript:window.__pwned=1"
HOSTILE_SOURCE = '<img src=x onerror="window.__pwned=1"> Hostile feed'


def hostile_feed() -> bytes:
    """An RSS feed whose one entry says, once ingest has read its markup, exactly the strings above (the
    title and text are escaped twice: what remains after parsing is markup as text, as a feed can send)."""
    item = (
        f'<item><guid isPermaLink="false">desk-hostile-1</guid><title>{escape(escape(HOSTILE_TITLE))}</title>'
        f"<link>{escape(HOSTILE_LINK)}</link><dc:creator>{escape(HOSTILE_AUTHOR)}</dc:creator>"
        "<pubDate>Mon, 07 Dec 2026 08:00:00 +0000</pubDate>"
        f"<description>{escape(escape(HOSTILE_TEXT))}</description></item>"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        "<channel><title>Hostile</title><link>https://hostile.example/</link><description>d</description>"
        f"{item}</channel></rss>"
    ).encode()


# --- the stacks -------------------------------------------------------------------------------------


@dataclass
class Stack:
    kind: str
    base: str
    link: str  # the desk's sign-in link (#key=<admin key>)
    admin_key: str
    hostile_id: str = ""

    def api(self, key: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base, timeout=15, headers={"Authorization": f"Bearer {key or self.admin_key}"}
        )

    async def make_key(self, name: str, scopes: list[str]) -> tuple[str, str]:
        """A new key: (id, key)."""
        async with self.api() as api:
            made = await api.post("/v1/keys", json={"name": name, "scopes": scopes})
            assert made.status_code == 201, made.text
            return made.json()["id"], made.json()["key"]


def _clean_env(**values: str) -> dict[str, str]:
    """The environment of a process a user starts: none of the test suite's MR_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MR_")}
    return {**env, "PYTHONUNBUFFERED": "1", "MR_METRICS_PORT": "0", "MR_API_AUTH": "true", **values}


async def _register_hostile(stack: Stack, feeds: FeedServer) -> None:
    url = feeds.serve("/hostile.xml", hostile_feed())
    async with stack.api() as api:
        made = await api.post("/v1/sources", json={"name": HOSTILE_SOURCE, "url": url, "kind": "feed"})
        assert made.status_code == 201, made.text


async def settle(stack: Stack, *, within: float, hostile: bool = True) -> None:
    """Every registered source polled, every department with mentions, the hostile entry routed, and the
    counts unchanged for three seconds: the tests compare what the page shows with what the API says."""
    last: list[int] = []

    async def quiet() -> bool:
        async with stack.api() as api:
            try:
                queues = (await api.get("/v1/queues")).json()["departments"]
                sources = (await api.get("/v1/sources", params={"include_discovered": "false"})).json()[
                    "items"
                ]
                search = (
                    await api.get("/v1/mentions", params={"q": "Tessellate export", "limit": 50})
                ).json()
            except httpx.TransportError:
                return False
        found = [m["id"] for m in search["items"] if m["title"] == HOSTILE_TITLE]
        stack.hostile_id = found[0] if found else ""
        totals = [q["total"] for q in queues]
        last.append(sum(totals))
        polled = all(s["last_success_at"] for s in sources)
        steady = len(last) >= 4 and len(set(last[-4:])) == 1
        routed = bool(found) or not hostile
        return polled and routed and len(totals) == len(DEPARTMENTS) and all(totals) and steady

    await wait_for(
        quiet, within=within, what=f"the {stack.kind} stack to route the example feeds", interval=1.0
    )


@asynccontextmanager
async def embedded_stack(home: Path, feeds: FeedServer | None) -> AsyncIterator[Stack]:
    """`mention-router run` in `home` (its own SQLite database and key file), as `make run` starts it;
    with the hostile feed when `feeds` serves it."""
    port = free_port()
    env = _clean_env(
        MR_DATABASE_URL=f"sqlite+aiosqlite:///{home / 'mention-router.db'}",
        MR_EMBEDDED_KEY_FILE=str(home / "admin-api-key"),
        MR_API_PORT=str(port),
        MR_INGEST_ALLOWED_NETWORKS="127.0.0.1",
        MR_INGEST_SOURCES_REFRESH_S="0.5",
    )
    proc = _run(home, env)
    try:
        link = await _desk_line(proc, home / "run.out", home / "run.err")
        key = link.split("#key=", 1)[1]
        stack = Stack("embedded", f"http://127.0.0.1:{port}", link, key)
        if feeds is not None:
            await _register_hostile(stack, feeds)
        await settle(stack, within=150, hostile=feeds is not None)
        yield stack
    finally:
        _stop(proc)


def _run(home: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`mention-router run`: stdout (where the Desk: line goes) and stderr (the log) to files in `home`."""
    with (home / "run.out").open("wb") as out, (home / "run.err").open("wb") as err:
        command = [sys.executable, "-m", "services.cli", "run"]
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=err)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


async def _desk_line(proc: subprocess.Popen[bytes], out: Path, err: Path) -> str:
    """The `Desk: <link>` line `mention-router run` prints once its API listens."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for line in (await asyncio.to_thread(out.read_text, errors="replace")).splitlines():
            if line.startswith("Desk: "):
                return line.removeprefix("Desk: ").strip()
        if proc.poll() is not None:
            raise AssertionError(f"mention-router run exited with {proc.returncode}:\n{_tail(err)}")
        await asyncio.sleep(0.2)
    raise AssertionError(f"mention-router run printed no Desk: line within 90 s:\n{_tail(err)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@asynccontextmanager
async def kafka_stack(
    home: Path, feeds: FeedServer, *, kafka_bootstrap: str, postgres_server_url: str
) -> AsyncIterator[Stack]:
    """The four services as processes on the real broker (a topic prefix of their own) and a database of
    their own; the example feeds imported as an operator would."""
    database = f"mr_desk_{uuid.uuid4().hex[:10]}"
    url = await create_database(postgres_server_url, database)
    prefix = f"desk{uuid.uuid4().hex[:8]}."
    port = free_port()
    admin_key = f"mr_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"
    env = _clean_env(
        MR_BUS="kafka",
        MR_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        MR_TOPIC_PREFIX=prefix,
        MR_DATABASE_URL=url,
        MR_API_PORT=str(port),
        MR_API_BOOTSTRAP_KEY=admin_key,
        MR_INGEST_ALLOW_FILE_URLS="true",
        MR_INGEST_ALLOWED_NETWORKS="127.0.0.1",
        MR_INGEST_SOURCES_REFRESH_S="0.5",
    )
    procs = ServiceProcesses(env, home)
    try:
        await migrate(url)
        imported = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.cli", "sources", "import", "examples/sources.yaml"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert imported.returncode == 0, imported.stderr.decode()
        for name in ("api", "router", "classifier", "ingest"):
            procs.start(name)
        settings = Settings().model_copy(update={"api_host": "127.0.0.1", "api_port": port})
        stack = Stack("kafka", f"http://127.0.0.1:{port}", desk_link(settings, admin_key), admin_key)
        await _api_ready(stack, procs)
        await _register_hostile(stack, feeds)
        await settle(stack, within=180)
        yield stack
    finally:
        procs.stop(timeout=20)
        await delete_topics(kafka_bootstrap, prefix)
        await drop_database(postgres_server_url, database)


async def _api_ready(stack: Stack, procs: ServiceProcesses) -> None:
    async def ready() -> bool:
        procs.check_alive()
        async with httpx.AsyncClient(base_url=stack.base, timeout=5) as api:
            try:
                return (await api.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

    await wait_for(ready, within=90, what="the API to be ready")
