"""The stages' metrics endpoint and the per-topic settings, without a broker."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from shared import metrics
from shared.metrics import MetricsServer
from shared.settings import Settings, TopicOverride


async def test_endpoint_serves_metrics_health_and_readiness() -> None:
    ready = False
    async with MetricsServer(host="127.0.0.1", port=0, ready=lambda: ready) as server:
        metrics.observe_batch("unit-test", seconds=0.01, records=3, out=2, dead=1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 503
            ready = True
            assert (await http.get("/readyz")).status_code == 200
            body = (await http.get("/metrics?x=1")).text
            assert 'mr_messages_in_total{stage="unit-test"} 3.0' in body
            assert 'mr_dead_letters_total{stage="unit-test"} 1.0' in body
            assert (await http.get("/other")).status_code == 404
            assert (await http.post("/metrics")).status_code == 405
            head = await http.head("/healthz")
            assert head.status_code == 200 and head.content == b""
        # A client that connects and says nothing does not hold the server.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.close()
        await writer.wait_closed()
        del reader


async def test_the_apis_endpoint_serves_only_metrics() -> None:
    # The API's metrics port: its own body (the queue gauges appended), and no probes (the API's are on
    # its own port, where /readyz checks the database and the broker).
    async with (
        MetricsServer(
            host="127.0.0.1", port=0, ready=lambda: True, collect=lambda: b"mr_x 1.0\n", probes=False
        ) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as http,
    ):
        assert (await http.get("/metrics")).text == "mr_x 1.0\n"
        assert (await http.get("/healthz")).status_code == 404
        assert (await http.get("/readyz")).status_code == 404


def test_topic_spec_uses_overrides_by_name_without_prefix() -> None:
    settings = Settings(
        topic_prefix="acme.",
        topic_partitions=4,
        topic_retention_ms=1000,
        topic_overrides={"mentions.dlq": TopicOverride(partitions=1, retention_ms=-1)},
    )
    assert settings.topic_spec("acme.mentions.raw") == (4, 1000)
    assert settings.topic_spec("acme.mentions.dlq") == (1, -1)


def test_topic_overrides_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MR_TOPIC_OVERRIDES", '{"mentions.raw": {"partitions": 12}}')
    assert Settings().topic_spec("mentions.raw") == (12, None)


def test_plain_postgresql_urls_get_the_async_driver() -> None:
    assert Settings(database_url="postgresql://u:p@db:5432/app").database_url == (
        "postgresql+asyncpg://u:p@db:5432/app"
    )
    assert Settings(database_url="postgres://db/app").database_url == "postgresql+asyncpg://db/app"
    kept = "postgresql+asyncpg://db/app"
    assert Settings(database_url=kept).database_url == kept


async def test_image_healthcheck_asks_the_metrics_port_then_the_api_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared import healthcheck

    ready = False
    async with MetricsServer(host="127.0.0.1", port=0, ready=lambda: ready) as server:
        # A stage: its metrics port answers.
        monkeypatch.setenv("MR_METRICS_PORT", str(server.port))
        monkeypatch.setenv("MR_API_PORT", "0")
        assert await asyncio.to_thread(healthcheck.main, []) == 0
        assert await asyncio.to_thread(healthcheck.main, ["--ready"]) == 1
        ready = True
        assert await asyncio.to_thread(healthcheck.main, ["--ready"]) == 0
        # The API: nothing on the metrics port, the API port answers.
        monkeypatch.setenv("MR_METRICS_PORT", "1")
        monkeypatch.setenv("MR_API_PORT", str(server.port))
        assert await asyncio.to_thread(healthcheck.main, []) == 0
        # The API: its metrics port answers /metrics only, so the probes go on to the API port.
        async with MetricsServer(host="127.0.0.1", port=0, ready=lambda: True, probes=False) as api_metrics:
            monkeypatch.setenv("MR_METRICS_PORT", str(api_metrics.port))
            assert await asyncio.to_thread(healthcheck.main, ["--ready"]) == 0
            monkeypatch.setenv("MR_API_PORT", "0")
            assert await asyncio.to_thread(healthcheck.main, ["--ready"]) == 1
    assert await asyncio.to_thread(healthcheck.main, []) == 1
