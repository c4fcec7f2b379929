"""Sources: register, change, disable, delete and list feeds, with their health."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy.exc import IntegrityError

from services.api.auth import AdminDep, PrincipalDep
from services.api.deps import SessionDep, SettingsDep
from services.api.queries import sources as queries
from services.api.schemas import SourceCreate, SourceList, SourcePublic, SourceUpdate
from shared.db import SourceRow
from shared.errors import ConfigError
from shared.events import utcnow
from shared.netguard import NetPolicy, UnsafeURL, check_url
from shared.settings import Settings
from shared.sources import SourceSpec, add_source, check_filter

sources = APIRouter(prefix="/v1/sources", tags=["sources"])


async def _checked(settings: Settings, url: str, query: str | None) -> None:
    """422 for a URL the SSRF guard refuses or a filter that does not parse."""
    try:
        await check_url(url, NetPolicy.from_setting(settings.ingest_allowed_networks))
        if query is not None:
            check_filter(query)
    except (UnsafeURL, ConfigError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


@sources.post(
    "",
    response_model=SourcePublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"description": "A source with this URL exists"},
        422: {"description": "Refused URL or filter"},
    },
)
async def create_source(
    session: SessionDep, settings: SettingsDep, admin: AdminDep, body: SourceCreate
) -> SourcePublic:
    """Register a feed or comment feed (or an HTML page that announces one); ingest picks it up at once."""
    await _checked(settings, str(body.url), body.filter)
    spec = SourceSpec(
        name=body.name,
        url=str(body.url),
        kind=body.kind,
        influence=body.influence,
        poll_interval_s=body.poll_interval_seconds,
        language=body.language,
        enabled=body.enabled,
        filter_query=body.filter,
        backfill=body.backfill,
    )
    try:
        row, created = await add_source(session, spec)
        await session.commit()
    except IntegrityError:
        created = False
    if not created:
        raise HTTPException(status.HTTP_409_CONFLICT, f"a source with URL {spec.url} already exists")
    return SourcePublic.model_validate(row)


@sources.get("", response_model=SourceList)
async def list_sources(
    session: SessionDep, principal: PrincipalDep, include_discovered: bool = True
) -> SourceList:
    """Every source with its health: last poll, last success, last error, failures, items seen.
    Per-post comment feeds that ingest discovered have a `parent_id`."""
    rows = await queries.all_sources(session, include_discovered=include_discovered)
    return SourceList(items=[SourcePublic.model_validate(r) for r in rows])


async def _get(session: SessionDep, source_id: str) -> SourceRow:
    row = await session.get(SourceRow, source_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"source {source_id!r} not found")
    return row


@sources.get("/{source_id}", response_model=SourcePublic, responses={404: {"description": "No such source"}})
async def get_source(session: SessionDep, principal: PrincipalDep, source_id: str) -> SourcePublic:
    return SourcePublic.model_validate(await _get(session, source_id))


@sources.patch(
    "/{source_id}",
    response_model=SourcePublic,
    responses={404: {"description": "No such source"}, 409: {"description": "Another source has this URL"}},
)
async def update_source(
    session: SessionDep, settings: SettingsDep, admin: AdminDep, source_id: str, body: SourceUpdate
) -> SourcePublic:
    """Change a source: send only the fields to change (`{"enabled": false}` disables it)."""
    row = await _get(session, source_id)
    fields = body.model_fields_set
    if "url" in fields and body.url is not None:
        await _checked(settings, str(body.url), None)
        row.url = str(body.url)
        # A new address starts afresh: no conditional-GET validators from the old one.
        row.etag = row.last_modified = None
    if "filter" in fields:
        if body.filter is not None:
            _check_filter_only(body.filter)
        row.filter_query = body.filter
    for field, column in (
        ("name", "name"),
        ("influence", "influence"),
        ("poll_interval_seconds", "poll_interval_s"),
        ("enabled", "enabled"),
        ("backfill", "backfill"),
    ):
        if field in fields and getattr(body, field) is not None:
            setattr(row, column, getattr(body, field))
    if "language" in fields:
        row.language = body.language
    if "poll_interval_seconds" in fields or "enabled" in fields:
        row.next_poll_at = None  # poll on the new schedule from now
    row.updated_at = utcnow()
    try:
        await session.commit()
    except IntegrityError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, "another source has this URL") from exc
    return SourcePublic.model_validate(row)


def _check_filter_only(query: str) -> None:
    try:
        check_filter(query)
    except ConfigError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


@sources.delete(
    "/{source_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"description": "No such source"}}
)
async def delete_source(session: SessionDep, admin: AdminDep, source_id: str) -> Response:
    """Stop polling a source and forget it (and the comment feeds discovered from it). Its mentions stay."""
    await _get(session, source_id)
    await queries.delete_source(session, source_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
