"""`GET /v1/mentions/export`: every mention the list's filters select, streamed as CSV or NDJSON."""

from __future__ import annotations

import csv
import io
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.auth import PrincipalDep
from services.api.deps import SessionDep, SettingsDep
from services.api.mention_filters import FiltersDep, Sort
from services.api.queries import mentions as queries
from services.api.schemas import json_bytes
from shared.events import utcnow

# Included by services/api/mentions.py in its router (prefix /v1), before the route of one mention
# (`export` is no mention id).
exports_api = APIRouter()
log = logging.getLogger(__name__)


class ExportFormat(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"


_CSV_COLUMNS = [
    "id",
    "routed_at",
    "published_at",
    "source_id",
    "source_name",
    "kind",
    "url",
    "title",
    "author",
    "sentiment",
    "sentiment_score",
    "intent",
    "urgency",
    "language",
    "topics",
    "departments",
    "statuses",
    "priorities",
    "text",
]


# Rows an export reads per query.
EXPORT_PAGE_ROWS = 500


class ExportAborted(RuntimeError):
    """An export failed after its response started: raised out of the body so that the server aborts the
    chunked response instead of ending it as if it were complete."""


def _export_line(format: ExportFormat, item: dict[str, Any]) -> bytes:
    return _csv_line(_csv_row(item)) if format is ExportFormat.CSV else json_bytes(item) + b"\n"


def _export_error(format: ExportFormat, sent: int, incident: str) -> bytes:
    detail = (
        f"the export failed after {sent} rows and is incomplete; quote incident {incident} when reporting it"
    )
    if format is ExportFormat.CSV:
        return _csv_line(["#error", detail])
    problem = {"type": "about:blank", "title": "Internal Server Error", "status": 500, "detail": detail}
    return json_bytes({"error": {**problem, "incident": incident}}) + b"\n"


@exports_api.get(
    "/mentions/export",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}, "application/x-ndjson": {}}, "description": "The rows, streamed"}
    },
)
async def export_mentions(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    f: FiltersDep,
    format: ExportFormat = ExportFormat.NDJSON,
    sort: Sort = Sort.ROUTED_DESC,
    limit: Annotated[
        int | None, Query(ge=1, description="At most this many rows (default: the setting).")
    ] = None,
) -> StreamingResponse:
    """Every mention the filters select, streamed as CSV or NDJSON (one mention per line, as in the
    list), read from the database page by page.

    The filters are checked and the first page is read before the response starts, so that a query
    that fails answers with its problem (422, 503, 500), never a 200 and an empty file. A failure after
    that ends the file with a line that says so (CSV: a row whose first field is `#error`; NDJSON: an
    object with an `error` member, a problem) and aborts the chunked response, which HTTP clients
    report as an incomplete body: a cut export never looks complete."""
    cap = min(limit or settings.api_export_max_rows, settings.api_export_max_rows)
    first, cursor = await queries.page(session, principal, f, sort, None, min(EXPORT_PAGE_ROWS, cap))
    head = [_csv_line(_CSV_COLUMNS)] if format is ExportFormat.CSV else []
    lines = head + [_export_line(format, item) for item in first]
    # The request's session closes when the route returns, before the body streams: the next pages are
    # read with a session of the generator's own.
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessions

    async def rows() -> AsyncIterator[bytes]:
        for line in lines:
            yield line
        sent, after = len(first), cursor
        try:
            async with factory() as own:
                while after is not None and sent < cap:
                    size = min(EXPORT_PAGE_ROWS, cap - sent)
                    items, after = await queries.page(own, principal, f, sort, after, size)
                    for item in items:
                        yield _export_line(format, item)
                        sent += 1
        except Exception as exc:
            incident = uuid.uuid4().hex[:12]
            log.error("export failed after %d rows (incident %s)", sent, incident, exc_info=exc)
            yield _export_error(format, sent, incident)
            raise ExportAborted(incident) from exc

    media = "text/csv; charset=utf-8" if format is ExportFormat.CSV else "application/x-ndjson"
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        rows(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="mentions-{stamp}.{format.value}"'},
    )


def _csv_line(values: Sequence[object]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue().encode()


def _csv_row(m: dict[str, Any]) -> list[object]:
    assignments = m["assignments"]
    return [
        m["id"],
        m["routed_at"].isoformat(),
        m["published_at"].isoformat(),
        m["source_id"],
        m["source_name"],
        m["kind"],
        m["url"],
        m["title"],
        m["author"],
        m["sentiment"],
        m["sentiment_score"],
        m["intent"],
        m["urgency"],
        m["language"],
        " ".join(m["topics"]),
        " ".join(a["department"] for a in assignments),
        " ".join(f"{a['department']}:{a['status']}" for a in assignments),
        " ".join(f"{a['department']}:{a['priority']}" for a in assignments),
        m["text"],
    ]
