"""`GET /metrics`: the process's Prometheus metrics, plus the departments' queues read from the database.

The queue gauges are computed at scrape time with two GROUP BY queries (the assignments index on
(department, status) serves the first), so they are exact and cost nothing between scrapes. Every API
replica reports the same database-wide values: aggregate them with max(), not sum().
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select

from services.api.deps import SessionDep
from shared.db import AssignmentRow
from shared.events import utcnow
from shared.metrics import exposition
from shared.settings import DEPARTMENTS

# Statuses in which an assignment no longer waits for anyone; the others count against the SLA.
CLOSED_STATUSES: tuple[str, ...] = ("resolved", "closed", "dismissed")

metrics_router = APIRouter()


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics(session: SessionDep) -> Response:
    """Prometheus text format: pipeline counters of this process, queue sizes and SLA breaches."""
    registry = CollectorRegistry(auto_describe=False)
    queue = Gauge(
        "mr_queue_assignments",
        "Assignments per department and status, read from the database at scrape time.",
        ["department", "status"],
        registry=registry,
    )
    overdue = Gauge(
        "mr_sla_overdue_assignments",
        f"Open assignments (status not in {', '.join(CLOSED_STATUSES)}) past their SLA due time.",
        ["department"],
        registry=registry,
    )
    for department in DEPARTMENTS:
        queue.labels(department, "new")
        overdue.labels(department)
    rows = await session.execute(
        select(AssignmentRow.department, AssignmentRow.status, func.count()).group_by(
            AssignmentRow.department, AssignmentRow.status
        )
    )
    for department, status, n in rows:
        queue.labels(department, status).set(n)
    late = await session.execute(
        select(AssignmentRow.department, func.count())
        .where(AssignmentRow.status.not_in(CLOSED_STATUSES), AssignmentRow.sla_due_at < utcnow())
        .group_by(AssignmentRow.department)
    )
    for department, n in late:
        overdue.labels(department).set(n)
    return Response(exposition() + generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
