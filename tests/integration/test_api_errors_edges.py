"""Bad input at the API's edges gets a problem+json 4xx, never a 500; an export never ends as if complete.

Through a real uvicorn server over a real PostgreSQL (reached through a TCP proxy that a test can cut), with
mentions routed by the router's own code. Table-driven, one table per class of input; where the OpenAPI
document can list the members of a class (string inputs, date-time inputs, typed body fields, paths and
their methods), the table is built from it, so that an input added later is covered without a new line:

- text PostgreSQL cannot store (NUL, a lone surrogate) in any path or query parameter or body string;
- date-times: only RFC 3339 with a zone, and none that leaves the range once converted to UTC;
- JSON types as documented (no `false` for an integer, no `"1"` for a number, no `0` for a boolean);
- forged cursors;
- exports: a query that fails answers its problem before any byte; a failure mid-stream ends the body
  with an error line and aborts it, so that clients report it;
- a chunked body over the size limit: 413; OPTIONS and 405 name every documented method.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.infra import create_database, drop_database
from devsupport.factories import classified_event
from devsupport.processes import free_port
from devsupport.tcpproxy import TcpProxy
from services.api.app import create_app
from services.api.exports import EXPORT_PAGE_ROWS
from services.api.methods import AllowedMethods
from services.router.service import RouterService
from shared.bus import MemoryBus, Record
from shared.bus.codec import encode
from shared.db import create_engine, migrate, session_factory
from shared.events import MentionClassified
from shared.routing import RuleSet
from shared.settings import BusKind, Settings

pytestmark = pytest.mark.postgres

# More mentions than one export page, each with enough text that the first page alone fills the socket
# buffers of a client that stops reading (the export then waits before reading its second page).
N_MENTIONS = EXPORT_PAGE_ROWS + 20
FILLER_WORDS = 1_200
MAX_BODY = 64 * 1024


@dataclass
class Env:
    client: httpx.AsyncClient
    settings: Settings
    database: str  # the real server's URL (the API goes through `proxy`)
    proxy: TcpProxy
    doc: dict[str, Any]
    mention_id: str
    assignment_id: int


def _event(i: int) -> MentionClassified:
    """A routed mention whose text is long and its own (near-duplicates are stored too, but unrouted)."""
    event = classified_event(i)
    filler = " ".join(secrets.token_hex(4) for _ in range(FILLER_WORDS))
    mention = event.mention.model_copy(update={"text": f"{event.mention.text} {filler}"})
    return event.model_copy(update={"mention": mention})


@pytest.fixture(scope="module")
async def env(postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    name = f"mr_test_edges_{uuid.uuid4().hex[:8]}"
    database = await create_database(postgres_server_url, name)
    await migrate(database)
    taxonomy = tmp_path_factory.mktemp("edges") / "taxonomy.yaml"
    shutil.copy(Settings().taxonomy_file, taxonomy)
    server_url = make_url(database)
    proxy = TcpProxy(server_url.host or "127.0.0.1", server_url.port or 5432)
    await proxy.start()
    through_proxy = server_url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = Settings().model_copy(
        update={
            "database_url": through_proxy,
            "taxonomy_file": taxonomy,
            "bus": BusKind.MEMORY,
            "api_max_body_bytes": MAX_BODY,
            "webhook_worker": False,
            "webhook_allow_http": True,
            "webhook_allowed_networks": "127.0.0.1",
            "ingest_allowed_networks": "127.0.0.1",
        }
    )
    engine = create_engine(database)
    router = RouterService(
        settings=settings,
        bus=MemoryBus(),
        sessions=session_factory(engine),
        rules=RuleSet.from_file(settings.routing_file),
    )
    await router.load_rules()
    events = [_event(i) for i in range(N_MENTIONS)]
    messages = [encode(topic="t", key=e.mention.id, event=e, source="/t") for e in events]
    await router.handle(
        [Record(topic="t", partition=0, offset=n, key=m.key, value=m.value) for n, m in enumerate(messages)]
    )
    async with engine.connect() as conn:
        assignment_id = (await conn.execute(text("SELECT min(id) FROM assignments"))).scalar_one()
    await engine.dispose()

    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), f"the server did not start: {task.exception()!r}"
        await asyncio.sleep(0.02)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            doc = (await client.get("/openapi.json")).json()
            yield Env(client, settings, database, proxy, doc, events[0].mention.id, assignment_id)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        await proxy.cut()
        await drop_database(postgres_server_url, name)


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.text}"
    )
    assert response.headers["content-type"] == "application/problem+json", response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status and {"type", "title", "detail"} <= body.keys()
    return body


def _locations(response: httpx.Response) -> set[str]:
    """Where the 422's errors are; a field of a body that may be one object or an array of them
    (POST /v1/mentions) is named as in a body of one object (`body.MentionPush.x` -> `body.x`)."""
    out = set()
    for e in _problem(response, 422).get("errors", []):
        parts = e["location"].split(".")
        if parts[:2] == ["body", "MentionPush"]:
            parts = ["body", *parts[2:]]
        out.add(".".join(parts))
    return out


def _refused(response: httpx.Response, location: str) -> bool:
    """The 422 names `location` (or a member of its union, `body.version.int`)."""
    return any(loc == location or loc.startswith(location + ".") for loc in _locations(response))


# --- what the document says ----------------------------------------------------------------------------


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _alternatives(doc: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _resolve(doc, schema)
    if "anyOf" in schema:
        return [s for alt in schema["anyOf"] for s in _alternatives(doc, alt)]
    return [schema]


def _types(doc: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    return {str(s.get("type")) for s in _alternatives(doc, schema)} - {"null"}


def _body_objects(doc: dict[str, Any], operation: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas a JSON body may be (an array of them counts as the object)."""
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is None:
        return []
    objects = []
    for schema in _alternatives(doc, body["schema"]):
        if schema.get("type") == "array":
            schema = _resolve(doc, schema["items"])
        if "properties" in schema:
            objects.append(schema)
    return objects


