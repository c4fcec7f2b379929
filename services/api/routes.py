"""Health routes of the API (the v1 resources have their own modules)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import text

from services.api.deps import BusHolder, SessionDep
from services.api.schemas import Health

router = APIRouter()
v1 = APIRouter(prefix="/v1")


@router.get("/healthz", response_model=Health, tags=["health"])
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
async def readyz(request: Request, session: SessionDep, response: Response) -> Health:
    """The database and the message broker answer (503 and which one does not, otherwise)."""
    checks: dict[str, str] = {}
    try:
        await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure here means "not ready", reported as such
        checks["database"] = type(exc).__name__
    holder: BusHolder = request.app.state.bus
    try:
        bus = await asyncio.wait_for(holder.get(), 2.0)
        await bus.check()
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001 - as above
        checks["broker"] = type(exc).__name__
    if any(v != "ok" for v in checks.values()):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(status="unavailable", checks=checks)
    return Health(status="ok", checks=checks)
