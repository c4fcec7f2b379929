"""One attempt of one delivery: the signed POST and what came of it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from services.api.webhook_worker.metrics import REQUEST_SECONDS
from services.api.webhook_worker.signing import signed_headers
from services.api.webhook_worker.urls import check_scheme, net_policy
from shared.netguard import UnsafeURL, guarded_transport
from shared.settings import Settings

# Of an answer that is not 2xx, this much of the body goes into the delivery log.
ERROR_BODY_CHARS = 300
_MAX_READ_BYTES = 64 * 1024


@dataclass(frozen=True)
class Job:
    """One attempt of one delivery, with what the request needs (read when it was claimed)."""

    delivery_id: int
    endpoint_id: int
    url: str
    secrets: tuple[str, ...]
    event_type: str
    payload: bytes
    attempt: int


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


def _retry_after(value: str | None) -> float | None:
    # Only the delta-seconds form; an HTTP date is left to the schedule.
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


class Sender:
    """POSTs one delivery. Its client connects through the SSRF guard, follows no redirect, and keeps
    connections to the endpoints alive between requests."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(
                max_connections=self._settings.webhook_concurrency + 4,
                max_keepalive_connections=self._settings.webhook_concurrency,
            )
            self._client = httpx.AsyncClient(
                transport=guarded_transport(net_policy(self._settings), limits=limits),
                timeout=httpx.Timeout(self._settings.webhook_timeout_s),
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def post(self, job: Job) -> Outcome:
        started = time.monotonic()

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        timestamp = int(time.time())
        headers = signed_headers(
            keys=job.secrets,
            event_type=job.event_type,
            delivery_id=job.delivery_id,
            body=job.payload,
            timestamp=timestamp,
        )
        try:
            check_scheme(job.url, self._settings)
            async with self._http().stream("POST", job.url, content=job.payload, headers=headers) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) >= _MAX_READ_BYTES:
                        break
        except UnsafeURL as exc:
            return Outcome(None, str(exc), elapsed())
        except httpx.TimeoutException:
            return Outcome(None, f"no answer within {self._settings.webhook_timeout_s:g} s", elapsed())
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:1000], elapsed())
        finally:
            REQUEST_SECONDS.observe(time.monotonic() - started)
        code = response.status_code
        if 200 <= code < 300:
            return Outcome(code, None, elapsed())
        text = bytes(body[: ERROR_BODY_CHARS * 4]).decode("utf-8", "replace")[:ERROR_BODY_CHARS].strip()
        what = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
        return Outcome(
            code,
            f"{what}: {text}" if text else what,
            elapsed(),
            _retry_after(response.headers.get("retry-after")),
        )