def _fill(path: str, value: str = "1", only: str | None = None) -> str:
    """The path with its parameters filled in (`only`: that one with `value`, the others with "1")."""
    out = path
    for part in path.split("/"):
        if part.startswith("{"):
            name = part.strip("{}")
            out = out.replace(part, value if only in (None, name) else "1")
    return out


# --- text PostgreSQL cannot store -----------------------------------------------------------------------

NUL = "a\x00b"

# The requests of the issue, as they answered 500 before: each must now be a 422 naming the input.
UNSTORABLE_EXAMPLES = [
    *(("GET", f"/v1/mentions?{name}=a%00b", None, f"query.{name}") for name in ("q", "author", "source")),
    *(("GET", f"/v1/mentions?{name}=a%00b", None, f"query.{name}") for name in ("topic", "assignee")),
    ("GET", "/v1/mentions?language=en%00", None, "query.language"),
    ("GET", "/v1/mentions/export?q=a%00b", None, "query.q"),
    ("GET", "/v1/alerts?topic=a%00b", None, "query.topic"),
    ("GET", "/v1/mentions/a%00b", None, "path.mention_id"),
    ("GET", "/v1/sources/a%00b", None, "path.source_id"),
    ("DELETE", "/v1/keys/a%00b", None, "path.key_id"),
    ("POST", "/v1/keys", {"name": NUL, "scopes": ["admin"]}, "body.name"),
    ("POST", "/v1/sources", {"name": NUL, "url": "http://127.0.0.1:9/feed"}, "body.name"),
    ("POST", "/v1/sources", {"name": "a", "url": "http://127.0.0.1:9/f", "filter": NUL}, "body.filter"),
    ("POST", "/v1/routing-rules/test", {"mention_id": NUL}, "body.mention_id"),
    ("POST", "/v1/routing-rules/test", {"mention": {"title": NUL}}, "body.mention.title"),
    ("POST", "/v1/mentions", {"source": "x", "url": "https://a.example/1", "text": NUL}, "body.text"),
    ("POST", "/v1/mentions", [{"source": "x", "url": "https://a.example/1", "text": NUL}], "body.0.text"),
    ("PUT", "/v1/taxonomy", {"version": 2, "topics": {NUL: {}}}, f"body.topics.{NUL}"),
]


@pytest.mark.parametrize(("method", "url", "body", "location"), UNSTORABLE_EXAMPLES)
async def test_nul_characters_are_refused_with_422(
    env: Env, method: str, url: str, body: Any, location: str
) -> None:
    r = await env.client.request(method, url, json=body)
    assert _locations(r) == {location}
    assert "cannot be stored" in r.json()["detail"]


