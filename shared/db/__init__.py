"""The database layer: ORM rows, engines, migrations."""

from shared.db.engine import create_engine, insert_ignore, migrate, session_factory
from shared.db.models import (
    ActivityRow,
    AssignmentRow,
    Base,
    CorrectionRow,
    FingerprintRow,
    IdempotencyKeyRow,
    MentionRow,
    MentionTopicRow,
    OutboxRow,
    ReplyRow,
    RuleAuditRow,
    RuleSetRow,
    SeenEntryRow,
    SourceRow,
)

__all__ = [
    "ActivityRow",
    "AssignmentRow",
    "Base",
    "CorrectionRow",
    "FingerprintRow",
    "IdempotencyKeyRow",
    "MentionRow",
    "MentionTopicRow",
    "OutboxRow",
    "ReplyRow",
    "RuleAuditRow",
    "RuleSetRow",
    "SeenEntryRow",
    "SourceRow",
    "create_engine",
    "insert_ignore",
    "migrate",
    "session_factory",
]
