"""The SQL of the assignments: which department an assignment is in, its replies, and whether a mention
has an assignment in some departments (what makes it visible to a key of those departments)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ScalarResult, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import AssignmentRow, ReplyRow


async def department_of(session: AsyncSession, assignment_id: int, departments: Sequence[str]) -> str | None:
    """The assignment's department when it is one of `departments`; None otherwise, or without it."""
    return await session.scalar(
        select(AssignmentRow.department).where(
            AssignmentRow.id == assignment_id, AssignmentRow.department.in_(departments)
        )
    )


async def replies_to(session: AsyncSession, assignment_id: int) -> ScalarResult[ReplyRow]:
    """The replies recorded with the assignment, oldest first."""
    return await session.scalars(
        select(ReplyRow).where(ReplyRow.assignment_id == assignment_id).order_by(ReplyRow.id)
    )


async def assigned_in(session: AsyncSession, mention_id: str, departments: Sequence[str]) -> bool:
    """Whether the mention has an assignment in one of `departments`."""
    found = await session.scalar(
        select(AssignmentRow.id)
        .where(AssignmentRow.mention_id == mention_id, AssignmentRow.department.in_(departments))
        .limit(1)
    )
    return found is not None