async def test_lone_surrogates_are_refused_with_422(env: Env) -> None:
    # A JSON escape can name half a surrogate pair, which no UTF-8 (so no PostgreSQL text) can hold.
    raw = b'{"name": "a\\ud800b", "scopes": ["admin"]}'
    r = await env.client.post("/v1/keys", content=raw, headers={"content-type": "application/json"})
    assert _locations(r) == {"body.name"}
    assert "surrogate" in r.json()["detail"]


async def test_every_string_input_of_the_document_refuses_nul(env: Env) -> None:
    """Every path and query parameter and every body field of every operation, from the document."""
    tried = 0
    for method, path, operation in _operations(env.doc):
        for parameter in operation.get("parameters", []):
            where, name = parameter["in"], parameter["name"]
            if where == "path":
                url = _fill(path, "a%00b", only=name)
                r = await env.client.request(method, url)
            elif where == "query":
                r = await env.client.request(method, _fill(path), params={name: NUL})
            else:
                continue  # headers: HTTP itself cannot carry a NUL
            assert _locations(r) == {f"{where}.{name}"}, f"{method} {path} {where} {name}"
            tried += 1
        for schema in _body_objects(env.doc, operation):
            for field in schema["properties"]:
                for body, location in (
                    ({field: NUL}, f"body.{field}"),
                    ({field: {"k": NUL}}, f"body.{field}.k"),
                ):
                    r = await env.client.request(method, _fill(path), json=body)
                    assert _locations(r) == {location}, f"{method} {path} {location}"
                    tried += 1
    assert tried > 150


# --- date-times -----------------------------------------------------------------------------------------

# Every date-time a request can carry: (method, path, where, name). Checked against the document below.
DATETIME_INPUTS = [
    ("GET", "/v1/mentions", "query", "since"),
    ("GET", "/v1/mentions", "query", "until"),
    ("GET", "/v1/mentions/export", "query", "since"),
    ("GET", "/v1/mentions/export", "query", "until"),
    ("GET", "/v1/stats/mentions", "query", "from"),
    ("GET", "/v1/stats/mentions", "query", "to"),
    ("GET", "/v1/alerts", "query", "since"),
    ("POST", "/v1/mentions", "body", "published_at"),
    ("POST", "/v1/keys", "body", "expires_at"),
]
BAD_DATETIMES: list[Any] = [
    "9999-12-31T23:59:59-23:59",  # year 10000 in UTC
    "0001-01-01T00:00:00+23:59",  # year 0 in UTC
    "0.5",
    "1700000000",
    "2026-01-31",
    "2026-01-31T09:30:00",  # no zone
    "2026-02-30T09:30:00Z",
    "next tuesday",
]


def _good_datetime() -> str:
    """Two hours ago, in another zone (a stats window must stay short)."""
    return (datetime.now(UTC) - timedelta(hours=2)).astimezone(timezone(timedelta(hours=1))).isoformat()


def _datetime_request(method: str, path: str, where: str, name: str, value: Any) -> dict[str, Any]:
    if where == "query":
        return {"params": {name: value}}
    base: dict[str, Any] = {
        "/v1/mentions": {"source": "edge", "url": f"https://a.example/{uuid.uuid4().hex}", "text": "hello"},
        "/v1/keys": {"name": "edge", "scopes": ["read:support"]},
    }[path]
    return {"json": {**base, name: value}}


async def test_the_table_names_every_datetime_input_of_the_document(env: Env) -> None:
    found = set()
    for method, path, operation in _operations(env.doc):
        for parameter in operation.get("parameters", []):
            if any(s.get("format") == "date-time" for s in _alternatives(env.doc, parameter["schema"])):
                found.add((method, path, parameter["in"], parameter["name"]))
        for schema in _body_objects(env.doc, operation):
            for name, field in schema["properties"].items():
                if any(s.get("format") == "date-time" for s in _alternatives(env.doc, field)):
                    found.add((method, path, "body", name))
    assert found == set(DATETIME_INPUTS)


