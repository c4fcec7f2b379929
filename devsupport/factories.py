"""Test data: feed entries whose right departments are known, and RSS/Atom documents holding them."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from xml.sax.saxutils import escape

from shared.classify import RuleEngine, Taxonomy
from shared.events import Mention, MentionClassified, mention_id
from shared.settings import Settings

# Each template names the departments the default rules (config/routing.yaml) must give it when its
# source has influence 1. The filler sentences below carry no taxonomy term, so they change nothing.
TEMPLATES: list[tuple[str, str, frozenset[str]]] = [
    (
        "Tessellate Boards keeps crashing",
        "Tessellate Boards crashes every time I open a large board, and I lost my data twice this week.",
        frozenset({"rnd"}),
    ),
    (
        "Exporting from Tessellate",
        "How do I export a board to PDF in Tessellate? Is there a way to keep the layers separate?",
        frozenset({"support"}),
    ),
    (
        "Dark mode for Tessellate, please",
        "Please add dark mode to Tessellate Boards. It would be great if the tablet app had it too.",
        frozenset({"product"}),
    ),
    (
        "Why our studio runs on Tessellate",
        "I love Tessellate. The new templates are amazing and I recommend it to every studio I meet.",
        frozenset({"marketing"}),
    ),
    (
        "A hole in the Tessellate embed widget",
        "I found an XSS vulnerability in the Tessellate embed widget and sent the details to them.",
        frozenset({"rnd", "pr"}),
    ),
    (
        "Tessellate's chief executive on the record",
        "The Tessellate CEO gave a long interview to a journalist about where the company goes next.",
        frozenset({"pr"}),
    ),
    (
        "Tessellate was down for the morning",
        "Tessellate was down for two hours this morning and our whole workshop stalled.",
        frozenset({"rnd", "support"}),
    ),
    (
        "Billed twice by Tessellate",
        "I was charged twice for Tessellate this month and I want a refund; the subscription is expensive "
        "enough as it is.",
        frozenset({"support", "marketing"}),
    ),
    (
        "The Tessellate toolbar",
        "The Tessellate toolbar is confusing, and getting a new board ready takes too many clicks.",
        frozenset({"product"}),
    ),
    (
        "An afternoon with Tessellate",
        "Spent the afternoon sketching garden layouts with Tessellate at the cafe near the station.",
        frozenset({"marketing"}),
    ),
]

FILLER = [
    "We use it with a distributed group of twelve people.",
    "Our office moved to a new building in the spring.",
    "The sessions usually run on Tuesdays and Thursdays.",
    "My colleague Ana drew most of the diagrams.",
    "We keep one board per client project.",
    "The tablet sits next to the big screen in the meeting room.",
    "Most of the sketches end up in the weekly notes.",
    "It runs in the browser on the old laptops too.",
    "Our design group meets in the small room on the third floor.",
    "The students in my evening class picked it up within an hour.",
    "I mostly draw user journeys and rough wireframes.",
    "We printed the final board and pinned it to the wall.",
    "My manager asked for a summary before Friday.",
    "The retrospective took longer than planned this time.",
    "We tried sticky notes on the wall first, years ago.",
    "Half of the group joins from Berlin and half from Porto.",
    "I use a stylus on the tablet and a mouse on the desktop.",
    "The agenda for the workshop had seven items.",
    "We archive old boards at the end of every quarter.",
    "The client liked the colour coding we came up with.",
    "On Mondays the whole department plans the week together.",
    "My notes from the trip are still scattered around.",
    "A friend who teaches chemistry uses it in her lessons.",
    "We run a short warm-up game before every session.",
    "The coffee machine on our floor has been replaced.",
    "Our intern mapped the entire customer journey last month.",
    "I keep a personal board for reading notes and ideas.",
    "We plan the garden for the community centre this way.",
    "The school board meeting used the big display in the hall.",
    "Last winter we mapped out the whole warehouse layout.",
]


@dataclass(frozen=True)
class Entry:
    guid: str
    title: str
    text: str
    link: str
    author: str
    published: datetime
    departments: frozenset[str]


def make_entries(n: int, *, prefix: str, seed: int = 7) -> list[Entry]:
    rng = random.Random(seed)
    start = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
    entries = []
    for i in range(n):
        title, text, departments = TEMPLATES[i % len(TEMPLATES)]
        extra = " ".join(rng.sample(FILLER, 4))
        entries.append(
            Entry(
                guid=f"{prefix}-{i}",
                title=f"{title} ({prefix} #{i})",
                text=f"{text} {extra} Reference {prefix}-{i}.",
                link=f"https://blog.example.net/{prefix}/{i}?utm_source=feed&utm_medium=rss",
                author=rng.choice(["Dana Whitfield", "Kofi Mensah", "Lena Vogel", "Ravi Iyer"]),
                published=start + timedelta(hours=i),
                departments=departments,
            )
        )
    return entries


def rss(entries: list[Entry], *, title: str = "Test feed") -> bytes:
    items = "".join(
        f'<item><guid isPermaLink="false">{escape(e.guid)}</guid><title>{escape(e.title)}</title>'
        f"<link>{escape(e.link)}</link><dc:creator>{escape(e.author)}</dc:creator>"
        f"<pubDate>{format_datetime(e.published)}</pubDate>"
        f"<description>{escape('<p>' + e.text + '</p>')}</description></item>"
        for e in entries
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<channel><title>{escape(title)}</title><link>https://blog.example.net/</link>"
        f"<description>test</description>{items}</channel></rss>"
    ).encode()


def atom(entries: list[Entry], *, title: str = "Test feed") -> bytes:
    items = "".join(
        f"<entry><id>{escape(e.guid)}</id><title>{escape(e.title)}</title>"
        f'<link rel="alternate" href="{escape(e.link)}"/>'
        f"<author><name>{escape(e.author)}</name></author>"
        f"<published>{e.published.isoformat()}</published><updated>{e.published.isoformat()}</updated>"
        f'<content type="html">{escape("<p>" + e.text + "</p>")}</content></entry>'
        for e in entries
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>{escape(title)}</title><id>urn:test:{escape(title)}</id>"
        f"<updated>2026-11-01T00:00:00Z</updated>{items}</feed>"
    ).encode()


def classified_event(i: int, *, text: str | None = None, influence: int = 1) -> MentionClassified:
    """A MentionClassified as the classifier would publish it, for entry `i` of the templates."""
    title, body, _ = TEMPLATES[i % len(TEMPLATES)]
    mention = Mention(
        id=mention_id("src-test", f"entry-{i}"),
        source_id="src-test",
        source_name="Test source",
        title=title,
        text=text if text is not None else body,
        author="Dana Whitfield",
        url=f"https://blog.example.net/{i}",
        published_at=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=i),
        influence=influence,
    )
    return MentionClassified(
        mention=mention, ingested_at=mention.published_at, classification=_engine().classify(mention)
    )


@functools.cache
def _engine() -> RuleEngine:
    return RuleEngine(Taxonomy.from_file(Settings().taxonomy_file))


def memory_router(engine: Any, *, clock: Callable[[], datetime] | None = None) -> Any:
    """A RouterService storing into `engine` (an AsyncEngine) with the default routing rules, its events
    on an in-memory bus, at `clock`'s time (default: now): what store-level tests route with."""
    from services.router.service import RouterService
    from shared.bus import MemoryBus
    from shared.db import session_factory
    from shared.events import utcnow
    from shared.routing import RuleSet
    from shared.settings import BusKind

    settings = Settings().model_copy(update={"database_url": "unused", "bus": BusKind.MEMORY})
    return RouterService(
        settings=settings,
        bus=MemoryBus(),
        sessions=session_factory(engine),
        rules=RuleSet.from_file(settings.routing_file),
        clock=clock or utcnow,
    )
