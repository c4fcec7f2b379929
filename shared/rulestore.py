"""Routing rule sets in the database: versioned, validated, activated atomically with an audit trail.

The first active set is seeded from the YAML file (`MR_ROUTING_FILE`); after that the database is the truth
and the API edits it. Every router replica polls the active version (`RuleHolder.refresh`) and swaps rule
sets between batches, without a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.apikeys import Actor, as_actor
from shared.db import RuleAuditRow, RuleSetRow, insert_ignore
from shared.errors import ConfigError
from shared.events import utcnow
from shared.routing import RuleSet

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key: activations are serialised, so the audit's "previous version" is exact.
_ACTIVATION_LOCK = 0x6D725F72756C6573  # "mr_rules"


class UnknownVersion(LookupError):
    pass


@dataclass(frozen=True)
class Activation:
    version: int
    previous_version: int | None
    actor: Actor
    at: datetime


def load_rules_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read routing rules {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"routing rules {path} are not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with `rules` and `fallback`")
    return data


def compile_rules(
    body: dict[str, Any], *, known_topics: Iterable[str] | None, version: int, where: str = "rules"
) -> RuleSet:
    """Validate `body` (raises ConfigError pointing at the rule) and compile it as version `version`."""
    rules = RuleSet.from_dict(body, known_topics=known_topics, where=where)
    rules.version = str(version)
    return rules


def canonical(body: dict[str, Any], *, known_topics: Iterable[str] | None) -> dict[str, Any]:
    """The body as stored: validated, in the rule engine's canonical form, without a version of its own
    (the database numbers versions)."""
    rules = RuleSet.from_dict(body, known_topics=known_topics)
    to_dict = getattr(rules, "to_dict", None)
    out: dict[str, Any] = dict(to_dict()) if callable(to_dict) else dict(body)
    out.pop("version", None)
    return out


async def active_version(session: AsyncSession) -> int | None:
    version: int | None = await session.scalar(select(RuleSetRow.version).where(RuleSetRow.active.is_(True)))
    return version


async def active_rule_set(session: AsyncSession) -> RuleSetRow | None:
    return await session.scalar(select(RuleSetRow).where(RuleSetRow.active.is_(True)))


async def seed(
    sessions: async_sessionmaker[AsyncSession],
    path: Path,
    *,
    known_topics: Iterable[str] | None,
    actor: str = "seed",
) -> int:
    """Make the YAML file version 1 and active when the database has no rule set yet; return the active
    version. Safe when several replicas start at once (the insert ignores a conflict)."""
    topics = list(known_topics) if known_topics is not None else None
    async with sessions() as session, session.begin():
        current = await active_version(session)
        if current is not None:
            return current
        any_version = await session.scalar(select(func.max(RuleSetRow.version)))
        if any_version is not None:
            raise ConfigError(
                "the database has routing rule sets but none is active; activate one through the API"
            )
        body = canonical(load_rules_file(path), known_topics=topics)
        now = utcnow()
        await insert_ignore(
            session,
            RuleSetRow,
            [
                {
                    "version": 1,
                    "body": body,
                    "comment": f"seeded from {path.name}",
                    "created_at": now,
                    "created_by": actor,
                    "active": True,
                    "activated_at": now,
                    "activated_by": actor,
                }
            ],
            keys=["version"],
        )
    async with sessions() as session:
        version = await active_version(session)
        if version is None:  # pragma: no cover - only if someone deactivated everything in between
            raise ConfigError("no active routing rule set after seeding")
        return version


async def create_version(
    session: AsyncSession,
    body: dict[str, Any],
    *,
    actor: Actor | str,
    comment: str = "",
    known_topics: Iterable[str] | None,
) -> RuleSetRow:
    """Store a validated candidate as the next version (inactive). ConfigError when it does not validate."""
    actor = as_actor(actor)
    stored = canonical(body, known_topics=known_topics)
    await _lock(session)
    latest = await session.scalar(select(func.max(RuleSetRow.version)))
    now = utcnow()
    row = RuleSetRow(
        version=(latest or 0) + 1,
        body=stored,
        comment=comment,
        created_at=now,
        created_by=actor.name,
        created_by_key_id=actor.key_id,
        created_by_key_name=actor.key_name,
        active=False,
    )
    session.add(row)
    session.add(_audit("created", row.version, None, actor, now))
    await session.flush()
    return row


async def activate(session: AsyncSession, version: int, *, actor: Actor | str) -> Activation:
    """Make `version` the active rule set in one transaction, audited; every router picks it up."""
    actor = as_actor(actor)
    await _lock(session)
    target = await session.get(RuleSetRow, version)
    if target is None:
        raise UnknownVersion(version)
    previous = await active_version(session)
    now = utcnow()
    if previous != version:
        await session.execute(update(RuleSetRow).where(RuleSetRow.active.is_(True)).values(active=False))
        await session.execute(
            update(RuleSetRow)
            .where(RuleSetRow.version == version)
            .values(
                active=True,
                activated_at=now,
                activated_by=actor.name,
                activated_by_key_id=actor.key_id,
                activated_by_key_name=actor.key_name,
            )
        )
    session.add(_audit("activated", version, previous, actor, now))
    await session.flush()
    return Activation(version=version, previous_version=previous, actor=actor, at=now)


def _audit(action: str, version: int, previous: int | None, actor: Actor, now: datetime) -> RuleAuditRow:
    return RuleAuditRow(
        action=action,
        version=version,
        previous_version=previous,
        actor=actor.name,
        actor_key_id=actor.key_id,
        actor_key_name=actor.key_name,
        at=now,
    )


async def _lock(session: AsyncSession) -> None:
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ACTIVATION_LOCK})


class RuleHolder:
    """The rule set a router uses, swapped when another version becomes active."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        known_topics: Iterable[str] | None,
        initial: RuleSet | None = None,
    ) -> None:
        self._sessions = sessions
        self._topics = list(known_topics) if known_topics is not None else None
        self.rules: RuleSet | None = initial
        self.version: int | None = int(initial.version) if initial is not None else None
        self._refused: int | None = None

    async def refresh(self) -> bool:
        """Load the active version if it changed; True when it did. A stored set that no longer validates
        (say the taxonomy lost a topic) is refused with an error in the log; the current set stays."""
        async with self._sessions() as session:
            row = await active_rule_set(session)
        if row is None or row.version in (self.version, self._refused):
            return False
        try:
            rules = compile_rules(
                row.body, known_topics=self._topics, version=row.version, where=f"rule set v{row.version}"
            )
        except ConfigError as exc:
            self._refused = row.version
            log.error(
                "routing rule set v%s is active but invalid, keeping v%s: %s", row.version, self.version, exc
            )
            return False
        if self.version is not None:
            log.info("routing rules: v%s → v%s", self.version, row.version)
        self.rules, self.version = rules, row.version
        return True
