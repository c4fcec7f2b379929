"""The taxonomy reloads without a restart; a bad file is refused and the old taxonomy stays in use."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.classifier.service import ClassifierService
from shared.bus import MemoryBroker, MemoryBus
from shared.bus.base import Record
from shared.bus.codec import decode, encode
from shared.classify import RuleEngine
from shared.classify.model import load_model
from shared.classify.reload import TaxonomyFile
from shared.errors import ConfigError
from shared.events import Mention, MentionClassified, MentionIngested
from shared.settings import BusKind, Settings

V1 = "version: 1\ntopics:\n  bug:\n    department: rnd\n    terms: [crash]\n"
V2 = "version: 2\ntopics:\n  bug:\n    department: rnd\n    terms: [crash, freezes]\n"
BAD = "version: 3\ntopics:\n  bug:\n    department: legal\n    terms: [crash, freezes, hangs]\n"


def _write(path: Path, text: str, *, bump: int) -> None:
    path.write_text(text, encoding="utf-8")
    # Make the change visible even on a file system with coarse modification times.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


def test_a_changed_file_is_picked_up_and_an_unchanged_one_is_not_reread(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    _write(path, V1, bump=0)
    source = TaxonomyFile(path)
    assert source.taxonomy.version == "1"
    assert source.refresh() is False
    _write(path, V2, bump=1)
    assert source.refresh() is True
    assert source.taxonomy.version == "2"
    assert "freezes" in source.taxonomy.topics["bug"].terms


def test_a_bad_file_is_refused_with_a_clear_error_and_the_old_taxonomy_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "taxonomy.yaml"
    _write(path, V1, bump=0)
    source = TaxonomyFile(path)
    _write(path, BAD, bump=1)
    with caplog.at_level(logging.ERROR):
        assert source.refresh() is False
    assert source.taxonomy.version == "1"
    assert source.last_error is not None
    assert "department 'legal' is not one of" in str(source.last_error)
    assert any("refused, still using version 1" in r.getMessage() for r in caplog.records)
    # Logged once per change of the file, not at every batch.
    caplog.clear()
    assert source.refresh() is False
    assert not caplog.records
    # A fixed file is taken again.
    _write(path, V2, bump=2)
    assert source.refresh() is True
    assert source.taxonomy.version == "2"
    assert source.last_error is None


def test_invalid_yaml_and_a_deleted_file_are_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    _write(path, V1, bump=0)
    source = TaxonomyFile(path)
    _write(path, "topics: [unclosed\n", bump=1)
    assert source.refresh() is False
    assert "not valid YAML" in str(source.last_error)
    path.unlink()
    assert source.refresh() is False
    assert "cannot read taxonomy file" in str(source.last_error)
    assert source.taxonomy.version == "1"


def test_a_bad_file_at_start_up_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    path.write_text(BAD, encoding="utf-8")
    with pytest.raises(ConfigError, match="department 'legal'"):
        TaxonomyFile(path)


def _record(mention: Mention, offset: int, settings: Settings) -> Record:
    out = encode(
        topic=settings.topic_raw, key=mention.id, event=MentionIngested(mention=mention), source="/t"
    )
    return Record(
        topic=out.topic, partition=0, offset=offset, key=out.key, value=out.value, headers=out.headers
    )


async def test_the_classifier_service_uses_the_new_taxonomy_from_the_next_batch(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    _write(path, V1, bump=0)
    settings = Settings(bus=BusKind.MEMORY, taxonomy_file=path)
    source = TaxonomyFile(path)
    service = ClassifierService(
        settings=settings, bus=MemoryBus(MemoryBroker()), engine=RuleEngine(source.taxonomy), taxonomy=source
    )
    mention = Mention(
        id="m1",
        source_id="s1",
        text="The board freezes on open",
        published_at=datetime(2026, 1, 1, tzinfo=UTC),
    )

    async def topics(offset: int) -> tuple[list[str], str]:
        result = await service.handle([_record(mention, offset, settings)])
        event = decode(result.out[0], MentionClassified)
        return [t.name for t in event.classification.topics], event.classification.engine_version

    assert await topics(0) == ([], "rules-2+taxonomy-1")
    _write(path, V2, bump=1)
    assert await topics(1) == (["bug"], "rules-2+taxonomy-2")
    _write(path, BAD, bump=2)
    assert await topics(2) == (["bug"], "rules-2+taxonomy-2")


async def test_the_service_built_with_the_learned_engine_puts_the_model_version_in_every_event() -> None:
    from services.classifier.bootstrap import build
    from shared.settings import REPO_ROOT, ClassifierEngineKind

    settings = Settings(
        bus=BusKind.MEMORY,
        classifier_engine=ClassifierEngineKind.LEARNED,
        classifier_model=REPO_ROOT / "models" / "minilm-v3.npz",
    )
    service = build(settings, bus=MemoryBus(MemoryBroker()))
    mentions = [
        Mention(id=f"m{i}", source_id="s1", text=text, published_at=datetime(2026, 1, 1, tzinfo=UTC))
        for i, text in enumerate(["The export crashes every time.", "", "Wie kann ich ein Board teilen?"])
    ]
    result = await service.handle([_record(m, i, settings) for i, m in enumerate(mentions)])
    assert not result.dead
    events = [decode(out, MentionClassified) for out in result.out]
    assert all(
        e.classification.engine_version.startswith(
            f"{load_model(REPO_ROOT / 'models' / 'minilm-v3.npz').version}+rules-2+taxonomy-"
        )
        for e in events
    )
    assert all(e.classification.engine == "learned" for e in events)