@pytest.mark.parametrize(("method", "path", "where", "name"), DATETIME_INPUTS)
async def test_datetimes_must_be_rfc3339_with_a_zone_and_in_range(
    env: Env, method: str, path: str, where: str, name: str
) -> None:
    values = BAD_DATETIMES + ([0.5, 1700000000, True] if where == "body" else [])
    for value in values:
        r = await env.client.request(method, path, **_datetime_request(method, path, where, name, value))
        assert _refused(r, f"{where}.{name}"), f"{name}={value!r} was taken: {r.text}"
    ok = await env.client.request(
        method, path, **_datetime_request(method, path, where, name, _good_datetime())
    )
    assert ok.status_code < 300, ok.text


# --- JSON types -----------------------------------------------------------------------------------------

_WRONG: dict[str, list[Any]] = {
    "integer": [True, False, "1", 1.5],
    "number": [True, "1"],
    "boolean": [0, 1, "true"],
}


def _typed_fields(doc: dict[str, Any]) -> list[tuple[str, str, str, set[str]]]:
    """(method, path, field, its JSON types) for every body field that is a number or a boolean."""
    out = []
    for method, path, operation in _operations(doc):
        for schema in _body_objects(doc, operation):
            for name, field in schema["properties"].items():
                types = _types(doc, field)
                if types & set(_WRONG):
                    out.append((method, path, name, types))
    return out


async def test_body_fields_take_only_their_json_type(env: Env) -> None:
    fields = _typed_fields(env.doc)
    assert ("POST", "/v1/webhooks/{webhook_id}/rotate-secret", "previous_valid_for_s", {"integer"}) in fields
    for method, path, name, types in fields:
        wrong = [
            value
            for t in types & set(_WRONG)
            for value in _WRONG[t]
            if not (isinstance(value, str) and "string" in types)
            and not (isinstance(value, float) and "number" in types)
            and not (isinstance(value, int) and not isinstance(value, bool) and types & {"integer", "number"})
        ]
        for value in wrong:
            r = await env.client.request(method, _fill(path), json={name: value})
            assert _refused(r, f"body.{name}"), f"{method} {path}: {name}={value!r} was taken"
        if "integer" in types:
            # JSON has one number type: 3.0 is the integer 3 (JSON Schema says so too).
            r = await env.client.request(method, _fill(path), json={name: 1.0})
            if r.status_code == 422:
                assert not _refused(r, f"body.{name}"), f"{method} {path}: {name}=1.0 refused: {r.text}"


async def test_previous_valid_for_s_false_is_refused(env: Env) -> None:
    made = await env.client.post(
        "/v1/webhooks", json={"department": "support", "url": "http://127.0.0.1:9/hook"}
    )
    assert made.status_code == 201, made.text
    path = f"/v1/webhooks/{made.json()['id']}/rotate-secret"
    assert _locations(await env.client.post(path, json={"previous_valid_for_s": False})) == {
        "body.previous_valid_for_s"
    }
    assert (await env.client.post(path, json={"previous_valid_for_s": 60.0})).status_code == 200


# --- cursors --------------------------------------------------------------------------------------------


