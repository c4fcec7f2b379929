"""Webhook signatures, the retry schedule, and the rules an endpoint URL must follow (no network here)."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import UTC, datetime

import pytest

from services.api.webhook_worker.fanout import event_type_of
from services.api.webhook_worker.retry import judge, retry_delay
from services.api.webhook_worker.sender import Outcome
from services.api.webhook_worker.signing import new_secret, sign, signed_headers, verify
from services.api.webhook_worker.urls import check_endpoint_url
from shared.bus.base import Record
from shared.errors import PoisonMessage
from shared.netguard import UnsafeURL
from shared.settings import Settings

SECRET = "whsec_test-secret"
BODY = b'{"type": "mention.routed", "department": "support"}'


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1767225600." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1767225600, BODY) == f"sha256={expected}"
    # A known vector, so that a receiver in another language can check its implementation.
    assert sign("key", 0, b"") == "sha256=" + hmac.new(b"key", b"0.", hashlib.sha256).hexdigest()


def test_verify_accepts_the_real_thing_only() -> None:
    now = 1767225600.0
    good = sign(SECRET, int(now), BODY)
    assert verify(SECRET, timestamp=str(int(now)), body=BODY, signature=good, now=now)
    assert not verify("whsec_other", timestamp=str(int(now)), body=BODY, signature=good, now=now)
    assert not verify(SECRET, timestamp=str(int(now)), body=BODY + b" ", signature=good, now=now)
    assert not verify(SECRET, timestamp=str(int(now) + 1), body=BODY, signature=good, now=now)
    assert not verify(SECRET, timestamp="yesterday", body=BODY, signature=good, now=now)
    # Too old (a replay), or from the future beyond the tolerance.
    assert not verify(SECRET, timestamp=str(int(now)), body=BODY, signature=good, now=now + 301)
    assert verify(SECRET, timestamp=str(int(now)), body=BODY, signature=good, now=now + 299)


def test_two_signatures_while_a_rotated_secret_is_still_valid() -> None:
    old, new = new_secret(), new_secret()
    assert old != new and old.startswith("whsec_") and len(old) > 40
    headers = signed_headers(
        keys=[new, old], event_type="mention.routed", delivery_id=7, body=BODY, timestamp=5
    )
    assert headers["X-MentionRouter-Signature"] == f"{sign(new, 5, BODY)}, {sign(old, 5, BODY)}"
    assert headers["X-MentionRouter-Event"] == "mention.routed"
    assert headers["X-MentionRouter-Delivery"] == "7"
    assert headers["X-MentionRouter-Timestamp"] == "5"
    assert headers["Content-Type"] == "application/json"
    for key in (new, old):
        assert verify(key, timestamp="5", body=BODY, signature=headers["X-MentionRouter-Signature"], now=5)
    assert not verify(
        new_secret(), timestamp="5", body=BODY, signature=headers["X-MentionRouter-Signature"], now=5
    )


def test_the_retry_schedule_grows_then_stays_at_its_last_step() -> None:
    schedule = Settings().webhook_retry_schedule_s
    assert schedule == [10.0, 30.0, 120.0, 600.0, 3600.0, 10800.0, 21600.0]
    rng = random.Random(1)
    for attempt, base in enumerate([*schedule, 21600.0, 21600.0], start=1):
        for _ in range(50):
            delay = retry_delay(attempt, schedule, rng=rng)
            assert 0.8 * base <= delay <= 1.2 * base
    # Jitter: two endpoints failing together do not retry in lockstep.
    assert len({round(retry_delay(1, schedule, rng=rng), 6) for _ in range(20)}) == 20
    # Eight attempts by default: seven waits, about ten hours from the first attempt to the last.
    assert Settings().webhook_max_attempts == 8
    assert 9 * 3600 < sum(schedule) < 11 * 3600


def test_outcomes() -> None:
    assert Outcome(204, None, 3).ok and not Outcome(204, None, 3).gone
    assert Outcome(410, "HTTP 410", 3).gone and not Outcome(410, "HTTP 410", 3).ok
    assert not Outcome(None, "timeout", 3).ok and not Outcome(302, "HTTP 302", 1).ok


NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("outcome", "attempt", "retry", "status", "metric", "delay"),
    [
        (Outcome(204, None, 3), 1, True, "delivered", "delivered", None),
        (Outcome(410, "HTTP 410", 3), 1, True, "dead", "gone", None),
        (Outcome(500, "HTTP 500", 3), 8, True, "dead", "dead", None),  # the last attempt
        (Outcome(500, "HTTP 500", 3), 1, False, "dead", "dead", None),  # a ping is not tried again
        (Outcome(None, "timeout", 3), 1, True, "retrying", "failed", (8.0, 12.0)),
        (Outcome(503, "HTTP 503", 3), 2, True, "retrying", "failed", (24.0, 36.0)),
        # Retry-After is honoured where it is longer, up to the schedule's longest step.
        (Outcome(429, "HTTP 429", 3, retry_after_s=100.0), 1, True, "retrying", "failed", (100.0, 100.0)),
        (Outcome(429, "HTTP 429", 3, retry_after_s=1e9), 1, True, "retrying", "failed", (21600.0, 21600.0)),
        (Outcome(429, "HTTP 429", 3, retry_after_s=1.0), 1, True, "retrying", "failed", (8.0, 12.0)),
    ],
)
def test_what_an_outcome_makes_of_the_delivery(
    outcome: Outcome,
    attempt: int,
    retry: bool,
    status: str,
    metric: str,
    delay: tuple[float, float] | None,
) -> None:
    verdict = judge(outcome, attempt=attempt, retry=retry, settings=Settings(), now=NOW)
    assert (verdict.status, verdict.metric) == (status, metric)
    if delay is None:
        assert verdict.next_attempt_at is None
    else:
        assert verdict.next_attempt_at is not None
        assert delay[0] <= (verdict.next_attempt_at - NOW).total_seconds() <= delay[1]


def _record(headers: dict[str, str], value: bytes = b"{}") -> Record:
    return Record(topic="mentions.routed.pr", partition=0, offset=3, key="m1", value=value, headers=headers)


def test_the_event_type_comes_from_the_cloudevents_header() -> None:
    assert event_type_of(_record({"ce_type": "io.mentionrouter.mention.routed.v1"})) == "mention.routed"
    assert event_type_of(_record({"ce_type": "io.mentionrouter.mention.escalated.v2"})) == "mention.escalated"
    assert event_type_of(_record({}, b'{"type": "mention.routed"}')) == "mention.routed"
    with pytest.raises(PoisonMessage, match="no ce_type header"):
        event_type_of(_record({}, b"not json"))


@pytest.mark.parametrize(
    ("url", "allow_http", "why"),
    [
        ("http://93.184.215.14/hook", False, "must use https"),
        ("https://10.0.0.7/hook", False, "a private address"),
        ("https://127.0.0.1:8443/hook", False, "a loopback address"),
        ("http://127.0.0.1:8080/hook", True, "a loopback address"),
        ("https://169.254.169.254/", False, "a cloud metadata address"),
    ],
)
async def test_endpoint_urls_the_policy_refuses(url: str, allow_http: bool, why: str) -> None:
    settings = Settings(webhook_allow_http=allow_http, webhook_allowed_networks="")
    with pytest.raises(UnsafeURL, match=why):
        await check_endpoint_url(url, settings)


async def test_endpoint_urls_the_policy_accepts() -> None:
    await check_endpoint_url("https://93.184.215.14/hook", Settings())
    allowed = Settings(webhook_allow_http=True, webhook_allowed_networks="127.0.0.1")
    await check_endpoint_url("http://127.0.0.1:8080/hook", allowed)
    with pytest.raises(UnsafeURL, match="MR_WEBHOOK_ALLOWED_NETWORKS"):
        await check_endpoint_url("https://10.0.0.7/", Settings())
