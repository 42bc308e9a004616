"""What a scan produces: findings, per-check results, and the scan as a whole (the findings.json contract)."""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "info": 2}[self.value]


class Status(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass
class Finding:
    check: str
    severity: Severity
    table: str                      # schema.table, catalog spelling, unquoted
    column: str | None
    message: str
    rows: int | None = None
    keys: int | None = None
    references: str | None = None
    sample: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["severity"] = self.severity.value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Finding:
        fields = ("check", "table", "column", "message", "rows", "keys", "references")
        known: dict[str, Any] = {k: data.get(k) for k in fields}
        return cls(severity=Severity(data["severity"]), sample=list(data.get("sample") or []),
                   details=dict(data.get("details") or {}), **known)


@dataclass
class CheckResult:
    check: str
    status: Status
    seconds: float
    severity: Severity
    description: str = ""
    reason: str | None = None       # why skipped or error

    def to_dict(self) -> dict:
        out = {"check": self.check, "status": self.status.value, "seconds": round(self.seconds, 4),
               "severity": self.severity.value, "description": self.description}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class TableInventory:
    """One audited key table as the report shows it."""

    table: str
    kind: str                       # "table" or "partitioned"
    rows: int | None                # exact, counted by the scan
    bytes: int
    partitions: int
    default_partition: bool
    key_type: str
    fk_state: str                   # "none", "not valid", "valid"
    indexed: bool
    is_source: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScanResult:
    database: dict
    generated_at: str
    config: dict
    checks: list[CheckResult]
    findings: list[Finding]
    inventory: list[TableInventory] = field(default_factory=list)
    stats: dict = field(default_factory=dict)   # e.g. sessions per week for the report

    @property
    def has_errors(self) -> bool:
        return any(f.severity is Severity.ERROR for f in self.findings) or any(
            c.status is Status.ERROR for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 1 if self.has_errors else 0

    def to_dict(self) -> dict:
        return {
            "version": 1,
            "database": self.database,
            "generated_at": self.generated_at,
            "config": self.config,
            "checks": [c.to_dict() for c in self.checks],
            "findings": [f.to_dict() for f in self.findings],
            "inventory": [t.to_dict() for t in self.inventory],
            "stats": self.stats,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ScanResult:
        checks = [CheckResult(check=c["check"], status=Status(c["status"]), seconds=float(c.get("seconds") or 0),
                              severity=Severity(c.get("severity", "error")), description=c.get("description", ""),
                              reason=c.get("reason")) for c in data.get("checks", [])]
        inventory = [TableInventory(**t) for t in data.get("inventory", [])]
        return cls(database=data.get("database", {}), generated_at=data.get("generated_at", ""),
                   config=data.get("config", {}), checks=checks,
                   findings=[Finding.from_dict(f) for f in data.get("findings", [])],
                   inventory=inventory, stats=data.get("stats", {}))
