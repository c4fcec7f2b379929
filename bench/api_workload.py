"""The API bench's workload: what the departments' tools ask for (the mix of lists, queue statistics and
details; the list templates) and the requests drawn from it, deterministic for a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

SCOPED_DEPARTMENT = "support"

# The mix: share of each class, and of each kind of list page.
MIX = {"list": 0.6, "detail": 0.3, "queues": 0.1}
PAGES = {"first": 0.5, "cursor": 0.35, "deep": 0.15}

# (name, key, query parameters, weight): what the departments' tools ask for.
LIST_TEMPLATES: list[tuple[str, str, dict[str, str], int]] = [
    ("newest", "admin", {}, 3),
    ("department", "admin", {"department": "pr"}, 2),
    ("department+status", "admin", {"department": "support", "status": "new"}, 2),
    ("status", "admin", {"status": "acknowledged"}, 1),
    ("overdue", "admin", {"department": "rnd", "overdue": "true"}, 1),
    # support's P1 (what its rules route as urgent); product's P1 are only escalations of old assignments,
    # the worst case, explained in the plans below but left out of the mix.
    ("priority", "admin", {"department": "support", "priority": "P1"}, 1),
    ("topic", "admin", {"topic": "security"}, 2),
    ("topic+sentiment", "admin", {"topic": "pricing", "sentiment": "negative"}, 1),
    ("scoped", "scoped", {}, 3),
    ("scoped+status", "scoped", {"status": "new"}, 2),
    ("scoped+topic", "scoped", {"topic": "bug"}, 1),
    ("q", "admin", {"q": "refund"}, 1),
    ("q phrase", "admin", {"q": '"dark mode" OR offline'}, 1),
    ("scoped+q", "scoped", {"q": "crashes"}, 1),
]
QUEUE_TEMPLATES: list[tuple[str, str, dict[str, str], int]] = [
    ("all departments", "admin", {}, 3),
    ("scoped", "scoped", {}, 2),
    ("24 h window", "admin", {"window_hours": "24"}, 1),
]


def weighted(rng: random.Random, choices: dict[str, float]) -> str:
    return rng.choices(list(choices), weights=list(choices.values()))[0]


@dataclass(frozen=True)
class Request:
    cls: str  # list | queues | detail
    kind: str  # e.g. list:first, list:cursor, list:deep, queues, detail
    template: str
    key: str  # admin | scoped
    path: str
    params: tuple[tuple[str, str], ...] = ()
    if_none_match: str | None = None  # a revalidation: the ETag of an earlier answer

    def headers(self, by_key: dict[str, dict[str, str]]) -> dict[str, str]:
        """The request's headers: its key's, and If-None-Match for a revalidation."""
        if self.if_none_match is None:
            return by_key[self.key]
        return {**by_key[self.key], "If-None-Match": self.if_none_match}


@dataclass
class Catalog:
    """What the requests are made of: cursors the API handed out, deep cursors, ids to look up."""

    cursors: dict[str, list[str]]  # list template -> cursors of pages 2..10
    deep: list[tuple[datetime, str]]  # (routed_at, id) anywhere in the range: deep pages
    admin_ids: list[str]
    scoped_ids: list[str]


def workload(n: int, catalog: Catalog, *, classes: dict[str, float], seed: int) -> list[Request]:
    """`n` requests drawn from the mix `classes`, deterministic for the seed."""
    from services.api.mention_filters import Sort
    from services.api.queries.mentions import encode_cursor

    rng = random.Random(seed)
    lists = [t for t in LIST_TEMPLATES]
    out: list[Request] = []
    for _ in range(n):
        cls = weighted(rng, classes)
        if cls == "detail":
            key = "scoped" if rng.random() < 0.3 else "admin"
            ids = catalog.scoped_ids if key == "scoped" else catalog.admin_ids
            out.append(Request("detail", "detail", key, key, f"/v1/mentions/{rng.choice(ids)}"))
        elif cls == "queues":
            name, key, params, _ = rng.choices(QUEUE_TEMPLATES, weights=[t[3] for t in QUEUE_TEMPLATES])[0]
            out.append(Request("queues", "queues", name, key, "/v1/queues", tuple(params.items())))
        else:
            name, key, params, _ = rng.choices(lists, weights=[t[3] for t in lists])[0]
            page = weighted(rng, PAGES)
            query = dict(params)
            if page == "cursor" and catalog.cursors.get(name):
                query["cursor"] = rng.choice(catalog.cursors[name])
            elif page == "deep" and catalog.deep:
                routed_at, mention_id = rng.choice(catalog.deep)
                query["cursor"] = encode_cursor(Sort.ROUTED_DESC, routed_at, mention_id)
            else:
                page = "first"
            out.append(Request("list", f"list:{page}", name, key, "/v1/mentions", tuple(query.items())))
    return out
