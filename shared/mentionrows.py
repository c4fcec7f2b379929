"""The one mapping between a `Mention` (the event's content) and its row in the `mentions` table.

The router writes rows with `mention_column_lists` (`mention_columns`, one list per column); replays,
re-announcements and the API's dry runs read them back with `mention_from_row`. Every field of `Mention`
has a column of the same name, but the near-duplicate link, which the table calls `duplicate_of`
(`RENAMED`); tests/unit/test_mentionrows.py proves the round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.db import MentionRow
from shared.events import Mention

# Mention field → mentions column, where the two names differ.
RENAMED = {"near_duplicate_of": "duplicate_of"}
FIELDS = tuple(Mention.model_fields)
_COLUMN = {name: RENAMED.get(name, name) for name in FIELDS}


def mention_columns(mention: Mention) -> dict[str, Any]:
    """The mention's own fields as `mentions` columns (enums as their values), for an insert."""
    columns = {_COLUMN[name]: getattr(mention, name) for name in FIELDS}  # (no model_dump: hot path)
    columns["kind"] = mention.kind.value
    return columns


def mention_column_lists(mentions: Sequence[Mention]) -> dict[str, list[Any]]:
    """`mention_columns` of every mention, one list per column (the router's batch insert)."""
    fields = [m.__dict__ for m in mentions]  # a model's field values, read without a getattr each
    columns = {_COLUMN[name]: [f[name] for f in fields] for name in FIELDS}
    columns["kind"] = [kind.value for kind in columns["kind"]]
    return columns


def mention_from_row(row: MentionRow) -> Mention:
    """The mention as the router received it, rebuilt from its row."""
    return Mention.model_validate({name: getattr(row, _COLUMN[name]) for name in FIELDS})
