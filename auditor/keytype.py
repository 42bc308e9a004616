"""The key type: the SQL type the master's key has, and every key column is compared, converted and
referenced in. It follows the source table's key column (uuid, bigint, integer, smallint); a master that
exists already decides it; a text source key takes uuid or bigint when every non-empty value parses as
one (read from the data by `context.audit_context`).

A column can hold the key when it has the key type, an integer type where the key is an integer (an FK
from int to bigint, or back, needs no rewrite: both are in the btree integer family), or text holding the
key in text form (tested, quarantined where malformed, converted with `USING btrim(col)::<type>`).
"""
from __future__ import annotations

from dataclasses import dataclass

INTEGER_TYPNAMES = ("int2", "int4", "int8")
_RANGES = {"int2": 2 ** 15, "int4": 2 ** 31, "int8": 2 ** 63}
# What every integer input function accepts in all supported versions (16+ also takes 0x1f and 1_000:
# those count as malformed here, on every version, so that the scan and the fix agree everywhere).
INTEGER_INPUT_PATTERN = r"^[+-]?[0-9]+$"
# What PostgreSQL's uuid input accepts: 32 hex digits, optionally in braces, with an optional hyphen
# after any group of four digits (src/backend/utils/adt/uuid.c, string_to_uuid).
UUID_INPUT_PATTERN = r"^(\{[0-9A-Fa-f]{4}(-?[0-9A-Fa-f]{4}){7}\}|[0-9A-Fa-f]{4}(-?[0-9A-Fa-f]{4}){7})$"
# Characters trimmed from both ends of a text key before parsing.
TRIM_CHARS = " \t\r\n"


@dataclass(frozen=True)
class KeyType:
    name: str        # as SQL spells it: uuid, bigint, integer, smallint
    typname: str     # pg_type.typname: uuid, int8, int4, int2

    @property
    def is_uuid(self) -> bool:
        return self.typname == "uuid"

    @property
    def is_integer(self) -> bool:
        return self.typname in INTEGER_TYPNAMES

    @property
    def bounds(self) -> tuple[int, int]:
        """The smallest and largest value of an integer key type."""
        half = _RANGES[self.typname]
        return -half, half - 1

    @property
    def end(self) -> str:
        """The largest value, as text (the backfill's mark for a walk that read its last key)."""
        return "ffffffff-ffff-ffff-ffff-ffffffffffff" if self.is_uuid else str(self.bounds[1])

    @property
    def stored(self) -> str:
        """The type the tool's own tables keep keys in (positions, the bridge's log): bigint for every integer
        key (it holds them all), else the key type."""
        return "bigint" if self.is_integer else self.name

    def native(self, typname: str) -> bool:
        """A column of `typname` holds the key as it is (no conversion): the same type, or an integer
        type for an integer key (referenced as it is, whatever its width)."""
        return typname == self.typname or (self.is_integer and typname in INTEGER_TYPNAMES)


UUID = KeyType("uuid", "uuid")
BIGINT = KeyType("bigint", "int8")
KEY_TYPES = {k.typname: k for k in (UUID, BIGINT, KeyType("integer", "int4"), KeyType("smallint", "int2"))}


def of_typname(typname: str) -> KeyType | None:
    """The key type a column of `typname` gives the master (None: text or a type no key can have)."""
    return KEY_TYPES.get(typname)
