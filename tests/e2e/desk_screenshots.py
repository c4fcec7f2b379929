"""`python -m tests.e2e.desk_screenshots` (make desk-screenshots): the desk's main screens as PNGs in
docs/desk/, taken from the embedded default with the example feeds in Debian's Chromium, as a new user
sees them: the queues and the list, a mention with its evidence, and the list at a phone's width."""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page, async_playwright

from shared.settings import REPO_ROOT
from tests.e2e.desk_support import Stack, chromium_path, embedded_stack

OUT = REPO_ROOT / "docs" / "desk"


async def _a_mention_with_evidence(stack: Stack) -> str:
    """A negative mention in several departments whose topic evidence stands in its text."""
    async with stack.api() as api:
        items: list[dict[str, Any]] = (
            await api.get("/v1/mentions", params={"sentiment": "negative", "limit": 100})
        ).json()["items"]
    for m in sorted(items, key=lambda m: -len(m["assignments"])):
        terms = [e[5:] for t in m["classification"]["topics"] for e in t["evidence"] if e.startswith("term:")]
        if any(re.search(rf"(?<!\w){re.escape(t)}(?!\w)", m["text"], re.I) for t in terms):
            return str(m["id"])
    return str(items[0]["id"])


async def _shoot(page: Page, name: str) -> Path:
    path = OUT / f"{name}.png"
    await page.wait_for_timeout(300)  # the last list rows and counts drawn
    await page.screenshot(path=str(path), type="png")
    return path


async def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="desk-shots-") as home:
        async with embedded_stack(Path(home), None) as stack, async_playwright() as playwright:
            mention = await _a_mention_with_evidence(stack)
            browser = await playwright.chromium.launch(executable_path=chromium_path(), headless=True)
            laptop = await browser.new_page(viewport={"width": 1280, "height": 800}, locale="en-GB")
            await laptop.goto(stack.link)
            await laptop.wait_for_selector("body[data-ready=true]")
            shots = [await _shoot(laptop, "queues-and-list")]
            await laptop.goto(f"{stack.base}/desk/#/mentions/{mention}")
            await laptop.wait_for_selector("#detail .assignment")
            shots.append(await _shoot(laptop, "mention"))
            phone = await browser.new_page(viewport={"width": 390, "height": 844}, locale="en-GB")
            await phone.goto(stack.link)
            await phone.wait_for_selector("body[data-ready=true]")
            shots.append(await _shoot(phone, "phone"))
            await browser.close()
    for path in shots:
        print(f"{path.relative_to(REPO_ROOT)}: {path.stat().st_size // 1024} kB")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except (AssertionError, httpx.HTTPError) as exc:
        print(f"desk-screenshots: {exc}", file=sys.stderr)
        sys.exit(1)
