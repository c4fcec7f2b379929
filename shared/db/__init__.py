"""The database layer: ORM rows, engines, migrations."""

from shared.db.engine import create_engine, insert_ignore, migrate, session_factory
from shared.db.models import (
    AssignmentRow,
    Base,
    FingerprintRow,
    IdempotencyKeyRow,
    MentionRow,
    MentionTopicRow,
    SeenEntryRow,
    SourceRow,
)

__all__ = [
    "AssignmentRow",
    "Base",
    "FingerprintRow",
    "IdempotencyKeyRow",
    "MentionRow",
    "MentionTopicRow",
    "SeenEntryRow",
    "SourceRow",
    "create_engine",
    "insert_ignore",
    "migrate",
    "session_factory",
]
