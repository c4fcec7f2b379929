"""docs/configuration.md is generated from the Settings model: every setting described, none missing."""

from __future__ import annotations

import pytest

from shared import configdoc
from shared.settings import Settings


def test_the_committed_reference_is_current() -> None:
    assert configdoc.OUT.read_text(encoding="utf-8") == configdoc.render(), "run `python -m shared.configdoc`"


def test_every_setting_has_a_row_with_its_variable_and_default() -> None:
    text = configdoc.render()
    for name in Settings.model_fields:
        assert f"| `MR_{name.upper()}` |" in text
    assert "| `MR_API_PORT` | `8000` |" in text
    assert "| `MR_DATABASE_URL` | `sqlite+aiosqlite:///<repo>/var/mention-router.db` |" in text


def test_a_setting_without_a_description_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    field = Settings.model_fields["api_port"]
    monkeypatch.setattr(field, "description", None)
    with pytest.raises(ValueError, match="'api_port' has no description"):
        configdoc.render()
