"""What a step does, as the report, the verdict and the API read it (never from the step's id).

The engine carries a step's operation without reading it; the migration (auditor/fix/) and the
maintenance commands (auditor/maintenance/) name theirs here.
"""
from __future__ import annotations

import enum


class Operation(str, enum.Enum):
    """What a step does, independent of its id: the report, the verdict and the API read this."""

    PREFLIGHT = "preflight"                 # a check: reasons not to start
    CREATE_MASTER = "create-master"         # the session master table
    QUARANTINE_MALFORMED = "quarantine-malformed"   # text keys that are not uuids, out to the quarantine
    CONVERT_TO_UUID = "convert-to-uuid"     # ALTER COLUMN ... TYPE uuid (a rewrite)
    INDEX = "index"                         # an index on a table or a partition (CONCURRENTLY)
    INDEX_PARENT = "index-parent"           # the ON ONLY index of a partitioned table
    ATTACH_INDEX = "attach-index"           # a partition's index attached to the parent's
    BACKFILL = "backfill"                   # register sessions in the master
    ORPHANS = "orphans"                     # rows whose session nobody knows: quarantine, register, delete
    CATCHUP = "catchup"                     # backfill and orphans again, right before / after the FK
    FK_ADD = "fk-add"                       # ADD CONSTRAINT ... FOREIGN KEY (NOT VALID, or attaching)
    FK_VALIDATE = "fk-validate"             # VALIDATE CONSTRAINT
    MISSING_USERS = "missing-users"         # rows naming a user that does not exist: set NULL (recorded) or quarantined
    VERIFY = "verify"                       # a check: what the steps were to achieve is there
    BRIDGE = "bridge"                       # the cutover bridge's trigger (auditor/fix/ops/bridge.py)
    CLOSE_IDLE = "close-idle"               # maintenance: idle sessions marked ended (sessions close-idle)
    PRUNE = "prune"                         # maintenance: old sessions deleted with their rows (sessions prune)
    GATE = "gate"                           # --bridge none: stop before the FK while sessions go unregistered