def _cursor(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED_CURSORS = [
    ("-routed_at", _cursor(["-routed_at", "2026-01-31T09:30:00", "x"])),  # no zone
    ("-routed_at", _cursor(["-routed_at", "9999-12-31T23:59:59-23:59", "x"])),  # overflows in UTC
    ("routed_at", _cursor(["routed_at", "0001-01-01T00:00:00+23:59", "x"])),
    ("-published_at", _cursor(["-published_at", 1700000000, "x"])),
    ("-routed_at", _cursor(["-routed_at", "2026-01-31T09:30:00Z", NUL])),  # NUL in the id
    ("-routed_at", _cursor(["-routed_at", "2026-01-31T09:30:00Z", "x" * 65])),
    ("-routed_at", _cursor(["-routed_at", "2026-01-31T09:30:00Z", 5])),
    ("-urgency", _cursor(["-urgency", int("9" * 400), "x"])),  # no float holds it
    ("-urgency", _cursor(["-urgency", True, "x"])),
    ("sentiment_score", _cursor(["sentiment_score", "0.5", "x"])),
    ("-urgency", _cursor(["-routed_at", 0.5, "x"])),  # another sort's cursor
    ("-routed_at", _cursor({"a": 1})),
    ("-routed_at", _cursor(b"\xff\xfe\xfd")),  # not UTF-8
    ("-routed_at", _cursor(b"[" * 700)),
    ("-routed_at", "!!!!"),
]


@pytest.mark.parametrize(("sort", "cursor"), FORGED_CURSORS)
async def test_forged_cursors_are_refused_with_422(env: Env, sort: str, cursor: str) -> None:
    r = await env.client.get("/v1/mentions", params={"sort": sort, "cursor": cursor})
    assert _problem(r, 422)["detail"].startswith("invalid cursor"), r.text


async def test_a_cursor_past_any_float_still_reads(env: Env) -> None:
    r = await env.client.get(
        "/v1/mentions", params={"sort": "-urgency", "cursor": _cursor(["-urgency", 1e308, "x"])}
    )
    assert r.status_code == 200, r.text


# --- exports --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["csv", "ndjson"])
async def test_an_export_whose_query_fails_answers_a_problem_not_an_empty_file(env: Env, format: str) -> None:
    await env.proxy.cut()  # the database goes away
    try:
        r = await env.client.get("/v1/mentions/export", params={"format": format})
    finally:
        await env.proxy.restore()
    body = _problem(r, 503)
    assert "database" in body["detail"] and r.headers["retry-after"]


async def _read_until_cut(chunks: AsyncIterator[bytes]) -> tuple[bytes, Exception | None]:
    """What arrives, and the error that ended it (None: it ended as a complete response)."""
    data = b""
    try:
        async for chunk in chunks:
            data += chunk
    except httpx.HTTPError as exc:
        return data, exc
    return data, None


async def test_a_csv_export_that_fails_mid_stream_ends_with_an_error_row_and_aborts(env: Env) -> None:
    # A stored row that the CSV writer cannot write (topics must be strings), on the second page.
    engine = create_engine(env.database)
    last = "SELECT id FROM mentions ORDER BY routed_at, id LIMIT 1"
    async with engine.begin() as conn:
        await conn.execute(text(f"UPDATE mentions SET topics = '[1.5]' WHERE id = ({last})"))
    try:
        async with env.client.stream("GET", "/v1/mentions/export", params={"format": "csv"}) as r:
            assert r.status_code == 200
            data, error = await _read_until_cut(r.aiter_raw())
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"UPDATE mentions SET topics = '[]' WHERE id = ({last})"))
        await engine.dispose()
    assert isinstance(error, httpx.RemoteProtocolError), error  # the client sees a broken response
    last_line = data.decode().rstrip("\r\n").rsplit("\r\n", 1)[-1]
    assert last_line.startswith("#error,") and "incomplete" in last_line and "incident" in last_line


async def test_an_ndjson_export_whose_database_goes_away_mid_stream_ends_with_an_error_and_aborts(
    env: Env,
) -> None:
    async with env.client.stream("GET", "/v1/mentions/export", params={"format": "ndjson"}) as r:
        assert r.status_code == 200
        chunks = r.aiter_raw()
        first = await anext(chunks)
        # The first page is more than the socket buffers hold: the export waits for the client to read
        # on before it queries its second page, and the database is gone by then.
        await asyncio.sleep(0.5)
        await env.proxy.cut()
        try:
            rest, error = await _read_until_cut(chunks)
        finally:
            await env.proxy.restore()
    assert isinstance(error, httpx.RemoteProtocolError), error
    lines = (first + rest).decode().splitlines()
    assert EXPORT_PAGE_ROWS <= len(lines) - 1 < N_MENTIONS
    trailer = json.loads(lines[-1])["error"]
    assert trailer["status"] == 500 and "incomplete" in trailer["detail"] and trailer["incident"]


async def test_a_complete_export_ends_cleanly(env: Env) -> None:
    r = await env.client.get("/v1/mentions/export", params={"format": "ndjson"})
    assert r.status_code == 200
    lines = r.text.splitlines()
    assert len(lines) == N_MENTIONS and "error" not in json.loads(lines[-1])


# --- body size ------------------------------------------------------------------------------------------

BODIES = [
    ("POST", "/v1/mentions"),
    ("POST", "/v1/keys"),
    ("PUT", "/v1/taxonomy"),
    ("POST", "/v1/routing-rules/test"),
    ("POST", "/v1/assignments/1/notes"),
]


