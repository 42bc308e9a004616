"""The registry of checks. Every module in this package that defines a check must be listed here
(a test fails otherwise). Ids are a contract: findings.json and the report use them."""
from __future__ import annotations

from .base import Check
from .conflicting_session_users import ConflictingSessionUsers
from .duplicate_foreign_keys import DuplicateForeignKeys
from .fk_candidate import FkCandidate
from .invalid_indexes import InvalidIndexes
from .key_type_mismatch import KeyTypeMismatch
from .malformed_session_ids import MalformedSessionIds
from .missing_master_rows import MissingMasterRows
from .noncanonical_session_ids import NoncanonicalSessionIds
from .null_session_ids import NullSessionIds
from .orphaned_fk_rows import OrphanedFkRows
from .orphaned_session_ids import OrphanedSessionIds
from .orphaned_user_ids import OrphanedUserIds
from .partition_fk_drift import PartitionFkDrift
from .unconstrained_fk import UnconstrainedFk
from .unindexed_fk_columns import UnindexedFkColumns
from .unindexed_foreign_keys import UnindexedForeignKeys
from .unvalidated_fk import UnvalidatedFk

REGISTRY: tuple[type[Check], ...] = (
    MissingMasterRows,
    OrphanedSessionIds,
    MalformedSessionIds,
    NoncanonicalSessionIds,
    NullSessionIds,
    ConflictingSessionUsers,
    OrphanedUserIds,
    UnconstrainedFk,
    UnvalidatedFk,
    KeyTypeMismatch,
    UnindexedFkColumns,
    # schema-wide: any table, not only session tables
    OrphanedFkRows,
    FkCandidate,
    PartitionFkDrift,
    InvalidIndexes,
    DuplicateForeignKeys,
    UnindexedForeignKeys,
)

CHECK_IDS = tuple(c.id for c in REGISTRY)


def all_checks() -> list[Check]:
    return [cls() for cls in REGISTRY]
