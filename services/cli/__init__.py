"""`mention-router`: the command line. It dispatches: each service's process is built by its own
composition root (`services/<name>/bootstrap.py`), the one-process default by services/embedded.py."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.errors import ConfigError
from shared.logs import setup_logging
from shared.settings import Settings

log = logging.getLogger("mention_router")

SERVICES = ("ingest", "classifier", "router", "api")


def _cmd_topics_create(settings: Settings, args: argparse.Namespace) -> None:
    from shared.settings import TopicOverride
    from shared.topics import create_topics

    overrides = dict(settings.topic_overrides)
    for option, field in ((args.partitions, "partitions"), (args.retention_ms, "retention_ms")):
        for item in option:
            name, _, value = item.partition("=")
            if not value.lstrip("-").isdigit():
                raise ConfigError(f"expected NAME=INTEGER, got {item!r}")
            current = overrides.get(name, TopicOverride())
            overrides[name] = current.model_copy(update={field: int(value)})
    settings = settings.model_copy(update={"topic_overrides": overrides})
    for state in asyncio.run(create_topics(settings)):
        print(state.describe())  # noqa: T201


def _cmd_run(args: argparse.Namespace) -> None:
    from services.embedded import EXAMPLE_SOURCES, embedded_settings, run_embedded
    from shared.signals import install_stop_signals

    settings = embedded_settings()

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        sources = None if args.no_examples else EXAMPLE_SOURCES
        await run_embedded(settings, stop=stop, sources_file=sources)

    asyncio.run(main())
    log.info("stopped")


def _cmd_sources_import(settings: Settings, path: Path) -> None:
    from services.embedded import import_sources

    created, existing = asyncio.run(import_sources(settings, path))
    print(f"{created} source(s) registered, {existing} already there")  # noqa: T201


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mention-router", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="all four services in one process (in-memory bus, SQLite, example feeds)"
    )
    run.add_argument("--no-examples", action="store_true", help="do not register the bundled example feeds")
    for name in ("ingest", "classifier", "router"):
        sub.add_parser(name, help=f"run the {name} service (Kafka and the configured database)")
    sub.add_parser("api", help="serve the REST API")
    sub.add_parser("migrate", help="bring the database schema up to date (run before the services)")
    schemas = sub.add_parser("schemas", help="write the JSON Schemas of the events on each topic")
    schemas.add_argument("--out", type=Path, default=Path("docs/schemas"))
    topics = sub.add_parser("topics", help="manage the Kafka topics")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True)
    create = topics_sub.add_parser(
        "create",
        help="create the missing topics (partitions, retention: MR_TOPIC_PARTITIONS, MR_TOPIC_RETENTION_MS, "
        "MR_TOPIC_OVERRIDES, or the options below)",
    )
    create.add_argument(
        "--partitions", action="append", default=[], metavar="TOPIC=N", help="e.g. mentions.raw=12"
    )
    create.add_argument(
        "--retention-ms", action="append", default=[], metavar="TOPIC=MS", help="e.g. mentions.dlq=2592000000"
    )
    from services.cli import classify as classifier_commands

    classifier_commands.add_parsers(sub)
    sources = sub.add_parser("sources", help="manage sources")
    sources_sub = sources.add_subparsers(dest="sources_command", required=True)
    imp = sources_sub.add_parser("import", help="register the sources listed in a YAML file")
    imp.add_argument("file", type=Path)
    from services.cli import dlq

    dlq.add_parsers(sub)
    from services.cli import keys as apikeys

    apikeys.add_parsers(sub)
    from services.cli import kafka as kafka_commands

    kafka_commands.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = Settings()
    setup_logging(settings.log_level, json_lines=settings.log_json)
    try:
        if args.command == "run":
            _cmd_run(args)
        elif args.command in SERVICES:
            # each service's composition root; this module only dispatches
            bootstrap = importlib.import_module(f"services.{args.command}.bootstrap")
            asyncio.run(bootstrap.serve(settings))
        elif args.command == "migrate":
            from shared.db import migrate

            asyncio.run(migrate(settings.database_url))
            log.info("database is at the latest schema")
        elif args.command == "schemas":
            from shared.schemas import write_schemas

            for path in write_schemas(args.out):
                print(path)  # noqa: T201
        elif args.command == "topics":
            _cmd_topics_create(settings, args)
        elif args.command == "sources":
            _cmd_sources_import(settings, args.file)
        elif args.command == "dlq":
            from services.cli import dlq

            sys.exit(dlq.run(settings, args))
        elif args.command == "keys":
            from services.cli import keys as apikeys

            sys.exit(apikeys.run(settings, args))
        elif args.command == "kafka":
            from services.cli import kafka as kafka_commands

            sys.exit(kafka_commands.run(settings, args))
        elif args.command in ("classify", "evaluate", "train"):
            from services.cli import classify as classifier_commands

            sys.exit(classifier_commands.run(settings, args))
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        sys.exit(2)
    except KeyboardInterrupt:
        pass
