"""yumai-audit: audit and repair session-id referential integrity in PostgreSQL.

The public API lives in `yumai_audit.api` (`scan`, `write_scan`, ...); the CLI in `yumai_audit.cli`.
"""
__version__ = "0.1.0"
