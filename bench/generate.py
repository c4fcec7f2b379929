"""Realistic generated mentions: blog posts and comments of 300-1,500 characters about *Tessellate*.

Each mention mixes a few sentences that carry taxonomy terms (so that the classifier finds topics and the
router spreads the load over every department, sometimes two) with plain sentences that carry none,
the way real posts bury their point in chatter. Deterministic for a seed, cheap to generate (about
20 µs a mention), and every id is new for each run prefix so that runs never collide.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.bus.base import OutMessage
from shared.bus.codec import encode
from shared.events import Mention, MentionIngested, MentionKind, mention_id

MIN_CHARS = 300
MAX_CHARS = 1_500

# Sentences with terms from config/taxonomy.yaml, one list per kind of concern.
SIGNAL: dict[str, list[str]] = {
    "bug": [
        "Tessellate crashes every time I paste an image larger than a few megabytes.",
        "Since the last update the sticky notes freeze and the whole board froze twice today.",
        "I lost my data after the export failed with an error message nobody could explain.",
        "The connector tool is broken on Firefox; arrows stopped working halfway through the session.",
        "Looks like a regression: undo no longer restores deleted frames.",
    ],
    "outage": [
        "Tessellate was down for most of the morning and the status page said nothing.",
        "The boards are painfully slow today, every click takes seconds and the latency is awful.",
        "We kept getting 503 errors and timeouts during the quarterly planning workshop.",
        "Performance degrades badly once a board has more than a thousand objects.",
    ],
    "security": [
        "I reported an XSS vulnerability in the embed widget through their bug bounty.",
        "There is a CVE-2026-41873 advisory for the desktop client that allows privilege escalation.",
        "A password reset token was exposed in the referrer header, which is a real security problem.",
        "Somebody claims a breach leaked board contents of several enterprise customers.",
    ],
    "feature_request": [
        "Please add dark mode, my eyes would thank you during late sessions.",
        "It would be great if the tablet app supported offline editing.",
        "I wish there was an integration with our issue tracker so cards become tickets.",
        "Any plans to support for nested frames? That is the one missing feature for us.",
    ],
    "usability": [
        "The new toolbar is confusing and hard to find anything in.",
        "Onboarding new colleagues is clunky; the learning curve is steeper than it should be.",
        "Getting a template ready takes too many clicks and the user interface feels cluttered.",
    ],
    "pricing": [
        "The price increase on the pro plan is hard to justify for a small studio.",
        "Per seat pricing makes it expensive once the whole team joins.",
        "We were charged for seats we never used, and billing support took a week to answer.",
        "The free tier is generous, but the subscription costs add up quickly.",
    ],
    "account": [
        "I got locked out of my account after enabling 2FA and the reset link never arrives.",
        "SSO login fails for half of our team since Monday.",
        "The verification email lands in spam and I can't access the workspace.",
    ],
    "order": [
        "I was charged twice this month and want a refund for the second payment.",
        "I asked to cancel my subscription three weeks ago and still have no receipt.",
        "The hardware kit order has not shipped, and the delivery date keeps moving.",
    ],
    "how_to": [
        "How do I export a board to PDF with the layers kept separate?",
        "Is there a way to lock a frame so that workshop guests cannot move it?",
        "Does anyone know how to share a board with people outside the company?",
        "Any tips for running a retrospective with forty people on one board?",
    ],
    "praise": [
        "I love how fast the infinite canvas feels on the new laptops.",
        "The templates are amazing and I recommend Tessellate to every facilitator I meet.",
        "Kudos to the team, the latest release is a game changer for remote workshops.",
        "Honestly the best tool we have adopted this year; impressed by the attention to detail.",
    ],
    "competitor": [
        "We switched from Miro last spring and have not looked back.",
        "Compared to Mural, the sticky note handling is much better than I expected.",
        "A colleague keeps asking whether FigJam is a cheaper alternative to Tessellate.",
    ],
    "press": [
        "The CEO gave a long interview to a journalist about the company's next steps.",
        "Tessellate announced a series B funding round at the conference keynote.",
        "There is an article on TechCrunch covering the announcement in detail.",
    ],
    "crisis": [
        "The way they handled the data incident is unacceptable and feels like a cover-up.",
        "A class action lawsuit over misleading pricing claims was filed this week.",
        "People are calling for a boycott after the layoffs announcement.",
    ],
    "partnership": [
        "They announced a partnership with a large reseller for the European market.",
        "The sponsorship of the design conference was a nice collaboration with the local community.",
    ],
    "hiring": [
        "Tessellate is hiring engineers for remote work, and the interview process is refreshingly short.",
        "Glassdoor reviews from employees describe a friendly culture.",
    ],
    "research": [
        "Their engineering blog has a technical deep dive into the CRDT sync engine.",
        "The open source release of the rendering algorithm comes with a benchmark and a paper.",
    ],
}

# Sentences with no taxonomy term: context, anecdotes, asides.
FILLER = [
    "We use the boards with a distributed group of twelve people across three time zones.",
    "Our office moved to a new building in the spring, so the workshops went hybrid.",
    "The planning sessions usually run on Tuesdays and Thursdays after the stand-up.",
    "My colleague Ana drew most of the diagrams for the onboarding wiki.",
    "We keep one board per client project and archive it when the project ends.",
    "The tablet sits next to the big screen in the meeting room and gets passed around.",
    "Most of the sketches end up in the weekly notes that go out on Friday.",
    "It runs in the browser on the old laptops too, which matters for the volunteers.",
    "Last month we ran the quarterly planning entirely on a single canvas.",
    "The facilitators prepare the frames the evening before each session.",
    "Our design team has been sketching user journeys there for about two years.",
    "I teach a small class on visual thinking and the students pick it up quickly.",
    "We tried paper and sticky walls for a while before moving everything online.",
    "The marketing folks mostly use it for campaign mood boards and calendars.",
    "A typical board of ours has a few hundred notes, some images and a couple of embedded videos.",
    "On Fridays we clean up the boards and move finished items into the archive frame.",
    "The workshop started at nine and wrapped up a little after lunch.",
    "Twenty people joined from four offices, plus a few contractors from home.",
    "We print the final board as a poster for the team room, which people seem to like.",
    "I wrote this up mostly as notes for myself, but maybe it helps someone else.",
]

GERMAN = [
    "Wir nutzen das Werkzeug seit einem Jahr für die Planung mit dem ganzen Team.",
    "Die neue Version ist schneller, aber die Symbolleiste ist für mich nicht intuitiv.",
    "Ich habe es mit den Kollegen im Büro getestet und es war ein guter Tag.",
]
FRENCH = [
    "Nous utilisons cet outil pour les ateliers avec les clients depuis le printemps.",
    "La nouvelle version est plus rapide, mais il manque encore le mode sombre pour nous.",
    "Je ne suis pas convaincu que le prix soit justifié pour une petite équipe.",
]

TITLES = [
    "Notes from our planning workshop",
    "A few thoughts on Tessellate after six months",
    "Tessellate, again",
    "What went wrong in this week's retro",
    "Quick question about Tessellate boards",
    "Why our studio runs on Tessellate",
    "Tessellate vs the sticky wall",
    "Re: the new Tessellate release",
    "Small things that bother me in Tessellate",
    "Field report: remote workshops in 2026",
]
AUTHORS = ["Dana Whitfield", "Kofi Mensah", "Lena Vogel", "Ravi Iyer", "Maren Holt", "Tomás Ortega"]
SOURCES = 40


@dataclass(frozen=True)
class Generated:
    """A mention ready to publish: its key and the encoded `mentions.raw` message."""

    key: str
    message: OutMessage
    chars: int


def mention_text(rng: random.Random) -> str:
    """300-1,500 characters: one to four signal sentences among filler, sometimes another language."""
    target = rng.randint(MIN_CHARS, MAX_CHARS)
    concerns = rng.sample(sorted(SIGNAL), k=rng.choice((0, 1, 1, 1, 2, 2, 3)))
    signal = [rng.choice(SIGNAL[c]) for c in concerns]
    foreign = rng.random()
    pool = GERMAN if foreign < 0.05 else FRENCH if foreign < 0.08 else FILLER
    parts: list[str] = []
    size = 0
    while size < target:
        if signal and (rng.random() < 0.35 or size > target * 0.6):
            sentence = signal.pop()
        else:
            sentence = rng.choice(pool)
        parts.append(sentence)
        size += len(sentence) + 1
    text = " ".join(parts)
    if len(text) > MAX_CHARS:
        text = text[: text.rfind(" ", 0, MAX_CHARS)]
    return text


def generate(n: int, *, run_id: str, seed: int = 20261126, topic: str) -> list[Generated]:
    """`n` MentionIngested events for `topic`, encoded exactly as ingest publishes them."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    ingested = datetime.now(UTC)
    out: list[Generated] = []
    for i in range(n):
        source = rng.randrange(SOURCES)
        source_id = f"bench-src-{source:02d}"
        guid = f"{run_id}-{i}"
        is_comment = rng.random() < 0.4
        text = mention_text(rng)
        mention = Mention(
            id=mention_id(source_id, guid),
            source_id=source_id,
            source_name=f"Bench blog {source:02d}",
            kind=MentionKind.COMMENT if is_comment else MentionKind.POST,
            url=f"https://blog{source:02d}.example.net/{run_id}/{i}",
            title="" if is_comment else rng.choice(TITLES),
            text=text,
            author=rng.choice(AUTHORS),
            published_at=start + timedelta(seconds=i),
            in_reply_to=f"https://blog{source:02d}.example.net/{run_id}/{i // 7}" if is_comment else None,
            influence=1 + source % 3,
        )
        event = MentionIngested(mention=mention, ingested_at=ingested)
        message = encode(topic=topic, key=mention.id, event=event, source="/mention-router/bench")
        out.append(Generated(key=mention.id, message=message, chars=len(text)))
    return out
