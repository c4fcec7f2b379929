"""The one way a mention is made from what a source says: ingest's feed entries and the API's pushed posts.

Both paths must give the same mention for the same post (its id, its time, its hash, its language), or a
post that arrives both ways is stored twice and routed twice.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from shared.classify.language import language_or_none
from shared.events import Mention, MentionKind, mention_id


def content_hash(title: str, text: str) -> str:
    """sha256 of the normalised title and text (exact duplicates across sources share it)."""
    return hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()


def new_mention(
    *,
    source_id: str,
    source_name: str,
    entry_key: str,
    kind: MentionKind,
    url: str,
    title: str,
    text: str,
    author: str,
    published_at: datetime | None,
    now: datetime,
    author_url: str = "",
    in_reply_to: str | None = None,
    language: str | None = None,
    influence: int = 1,
) -> Mention:
    """The mention a source's entry makes. `entry_key` is what the source knows it by (a guid, an external
    id, the canonical URL): with the source it makes the deterministic id."""
    return Mention(
        id=mention_id(source_id, entry_key),
        source_id=source_id,
        source_name=source_name,
        kind=kind,
        url=url,
        title=title,
        text=text,
        author=author,
        author_url=author_url,
        # No date, or one in the future (a broken clock or a lie): the time we first saw it is the honest
        # answer.
        published_at=now if published_at is None or published_at > now else published_at.astimezone(UTC),
        in_reply_to=in_reply_to,
        language_hint=language or language_or_none(f"{title}. {text}"),
        influence=max(1, min(3, influence)),
        content_hash=content_hash(title, text),
    )
