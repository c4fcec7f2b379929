"""`mention-router kafka acls|users`: the command line over shared/kafkaacl.py and shared/kafkausers.py,
run as the admin principal (MR_KAFKA_SASL_USERNAME of a super user, or one allowed to alter ACLs and
SCRAM credentials)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import IO

from shared import kafkaacl, kafkausers
from shared.errors import ConfigError
from shared.kafkaauth import authenticate
from shared.settings import DEPARTMENTS, Settings


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kafka = sub.add_parser(
        "kafka", help="Kafka security: the ACLs and SCRAM users of services and departments"
    )
    kafka_sub = kafka.add_subparsers(dest="kafka_command", required=True)
    acls = kafka_sub.add_parser(
        "acls",
        help="print the ACLs every service and department consumer needs (deny by default), or apply them",
    )
    action = acls.add_mutually_exclusive_group()
    action.add_argument("--apply", action="store_true", help="create the missing ones (idempotent)")
    action.add_argument("--remove", action="store_true", help="delete them (a department offboarded)")
    acls.add_argument(
        "--department-user",
        action="append",
        default=[],
        metavar="DEPARTMENT=USER",
        help="the user of a department's consumer (default: MR_KAFKA_DEPARTMENT_USERS); repeatable",
    )
    acls.add_argument(
        "--service-user",
        action="append",
        default=[],
        metavar="SERVICE=USER",
        help="the user of a service (default: MR_KAFKA_SERVICE_USERS); repeatable",
    )
    acls.add_argument(
        "--principal", action="append", default=[], metavar="USER", help="only this user's ACLs; repeatable"
    )
    users = kafka_sub.add_parser("users", help="SCRAM users on the broker")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    apply = users_sub.add_parser(
        "apply", help="create each user of a directory of password files (one per user) or set its password"
    )
    apply.add_argument("directory", type=Path)
    apply.add_argument(
        "--generate",
        action="store_true",
        help="first write a random password file (0600) for every user the ACLs name that has none",
    )
    users_sub.add_parser("list", help="the SCRAM users and their mechanisms")
    delete = users_sub.add_parser("delete", help="delete users (their ACLs stay: `kafka acls --remove`)")
    delete.add_argument("names", nargs="+")


def _assignments(items: list[str], known: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, user = item.partition("=")
        if key not in known or not user:
            raise ConfigError(f"expected {what}=USER with {what} one of {', '.join(known)}, got {item!r}")
        out[key] = user
    return out


def acl_settings(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings with the users given on the command line."""
    departments = dict(settings.kafka_department_users)
    departments.update(_assignments(args.department_user, DEPARTMENTS, "DEPARTMENT"))
    services = dict(settings.kafka_service_users)
    services.update(_assignments(args.service_user, kafkaacl.SERVICES, "SERVICE"))
    return settings.model_copy(
        update={"kafka_department_users": departments, "kafka_service_users": services}
    )


async def _acls(settings: Settings, args: argparse.Namespace, out: IO[str]) -> int:
    settings = acl_settings(settings, args)
    wanted = kafkaacl.bindings(settings)
    if args.principal:
        chosen = {f"User:{p}" for p in args.principal}
        wanted = [b for b in wanted if b.principal in chosen]
    if not (args.apply or args.remove):
        for b in wanted:
            out.write(b.describe() + "\n")
        return 0
    await authenticate(settings)
    if args.remove:
        removed = await kafkaacl.remove(settings, wanted)
        out.write(f"{removed} ACL(s) deleted\n")
        return 0
    created, present = await kafkaacl.apply(settings, wanted)
    for b in created:
        out.write(f"created  {b.describe()}\n")
    out.write(f"{len(created)} ACL(s) created, {len(present)} already there\n")
    return 0


async def _users(settings: Settings, args: argparse.Namespace, out: IO[str]) -> int:
    await authenticate(settings)
    if args.users_command == "list":
        for user in await kafkausers.list_users(settings):
            out.write(f"{user.name}  {', '.join(user.mechanisms)}\n")
        return 0
    if args.users_command == "delete":
        await kafkausers.delete_users(settings, args.names)
        out.write(f"deleted {', '.join(args.names)}\n")
        return 0
    if args.generate:
        made = kafkausers.generate_passwords(args.directory, kafkaacl.users(settings))
        if made:
            out.write(f"generated passwords for {', '.join(made)} in {args.directory}\n")
    passwords = kafkausers.read_passwords(args.directory)
    await kafkausers.set_passwords(settings, passwords)
    out.write(f"{len(passwords)} SCRAM user(s) set: {', '.join(passwords)}\n")
    return 0


def run(settings: Settings, args: argparse.Namespace, *, out: IO[str] | None = None) -> int:
    """Runs `kafka acls` or `kafka users ...`; the exit status."""
    out = out or sys.stdout
    if args.kafka_command == "acls":
        return asyncio.run(_acls(settings, args, out))
    return asyncio.run(_users(settings, args, out))
