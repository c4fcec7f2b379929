"""The SQL of the routing rules' routes: the stored versions, the audit trail, the mentions a replay runs
on, and the assignments whose outcomes the accuracy report counts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Row, ScalarResult, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import AssignmentRow, MentionRow, RuleAuditRow, RuleSetRow


async def versions(session: AsyncSession) -> ScalarResult[RuleSetRow]:
    """Every stored rule set, newest first."""
    return await session.scalars(select(RuleSetRow).order_by(RuleSetRow.version.desc()))


async def audit_log(session: AsyncSession, limit: int) -> ScalarResult[RuleAuditRow]:
    """The latest `limit` creations and activations, newest first."""
    return await session.scalars(select(RuleAuditRow).order_by(RuleAuditRow.id.desc()).limit(limit))


async def latest_mentions(session: AsyncSession, limit: int) -> ScalarResult[MentionRow]:
    """The `limit` mentions routed last (near-duplicates are not routed: left out), newest first."""
    return await session.scalars(
        select(MentionRow)
        .where(MentionRow.duplicate_of.is_(None))
        .order_by(MentionRow.routed_at.desc(), MentionRow.id.desc())
        .limit(limit)
    )


async def assignments_since(
    session: AsyncSession, since: datetime, departments: Sequence[str]
) -> Sequence[Row[str, str, list[str]]]:
    """(department, status, rules) of every assignment made in `departments` since `since`."""
    result = await session.execute(
        select(AssignmentRow.department, AssignmentRow.status, AssignmentRow.rules).where(
            AssignmentRow.created_at >= since, AssignmentRow.department.in_(departments)
        )
    )
    return result.all()
