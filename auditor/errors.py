"""Errors that end a command with exit code 2 and one clear line (usage, connection, configuration)."""


class AuditError(Exception):
    """A problem the user must fix before the tool can run; shown as one line, exit code 2."""

    exit_code = 2


class ConfigError(AuditError):
    """The configuration file, a flag or an environment variable is invalid."""


class ConnectionFailed(AuditError):
    """The server could not be reached or refused the login."""


class NothingToAudit(AuditError):
    """The database has no table the tool could audit."""
