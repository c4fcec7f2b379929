"""The signature on every webhook request, and what a receiver does to check it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence

USER_AGENT = "MentionRouter-Webhooks/1"


def new_secret() -> str:
    """A signing secret: the HMAC key is this whole string, as UTF-8."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of `<timestamp>.<body>`, keyed with the secret."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    *,
    timestamp: str,
    body: bytes,
    signature: str,
    now: float | None = None,
    tolerance_s: int = 300,
) -> bool:
    """What a receiver does: the timestamp is recent and one of the header's signatures (there are two
    while a rotated secret's predecessor is still valid) is ours."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    expected = sign(secret, sent, body)
    return any(hmac.compare_digest(expected, s.strip()) for s in signature.split(","))


def signed_headers(
    *, keys: Sequence[str], event_type: str, delivery_id: int, body: bytes, timestamp: int
) -> dict[str, str]:
    """The request's headers; one signature per key (two while a rotated secret's predecessor is valid)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-MentionRouter-Event": event_type,
        "X-MentionRouter-Delivery": str(delivery_id),
        "X-MentionRouter-Timestamp": str(timestamp),
        "X-MentionRouter-Signature": ", ".join(sign(k, timestamp, body) for k in keys),
    }
