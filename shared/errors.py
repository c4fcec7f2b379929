"""Error classes that carry their own policy: `retriable` decides retry or dead-letter."""

from __future__ import annotations

from typing import ClassVar


class MentionRouterError(Exception):
    retriable: ClassVar[bool] = False


class PoisonMessage(MentionRouterError):
    """A message that will never be processed as it is: it goes to the dead-letter topic."""

    retriable = False


class PayloadTooLarge(PoisonMessage):
    """A message bigger than a stage takes in: its output could never be published."""


class TransientError(MentionRouterError):
    """The infrastructure is unavailable for now (database, broker): pause and retry."""

    retriable = True


class ConfigError(MentionRouterError):
    """A configuration file or value is invalid; the message says where."""

    retriable = False


def is_transient(exc: BaseException) -> bool:
    """True when `exc` means 'try again later', not 'this message is bad'."""
    if isinstance(exc, MentionRouterError):
        return exc.retriable
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    # Imported here so that shared.errors stays importable without the drivers.
    from aiokafka.errors import KafkaError, KafkaTimeoutError
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, KafkaTimeoutError):
        return True
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False))
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)