@pytest.mark.parametrize(("method", "path"), BODIES)
@pytest.mark.parametrize("chunked", [True, False])
async def test_a_body_over_the_limit_is_413_chunked_or_not(
    env: Env, method: str, path: str, chunked: bool
) -> None:
    big = b'{"text": "' + b"x" * MAX_BODY + b'"}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    content: Any = chunks() if chunked else big
    r = await env.client.request(method, path, content=content, headers={"content-type": "application/json"})
    _problem(r, 413)
    assert str(MAX_BODY) in r.json()["detail"]


# --- methods --------------------------------------------------------------------------------------------


async def test_options_and_405_name_every_documented_method_of_a_path(env: Env) -> None:
    for path, item in env.doc["paths"].items():
        documented = {m.upper() for m in item}
        r = await env.client.options(_fill(path))
        assert r.status_code == 204, f"OPTIONS {path}: {r.status_code}"
        allow = {m.strip() for m in r.headers["allow"].split(",")}
        assert allow == documented | {"OPTIONS"}, path
        other = next(m for m in ("PUT", "PATCH", "DELETE", "POST", "GET") if m not in documented)
        refused = await env.client.request(other, _fill(path))
        _problem(refused, 405)
        assert {m.strip() for m in refused.headers["allow"].split(",")} == allow, f"{other} {path}"


# The routes the document leaves out: their own methods (Starlette adds HEAD to a GET route).
UNDOCUMENTED_ROUTES = [
    ("/openapi.json", {"GET", "HEAD", "OPTIONS"}),
    ("/docs", {"GET", "HEAD", "OPTIONS"}),
    ("/redoc", {"GET", "HEAD", "OPTIONS"}),
]


@pytest.mark.parametrize(("path", "allow"), UNDOCUMENTED_ROUTES)
async def test_options_and_405_on_the_routes_outside_the_document(
    env: Env, path: str, allow: set[str]
) -> None:
    assert path not in env.doc["paths"]
    r = await env.client.options(path)
    assert r.status_code == 204 and {m.strip() for m in r.headers["allow"].split(",")} == allow
    refused = await env.client.post(path)
    _problem(refused, 405)
    assert {m.strip() for m in refused.headers["allow"].split(",")} == allow


async def test_options_on_no_route_is_404(env: Env) -> None:
    _problem(await env.client.options("/v1/no-such-thing"), 404)


# A concrete path goes before a templated one that also matches it (OpenAPI's rule); equally specific
# ones add up. (path asked, the Allow expected)
SHADOWED = [
    ("/things/me", {"GET", "OPTIONS"}),  # not DELETE of /things/{thing_id}
    ("/things/t1", {"DELETE", "OPTIONS"}),
    ("/things/t1/parts/p1", {"GET", "PUT", "OPTIONS"}),
    ("/things/me/parts/p1", {"GET", "PUT", "OPTIONS"}),
    ("/things/t1/parts/all", {"POST", "OPTIONS"}),
    ("/things/t1/x/p1", {"GET", "PATCH", "OPTIONS"}),  # two templates, one parameter each: both
]


@pytest.mark.parametrize(("path", "allow"), SHADOWED)
async def test_allow_follows_the_most_specific_documented_path(path: str, allow: set[str]) -> None:
    app = FastAPI()
    app.get("/things/me")(lambda: None)
    app.delete("/things/{thing_id}")(lambda thing_id: None)
    app.get("/things/{thing_id}/parts/{part_id}")(lambda thing_id, part_id: None)
    app.put("/things/{thing_id}/parts/{part_id}")(lambda thing_id, part_id: None)
    app.post("/things/{thing_id}/parts/all")(lambda thing_id: None)
    app.get("/things/{thing_id}/x/p1")(lambda thing_id: None)
    app.patch("/things/t1/x/{part_id}")(lambda part_id: None)
    app.add_middleware(AllowedMethods)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        r = await client.options(path)
        assert r.status_code == 204 and {m.strip() for m in r.headers["allow"].split(",")} == allow
        other = next(m for m in ("DELETE", "POST", "PATCH") if m not in allow)
        refused = await client.request(other, path)
        assert refused.status_code == 405 and refused.headers["allow"] == r.headers["allow"]
