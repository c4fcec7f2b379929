"""docs/configuration.md, generated from the `Settings` model: every setting's variable, default and
description, so the reference cannot drift from the code.

    python -m shared.configdoc            # rewrite docs/configuration.md
    python -m shared.configdoc --check    # exit 1 if it is stale (make lint)
"""

from __future__ import annotations

import argparse
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from shared.settings import REPO_ROOT, Settings

OUT = REPO_ROOT / "docs" / "configuration.md"

# Sections of the reference, by the settings' name prefixes (first match wins).
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Kafka and topics",
        ("bus", "kafka_", "topic_", "producer_", "consumer_", "max_attempts", "exactly_once"),
    ),
    ("Database", ("database_",)),
    ("Classifier", ("taxonomy_file", "classifier_")),
    ("Router, rules and alerts", ("routing_file", "router_", "rules_", "alert_")),
    ("Ingest", ("ingest_",)),
    ("API", ("api_", "embedded_", "stats_", "stream_")),
    ("Webhooks", ("webhook_",)),
    ("Metrics and logs", ("metrics_", "log_")),
)

_HEADER = """# Configuration

Every setting is an environment variable with the prefix `MR_` (pydantic-settings; lists and objects as
JSON). The taxonomy and the first routing rules are YAML files (`config/`). This page is generated from
`shared/settings.py` by `python -m shared.configdoc`; `make lint` fails when it is stale.
"""


def _default(value: Any) -> str:
    if value is None:
        return "*(unset)*"
    if isinstance(value, SecretStr):
        return "*(set)*"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, Path):
        try:
            return f"`<repo>/{value.relative_to(REPO_ROOT).as_posix()}`"
        except ValueError:
            return f"`{value}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`"
    if value == "":
        return "*(empty)*"
    # (the same page from every clone: paths inside the repository are shown relative to it)
    return f"`{str(value).replace(str(REPO_ROOT), '<repo>')}`"


def _section(name: str) -> str:
    for title, prefixes in SECTIONS:
        if name.startswith(prefixes):
            return title
    raise ValueError(f"setting {name!r} belongs to no section of shared/configdoc.py: add its prefix there")


def render() -> str:
    """The reference, from the settings' fields in their declared order, grouped into SECTIONS."""
    defaults = Settings.model_construct()  # the defaults, without reading the environment
    rows: dict[str, list[str]] = {title: [] for title, _ in SECTIONS}
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ValueError(f"setting {name!r} has no description: give its Field one in shared/settings.py")
        description = field.description.replace("|", "\\|")
        rows[_section(name)].append(
            f"| `MR_{name.upper()}` | {_default(getattr(defaults, name))} | {description} |"
        )
    out = [_HEADER]
    for title, _ in SECTIONS:
        if rows[title]:
            out += [f"## {title}\n", "| variable | default | meaning |", "|---|---|---|", *rows[title], ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.relative_to(REPO_ROOT)} is stale: run `python -m shared.configdoc`", file=sys.stderr)  # noqa: T201
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO_ROOT)}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
