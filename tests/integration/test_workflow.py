"""The assignment workflow on a real PostgreSQL (and Kafka for the events): transitions, ETags, claims,
reassignment, and SLA escalation driven by an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from devsupport.apiclient import api_client
from devsupport.factories import TEMPLATES, classified_event
from devsupport.kafka import read_topics
from services.router.service import RouterService
from shared.apikeys import Actor
from shared.bus import Record
from shared.bus.codec import encode
from shared.bus.kafka import KafkaBus
from shared.db import (
    ActivityRow,
    AssignmentRow,
    CorrectionRow,
    OutboxRow,
    ReplyRow,
    create_engine,
    session_factory,
)
from shared.events import Department, MentionEscalated, MentionRouted
from shared.routing import RuleSet
from shared.settings import DEPARTMENTS, Settings
from shared.workflow import Action, add_note, claim, reassign, transition, unclaim
from tests.conftest import KafkaEnv

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    settings: Settings
    router: RouterService
    api: httpx.AsyncClient
    clock: Clock
    bus: KafkaBus
    engine: Any

    async def assignments(self) -> list[AssignmentRow]:
        async with session_factory(self.engine)() as session:
            return list(await session.scalars(select(AssignmentRow).order_by(AssignmentRow.id)))

    async def assignment(self, department: str, *, status: str | None = None) -> AssignmentRow:
        for a in await self.assignments():
            if a.department == department and (status is None or a.status == status):
                return a
        raise AssertionError(f"no {department} assignment")

    async def count(self, model: Any) -> int:
        async with session_factory(self.engine)() as session:
            return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def _template(department: str) -> int:
    """The index of a template whose mention the default rules route to `department` (only there)."""
    for i, (_, _, departments) in enumerate(TEMPLATES):
        if departments == frozenset({department}):
            return i
    raise AssertionError(department)


@pytest.fixture
async def world(kafka: KafkaEnv, pg_url: str) -> AsyncIterator[World]:
    settings = kafka.settings(database_url=pg_url, router_escalation_max_level=2)
    engine = create_engine(pg_url)
    bus = KafkaBus(settings)
    await bus.start()
    await bus.ensure_topics(settings.all_topics())
    clock = Clock(T0)
    router = RouterService(
        settings=settings,
        bus=bus,
        sessions=session_factory(engine),
        rules=RuleSet.from_file(settings.routing_file),
        clock=clock,
    )
    async with api_client(settings, engine=engine, bus=bus) as api:
        yield World(settings, router, api, clock, bus, engine)
    await bus.stop()
    await engine.dispose()


async def route(world: World, *indexes: int) -> None:
    events = [classified_event(i) for i in indexes]
    messages = [encode(topic="t", key=e.mention.id, event=e, source="/t") for e in events]
    records = [
        Record(topic="t", partition=0, offset=n, key=m.key, value=m.value) for n, m in enumerate(messages)
    ]
    result = await world.router.handle(records)
    assert not result.dead
    await world.bus.send(result.out)


async def post(world: World, path: str, body: Any = None, **headers: str) -> httpx.Response:
    return await world.api.post(path, json=body, headers={"X-Actor": "ana", **headers})


async def test_an_assignment_goes_through_its_states_with_etags(world: World) -> None:
    await route(world, _template("support"))
    a = await world.assignment("support")
    base = f"/v1/assignments/{a.id}"

    got = await world.api.get(base)
    assert got.status_code == 200
    etag = got.headers["ETag"]
    assert got.json()["status"] == "new" and got.json()["version"] == 1

    r = await post(world, f"{base}/acknowledge", {"comment": "looking into it"}, **{"If-Match": etag})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "acknowledged" and r.json()["acknowledged_at"] is not None
    # The ETag read before the change is stale now: a second writer with it is refused.
    stale = await post(world, f"{base}/resolve", None, **{"If-Match": etag})
    assert stale.status_code == 412
    assert (await world.assignment("support")).status == "acknowledged"

    reply = {
        "text": "Thanks, fixed in 4.2.",
        "url": "https://blog.example.net/1#c2",
        "channel": "blog-comment",
    }
    r = await post(world, f"{base}/respond", reply, **{"If-Match": r.headers["ETag"]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "responded" and r.json()["first_response_at"] is not None
    detail = (await world.api.get(base)).json()
    assert [(x["text"], x["channel"], x["author"]) for x in detail["replies"]] == [
        ("Thanks, fixed in 4.2.", "blog-comment", "ana")
    ]
    assert detail["replies"][0]["url"] == "https://blog.example.net/1#c2"

    assert (await post(world, f"{base}/resolve")).json()["status"] == "resolved"
    # Acknowledging a resolved assignment is not a transition the workflow has.
    refused = await post(world, f"{base}/acknowledge")
    assert refused.status_code == 409
    assert "resolved" in refused.json()["detail"]
    reopened = (await post(world, f"{base}/reopen")).json()
    assert reopened["status"] == "reopened" and reopened["closed_at"] is None
    assert (await post(world, f"{base}/dismiss")).json()["status"] == "dismissed"

    log = (await world.api.get(f"/v1/mentions/{a.mention_id}/activity")).json()["items"]
    assert [(x["action"], x["from_status"], x["to_status"]) for x in log] == [
        ("acknowledge", "new", "acknowledged"),
        ("note", None, None),
        ("respond", "acknowledged", "responded"),
        ("resolve", "responded", "resolved"),
        ("reopen", "resolved", "reopened"),
        ("dismiss", "reopened", "dismissed"),
    ]
    assert {x["actor"] for x in log} == {"ana"}
    assert log[1]["detail"] == {"text": "looking into it"}
    assert await world.count(ReplyRow) == 1
    assert (await post(world, "/v1/assignments/999999/acknowledge")).status_code == 404


async def test_repeating_a_transition_changes_nothing(world: World) -> None:
    await route(world, _template("support"))
    a = await world.assignment("support")
    first = (await post(world, f"/v1/assignments/{a.id}/acknowledge")).json()
    again = (await post(world, f"/v1/assignments/{a.id}/acknowledge")).json()
    assert again["version"] == first["version"]
    assert await world.count(ActivityRow) == 1


async def test_a_second_claim_is_refused_unless_forced(world: World) -> None:
    await route(world, _template("support"))
    a = await world.assignment("support")
    base = f"/v1/assignments/{a.id}"
    assert (await post(world, f"{base}/claim", {"assignee": "ana"})).json()["assignee"] == "ana"
    # Claiming what you already hold is fine and changes nothing.
    assert (await post(world, f"{base}/claim", {"assignee": "ana"})).status_code == 200

    taken = await world.api.post(f"{base}/claim", json={}, headers={"X-Actor": "ben"})
    assert taken.status_code == 409
    assert "'ana'" in taken.json()["detail"]
    not_yours = await world.api.post(f"{base}/unclaim", json={}, headers={"X-Actor": "ben"})
    assert not_yours.status_code == 409

    forced = await world.api.post(f"{base}/claim", json={"force": True}, headers={"X-Actor": "ben"})
    assert forced.status_code == 200 and forced.json()["assignee"] == "ben"
    released = await world.api.post(f"{base}/unclaim", json={}, headers={"X-Actor": "ben"})
    assert released.json()["assignee"] is None


async def test_simultaneous_claims_leave_exactly_one_winner(world: World) -> None:
    await route(world, _template("support"))
    a = await world.assignment("support")
    people = [f"agent-{i}" for i in range(8)]
    answers = await asyncio.gather(
        *(world.api.post(f"/v1/assignments/{a.id}/claim", json={}, headers={"X-Actor": p}) for p in people)
    )
    winners = [p for p, r in zip(people, answers, strict=True) if r.status_code == 200]
    assert len(winners) == 1, [r.status_code for r in answers]
    assert sorted(r.status_code for r in answers) == [200] + [409] * 7
    assert (await world.assignment("support")).assignee == winners[0]


async def test_reassignment_closes_opens_logs_corrects_and_announces(world: World) -> None:
    await route(world, _template("support"))
    a = await world.assignment("support")
    r = await post(
        world, f"/v1/assignments/{a.id}/reassign", {"department": "product", "reason": "a feature ask"}
    )
    assert r.status_code == 200, r.text
    closed, opened = r.json()["closed"], r.json()["opened"]
    assert (closed["department"], closed["status"], closed["reassigned_to"]) == (
        "support",
        "reassigned",
        "product",
    )
    assert (opened["department"], opened["status"], opened["priority"]) == ("product", "new", a.priority)
    assert opened["rules"] == ["reassigned from support"]

    async with session_factory(world.engine)() as session:
        corrections = list(await session.scalars(select(CorrectionRow)))
    assert [(c.field, c.value, c.previous, c.actor) for c in corrections] == [
        ("departments", ["product"], ["support"], "ana")
    ]
    log = (await world.api.get(f"/v1/mentions/{a.mention_id}/activity")).json()["items"]
    assert [(x["department"], x["action"]) for x in log] == [
        ("support", "reassigned"),
        ("product", "reassigned_in"),
    ]

    # The routing-accuracy report counts the correction against support's rule.
    report = (await world.api.get("/v1/routing-rules/accuracy")).json()
    by_department = {d["department"]: d for d in report["departments"]}
    assert (by_department["support"]["routed"], by_department["support"]["reassigned_away"]) == (1, 1)
    assert by_department["support"]["accuracy"] == 0.0
    assert by_department["product"]["reassigned_in"] == 1 and by_department["product"]["accuracy"] is None
    assert report["rules"][0]["reassigned_away"] == 1 and report["rules"][0]["rule"] in a.rules

    # The product department's topic gets the mention (through the outbox).
    assert await world.count(OutboxRow) == 1
    assert await world.router.relay() == 1
    assert await world.count(OutboxRow) == 0
    records = await read_topics(
        world.settings.kafka_bootstrap_servers, [world.settings.topic_routed("product")]
    )
    events = [MentionRouted.model_validate_json(x.value) for x in records]
    assert [(e.mention.id, e.department.value, e.assignment.rules) for e in events] == [
        (a.mention_id, "product", ["reassigned from support"])
    ]

    # Closed assignments cannot move; moving back reopens support's own assignment.
    assert (await post(world, f"/v1/assignments/{a.id}/reassign", {"department": "rnd"})).status_code == 409
    back = (await post(world, f"/v1/assignments/{opened['id']}/reassign", {"department": "support"})).json()
    assert (back["opened"]["id"], back["opened"]["status"]) == (a.id, "reopened")
    same = await post(world, f"/v1/assignments/{a.id}/reassign", {"department": "support"})
    assert same.status_code == 409


async def test_overdue_assignments_escalate_step_by_step(world: World) -> None:
    support, marketing = _template("support"), _template("marketing")
    await route(world, support, marketing)
    before = {a.department: a for a in await world.assignments()}
    s, m = before["support"], before["marketing"]
    # Respond to marketing's: a responded assignment is never escalated.
    await post(world, f"/v1/assignments/{m.id}/respond", {"text": "Thank you!"})

    world.clock.now = s.sla_due_at - timedelta(seconds=1)
    assert await world.router.escalate() == 0
    world.clock.now = s.sla_due_at + timedelta(seconds=1)
    assert await world.router.escalate() == 1
    assert await world.router.escalate() == 0, "escalated once per SLA period"
    after = await world.assignment("support")
    assert after.priority == f"P{int(s.priority[1]) - 1}"
    assert (after.escalation_level, after.escalated_at) == (1, world.clock.now)

    got = (await world.api.get(f"/v1/assignments/{s.id}")).json()
    assert got["overdue"] is True and got["escalation_level"] == 1
    listed = (await world.api.get("/v1/mentions", params={"department": "support"})).json()["items"]
    assert listed[0]["assignments"][0]["escalation_level"] == 1

    # After another SLA period, the second (and here last) escalation.
    world.clock.now += timedelta(minutes=s.sla_minutes)
    assert await world.router.escalate() == 1
    world.clock.now += timedelta(days=30)
    assert await world.router.escalate() == 0, "router_escalation_max_level=2 reached"

    assert await world.router.relay() == 4
    for topic in (world.settings.topic_routed("support"), world.settings.topic_escalations):
        records = await read_topics(world.settings.kafka_bootstrap_servers, [topic])
        events = [MentionEscalated.model_validate_json(x.value) for x in records if b"escalated" in x.value]
        assert [(e.mention_id, e.escalation_level, e.previous_priority, e.priority) for e in events] == [
            (s.mention_id, 1, s.priority, after.priority),
            (s.mention_id, 2, after.priority, f"P{max(1, int(after.priority[1]) - 1)}"),
        ]
        headers = {k: v for k, v in records[-1].headers}
        assert headers["ce_type"].startswith(b"io.mentionrouter.mention.escalated")
    others = await read_topics(
        world.settings.kafka_bootstrap_servers,
        [world.settings.topic_routed(d) for d in DEPARTMENTS if d != "support"],
    )
    assert not [x for x in others if b"mention.escalated" in x.value]


async def test_replicas_escalating_at_once_escalate_each_assignment_once(world: World) -> None:
    await route(world, *range(len(TEMPLATES) * 3))
    assignments = await world.assignments()
    world.clock.now = max(a.sla_due_at for a in assignments) + timedelta(seconds=1)
    second = RouterService(
        settings=world.settings,
        bus=world.bus,
        sessions=session_factory(world.engine),
        rules=world.router.rules,
        clock=world.clock,
    )
    counts = await asyncio.gather(world.router.escalate(), second.escalate(), world.router.escalate())
    assert sum(counts) == len(assignments)
    assert {a.escalation_level for a in await world.assignments()} == {1}


async def test_every_activity_and_correction_names_the_acting_key(world: World) -> None:
    """The workflow records the key beside the display name on every row it writes; the SLA's own
    escalations have none."""
    await route(world, _template("support"))
    a = await world.assignment("support")
    desk = Actor(name="ana", key_id="0badc0de", key_name="helpdesk")
    now = world.clock.now
    async with session_factory(world.engine)() as session, session.begin():
        await transition(session, a.id, Action.ACKNOWLEDGE, actor=desk, now=now)
        await claim(session, a.id, assignee="ana", actor=desk, now=now)
        await unclaim(session, a.id, actor=desk, now=now)
        await add_note(session, a.id, text="n", actor=desk, now=now)
        await transition(session, a.id, Action.RESPOND, actor=desk, now=now, reply={"text": "hi"})
        await transition(session, a.id, Action.RESOLVE, actor=desk, now=now)
        await transition(session, a.id, Action.REOPEN, actor=desk, now=now)
        _, opened = await reassign(
            session, a.id, department=Department.PRODUCT, actor=desk, now=now, settings=world.settings
        )
    world.clock.now = opened.sla_due_at + timedelta(seconds=1)
    assert await world.router.escalate() == 1
    async with session_factory(world.engine)() as session:
        activity = list(await session.scalars(select(ActivityRow).order_by(ActivityRow.id)))
        corrections = list(await session.scalars(select(CorrectionRow)))
    assert [r.action for r in activity] == [
        "acknowledge",
        "claimed",
        "unclaimed",
        "note",
        "respond",
        "resolve",
        "reopen",
        "reassigned",
        "reassigned_in",
        "escalated",
    ]
    assert {(r.actor, r.actor_key_id, r.actor_key_name) for r in activity[:-1]} == {
        ("ana", "0badc0de", "helpdesk")
    }
    assert (activity[-1].actor, activity[-1].actor_key_id, activity[-1].actor_key_name) == ("sla", None, None)
    [correction] = corrections
    assert (correction.actor, correction.actor_key_id, correction.actor_key_name) == (
        "ana",
        "0badc0de",
        "helpdesk",
    )
    assert correction.departments == ["product", "support"]
