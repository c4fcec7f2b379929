"""`mention-router dlq list|replay`: the command line over shared/dlq.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import IO

from shared.dlq import DeadLetter, read_dead_letters, replay, select
from shared.settings import Settings


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser("dlq", help="list the dead-letter topic's entries, and replay them after a fix")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = dlq_sub.add_parser("list", help="the entries: where each came from and why it failed")
    listing.add_argument("--limit", type=int, default=None, metavar="N", help="only the N most recent")
    listing.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    replaying = dlq_sub.add_parser(
        "replay", help="publish entries again to the topic they came from (without the mr_* headers)"
    )
    which = replaying.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--offset",
        action="append",
        default=[],
        metavar="PARTITION:OFFSET",
        help="an entry as `list` shows it (OFFSET alone where only one partition has it); repeatable",
    )
    which.add_argument("--all", action="store_true", help="every entry (after the filters below)")
    replaying.add_argument(
        "--dry-run", action="store_true", help="show what would be replayed, publish nothing"
    )
    for parser in (listing, replaying):
        parser.add_argument("--stage", help="only entries dead-lettered by this stage (classifier, router)")
        parser.add_argument("--error-type", help="only entries with this error type (e.g. PoisonMessage)")


def run(settings: Settings, args: argparse.Namespace, *, out: IO[str] | None = None) -> int:
    """Runs `dlq list` or `dlq replay`; the exit status."""
    out = out or sys.stdout
    letters = asyncio.run(read_dead_letters(settings))
    if args.dlq_command == "list":
        chosen = select(letters, stage=args.stage, error_type=args.error_type)
        if args.limit is not None:
            chosen = chosen[-args.limit :] if args.limit > 0 else []
        if args.json:
            json.dump([d.summary() for d in chosen], out, indent=1)
            out.write("\n")
        else:
            _table(chosen, out)
            out.write(f"{len(chosen)} of {len(letters)} dead letter(s) in {settings.topic_dlq}\n")
        return 0
    chosen = select(letters, entries=args.offset, stage=args.stage, error_type=args.error_type)
    published = asyncio.run(replay(settings, chosen, dry_run=args.dry_run))
    for d in chosen:
        verb = "would replay" if args.dry_run else "replayed"
        out.write(f"{verb} {d.entry} key={d.key} to {d.original_topic} ({d.error_type})\n")
    if args.dry_run:
        out.write(
            f"dry run: {len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'} selected, none published\n"
        )
    else:
        out.write(f"{published} message(s) published\n")
    return 0


def _table(letters: Sequence[DeadLetter], out: IO[str]) -> None:
    rows = [
        (
            d.entry,
            d.key[:36],
            d.stage,
            d.error_type,
            d.failed_at.strftime("%Y-%m-%d %H:%M:%S") if d.failed_at else "",
            f"{d.original_topic}[{d.original_partition}]@{d.original_offset}",
            d.error.replace("\n", " ")[:100],
        )
        for d in letters
    ]
    header = ("ENTRY", "KEY", "STAGE", "ERROR TYPE", "FAILED AT (UTC)", "ORIGINAL", "ERROR")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        out.write("  ".join([*cells, str(row[-1])]).rstrip() + "\n")
