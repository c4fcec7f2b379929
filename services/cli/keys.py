"""`mention-router keys create|list|revoke`: the command line over shared/apikeys.py."""

from __future__ import annotations

from typing import Any

from shared.apikeys import InvalidScope, create_key, list_keys, revoke
from shared.events import utcnow


def add_parsers(sub: Any) -> None:
    """`mention-router keys create|list|revoke`."""
    keys = sub.add_parser("keys", help="manage API keys (the database of MR_DATABASE_URL)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="make a key and print it (shown once)")
    create.add_argument("--name", required=True, help="who or what uses it, e.g. support-helpdesk")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        help="admin, push, read:<department>, write:<department> (repeatable)",
    )
    create.add_argument("--expires-in-days", type=int, help="default: never")
    keys_sub.add_parser("list", help="list the keys (never their secrets)")
    revoke_cmd = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke_cmd.add_argument("id")


def run(settings: Any, args: Any) -> int:
    import asyncio
    import json
    import sys
    from datetime import timedelta

    from shared.db import create_engine, session_factory

    async def main() -> int:
        engine = create_engine(settings.database_url)
        try:
            async with session_factory(engine)() as session:
                if args.keys_command == "create":
                    expires = (
                        utcnow() + timedelta(days=args.expires_in_days) if args.expires_in_days else None
                    )
                    try:
                        made = await create_key(
                            session, name=args.name, scopes=args.scope, created_by="cli", expires_at=expires
                        )
                    except InvalidScope as exc:
                        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
                        return 2
                    await session.commit()
                    print(made.key)  # noqa: T201
                    scopes = " ".join(made.row.scopes)
                    note = f"id {made.row.id}, scopes {scopes}: keep it, it is not shown again"
                    print(note, file=sys.stderr)  # noqa: T201
                elif args.keys_command == "list":
                    for row in await list_keys(session):
                        print(  # noqa: T201
                            json.dumps(
                                {
                                    "id": row.id,
                                    "name": row.name,
                                    "scopes": row.scopes,
                                    "created_at": row.created_at.isoformat(),
                                    "expires_at": row.expires_at.isoformat() if row.expires_at else None,
                                    "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
                                    "last_used_at": row.last_used_at.isoformat()
                                    if row.last_used_at
                                    else None,
                                }
                            )
                        )
                else:
                    revoked = await revoke(session, args.id)
                    await session.commit()
                    if revoked is None:
                        print(f"error: no key {args.id!r}", file=sys.stderr)  # noqa: T201
                        return 1
            return 0
        finally:
            await engine.dispose()

    return asyncio.run(main())
