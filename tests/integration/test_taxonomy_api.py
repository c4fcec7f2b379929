"""The taxonomy through the API: read, replace with validation, refuse what would break the active rules
or cannot be written; the classifier's reloader sees the new file."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devsupport.apiclient import api_client
from services.router.bootstrap import build
from shared.bus import MemoryBus
from shared.classify.reload import TaxonomyFile
from shared.db import create_engine
from shared.settings import BusKind, Settings

pytestmark = pytest.mark.postgres


@pytest.fixture
async def setup(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    taxonomy = tmp_path / "taxonomy.yaml"
    shutil.copy(Settings().taxonomy_file, taxonomy)
    settings = Settings().model_copy(
        update={"database_url": pg_url, "bus": BusKind.MEMORY, "taxonomy_file": taxonomy}
    )
    engine = create_engine(pg_url)
    await build(settings, bus=MemoryBus(), engine=engine).load_rules()  # the active rules name topics
    async with api_client(settings, engine=engine, base_url="http://a") as c:
        yield c, settings
    await engine.dispose()


def _current(settings: Settings) -> dict[str, Any]:
    data = yaml.safe_load(settings.taxonomy_file.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


async def test_read_and_replace(setup: tuple[httpx.AsyncClient, Settings]) -> None:
    api, settings = setup
    got = (await api.get("/v1/taxonomy")).json()
    assert "security" in got["topics"] and got["topics"]["security"]["department"] == "rnd"
    watcher = TaxonomyFile(settings.taxonomy_file)
    body = {
        "version": 99,
        "topics": {**got["topics"], "sustainability": {"department": "pr", "terms": ["carbon"]}},
    }
    r = await api.put("/v1/taxonomy", json=body)
    assert r.status_code == 200, r.text
    assert _current(settings)["topics"]["sustainability"] == {"department": "pr", "terms": ["carbon"]}
    assert watcher.refresh() is True, "the classifier's reloader picks the new file up"
    assert "sustainability" in watcher.taxonomy.topics and watcher.taxonomy.version == "99"


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"bug": {"department": "legal", "terms": ["x"]}}, 422, "legal"),
        ({"bug": {"department": "rnd", "terms": ["  "]}}, 422, "blank"),
        ({"bug": {"department": "rnd", "regexes": ["(unclosed"]}}, 422, "compile"),
    ],
)
async def test_invalid_taxonomies_are_refused(
    setup: tuple[httpx.AsyncClient, Settings], change: dict[str, Any], status: int, words: str
) -> None:
    api, settings = setup
    before = settings.taxonomy_file.read_text(encoding="utf-8")
    topics = {**_current(settings)["topics"], **change}
    r = await api.put("/v1/taxonomy", json={"version": 3, "topics": topics})
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert settings.taxonomy_file.read_text(encoding="utf-8") == before, "the old one stays"


async def test_a_topic_the_active_rules_use_cannot_go(setup: tuple[httpx.AsyncClient, Settings]) -> None:
    api, settings = setup
    topics = {k: v for k, v in _current(settings)["topics"].items() if k != "security"}
    r = await api.put("/v1/taxonomy", json={"version": 3, "topics": topics})
    assert r.status_code == 409 and "security" in r.json()["detail"]


async def test_a_file_that_cannot_be_written_answers_409(pg_url: str) -> None:
    # /proc refuses new files even to root, like a read-only ConfigMap mount does.
    settings = Settings().model_copy(
        update={
            "database_url": pg_url,
            "bus": BusKind.MEMORY,
            "taxonomy_file": Path("/proc/mr-taxonomy.yaml"),
        }
    )
    topics = yaml.safe_load(Settings().taxonomy_file.read_text(encoding="utf-8"))["topics"]
    async with api_client(settings, base_url="http://a") as api:
        r = await api.put("/v1/taxonomy", json={"version": 3, "topics": topics})
    assert r.status_code == 409 and "cannot be written" in r.json()["detail"], r.text
