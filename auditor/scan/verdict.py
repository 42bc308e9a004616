"""The verdict: where a database stands on the way to the session_master migration, and what counts.

Pure functions over a scan (`ScanResult`), a plan (`Plan.to_dict()`), the configuration's
acceptances (`[[accept]]`) and severity overrides, and an optional baseline scan. Nothing here
connects to a database, prints or reads files.

States, before the migration:
- **Ready**: no error finding (accepted ones aside) and every check ran;
- **Ready once fix runs**: every error finding left is repaired by a step of the plan;
- **Needs a decision**: some error finding no step repairs (each is listed with its choices).
After it (every key table has a validated foreign key to the master):
- **Migrated, bridge on**: the cutover bridge is still installed, so a new row naming a session the
  master lacks is registered rather than refused; the verdict says where, how many it registered in
  the last day, and the way to done (`bridge_steps`); error findings left are listed as debt;
- **Migrated and clean**: the bridge is gone and no error finding is left (warnings may remain);
- **Migrated**: the bridge is gone, error findings are left: the debt, each listed (accepted ones with
  their reason).

A step says which checks it repairs (`repairs`, check ids); a finding is repaired by a step that
declares its check and is about its table (the step's `target`, else the tables it names; a
partition counts as its table). For foreign-key findings the step (or the step it follows) must also
name the referenced table, so the session FK of a table never passes for its user FK.

What counts (for the exit code): an error finding (after the `[severity]` overrides) that is not
accepted and, with a baseline, not known to it (same check, table and column, and no more rows or
keys than the baseline had); and a check that could not finish.
"""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple, Protocol

from ..config import Acceptance
from ..model import CheckResult, Finding, ScanResult, Severity, Status

FK_CHECKS = ("unconstrained_fk", "unvalidated_fk")


class DeclaresRepairs(Protocol):
    """What a step says it repairs and where (an engine `Step` has these, a saved step `StepRepairs`)."""

    @property
    def repairs(self) -> Sequence[str]: ...        # ids of the checks whose findings it repairs

    @property
    def target(self) -> str: ...                   # the audited table it is about (a partition's parent)

    @property
    def column(self) -> str: ...                   # the column of `target` it is about, "" for any

    @property
    def changes(self) -> Sequence[str]: ...        # the tables whose rows or definition it may change


class StepRepairs(NamedTuple):
    """A step's `DeclaresRepairs` facts read from a plan's step dict (plan.json, `Plan.to_dict()`)."""

    repairs: tuple[str, ...]
    target: str
    column: str
    changes: tuple[str, ...]

    @classmethod
    def from_dict(cls, step: dict) -> StepRepairs:
        return cls(repairs=tuple(step.get("repairs") or ()), target=str(step.get("target") or ""),
                   column=str(step.get("column") or ""), changes=tuple(step.get("changes") or ()))


def step_repairs(step: DeclaresRepairs, finding: Finding, parents: dict[str, str] | None = None) -> bool:
    """Whether `step` repairs `finding`: it declares the finding's check, its target or a table it changes
    is the finding's table (a partition counts as its parent, `parents`), and its column, when both
    name one, is the finding's. The one rule the report, the verdict and `apply`'s after-check all use."""
    if finding.check not in step.repairs:
        return False
    parents = parents or {}
    touched = {step.target, *step.changes}
    touched |= {parents.get(t, t) for t in touched}
    if finding.table not in touched:
        return False
    return not step.column or not finding.column or step.column == finding.column


class State(str, enum.Enum):
    READY = "ready"
    READY_ONCE_FIX = "ready-once-fix"
    NEEDS_DECISION = "needs-decision"
    MIGRATED_BRIDGE_ON = "migrated-bridge-on"
    MIGRATED = "migrated"
    MIGRATED_CLEAN = "migrated-clean"

    @property
    def label(self) -> str:
        return {"ready": "Ready", "ready-once-fix": "Ready once fix runs", "needs-decision": "Needs a decision",
                "migrated-bridge-on": "Migrated, bridge on", "migrated": "Migrated",
                "migrated-clean": "Migrated and clean"}[self.value]

    @property
    def symbol(self) -> str:
        """The mark a Markdown summary puts before the label."""
        return {"ready": "✅", "ready-once-fix": "🛠️", "needs-decision": "❌", "migrated-bridge-on": "🌉",
                "migrated": "⚠️", "migrated-clean": "✅"}[self.value]

    @property
    def tone(self) -> str:
        """How a report colours it: ok, warning (on the way: a step to run, a bridge to retire, debt), error."""
        if self is State.NEEDS_DECISION:
            return "error"
        return "ok" if self in (State.READY, State.MIGRATED_CLEAN) else "warning"

    @property
    def good(self) -> bool:
        return self is not State.NEEDS_DECISION


ACCEPT = "accept it: an [[accept]] entry in yumai-audit.toml with check, table, column and a reason"
# What the tool offers for a finding that no step of the plan repairs, by check.
CHOICES: dict[str, tuple[str, ...]] = {
    "conflicting_session_users": (
        "keep the user the backfill chose (the session's earliest row) and " + ACCEPT,
        "correct the rows' user_id by hand, then scan again"),
    "orphaned_user_ids": (
        "fix --include users --missing-users null (sets them NULL; each original recorded in "
        "yumai_audit.nulled_user_ids, can be undone)",
        "fix --include users --missing-users quarantine (moves the rows to yumai_quarantine)",
        "create the missing users, then scan again"),
    "unconstrained_fk": ("fix --include users (user columns) or fix --include schema (implied references); "
                         "see the plan's notes for why nothing is planned",),
    "unvalidated_fk": ("fix --include users, or remove the rows that block VALIDATE (the plan's notes name them)",),
    "partition_fk_drift": ("fix --include schema",),
}


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def article(noun: str) -> str:
    """"a" or "an" before `noun` (a session, an order_id value)."""
    return "an" if noun[:1].lower() in "aeiou" else "a"


@dataclass(frozen=True)
class Bridge:
    """The cutover bridge as the scan found it (its stats: where it is installed, its last day's count)."""

    tables: tuple[str, ...]
    last_day: int
    noun: str = "session"          # what one key value is called: "session", "device_id value"
    label: str = "session id"      # what the key column is called: "session id", "device_id"

    @classmethod
    def from_stats(cls, stats: dict | None) -> Bridge | None:
        b = (stats or {}).get("bridge") or {}
        tables = tuple(str(t) for t in b.get("tables") or ())
        if not tables:
            return None
        return cls(tables, int(b.get("registered_last_day") or 0), b.get("noun") or "session",
                   b.get("label") or "session id")

    @property
    def accepts(self) -> str:
        """What it still accepts, in one sentence."""
        return (f"a new row of {', '.join(self.tables)} naming {article(self.noun)} {self.noun} the master lacks "
                f"(a made-up {self.label} too) registers that {self.noun} instead of failing.")

    def to_dict(self) -> dict:
        return {"tables": list(self.tables), "registered_last_day": self.last_day}


def bridge_steps(bridge: Bridge) -> tuple[str, ...]:
    """The way from "Migrated, bridge on" to done."""
    noun = bridge.noun
    return (f"deploy the application's registration: it inserts each new {noun} into the master before the "
            f"{noun}'s first row",
            f"watch yumai-audit bridge status until it registers 0 {noun}s an hour",
            f"run yumai-audit bridge remove: without the bridge, a row naming an unknown {noun} fails, as the "
            "foreign keys mean it to")


@dataclass(frozen=True)
class Judged:
    """One finding as the verdict sees it."""

    finding: Finding
    steps: tuple[str, ...] = ()          # ids of the planned steps that repair it
    accepted: Acceptance | None = None
    baseline: str | None = None          # "new" | "known" (with a baseline)

    @property
    def severity(self) -> Severity:
        return self.finding.severity

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    @property
    def counts(self) -> bool:
        """Whether it counts for the exit code of a scan."""
        return self.is_error and self.accepted is None and self.baseline != "known"

    @property
    def undecided(self) -> bool:
        """An error finding nobody has decided about and no step repairs."""
        return self.is_error and self.accepted is None and not self.steps

    @property
    def choices(self) -> tuple[str, ...]:
        f = self.finding
        offered = CHOICES.get(f.check, ())
        if f.check == "unconstrained_fk" and f.severity is Severity.WARNING:
            offered = ("fix --include schema",)
        return offered + (() if ACCEPT in " ".join(offered) else (ACCEPT,))

    def to_dict(self) -> dict:
        return {"check": self.finding.check, "table": self.finding.table, "column": self.finding.column,
                "severity": self.severity.value, "steps": list(self.steps), "counts": self.counts,
                "accepted": self.accepted.to_dict() if self.accepted else None, "baseline": self.baseline,
                "choices": list(self.choices) if self.undecided else []}


@dataclass(frozen=True)
class Verdict:
    state: State
    findings: tuple[Judged, ...]
    failed_checks: tuple[CheckResult, ...] = ()
    warnings: tuple[str, ...] = ()       # stale or expired acceptances
    gone: tuple[Finding, ...] = ()       # baseline findings no longer found
    has_baseline: bool = False
    has_plan: bool = False
    bridge: Bridge | None = None         # the cutover bridge, while it is installed

    @property
    def to_done(self) -> tuple[str, ...]:
        """With the bridge on: the way to done, in order."""
        return bridge_steps(self.bridge) if self.bridge is not None else ()

    @property
    def label(self) -> str:
        return self.state.label

    @property
    def undecided(self) -> list[Judged]:
        return [j for j in self.findings if j.undecided]

    @property
    def accepted(self) -> list[Judged]:
        return [j for j in self.findings if j.accepted is not None]

    @property
    def counted(self) -> list[Judged]:
        return [j for j in self.findings if j.counts]

    @property
    def debt(self) -> list[Judged]:
        """After the migration: the error findings left (accepted ones included)."""
        return [j for j in self.findings if j.is_error]

    def exit_code(self, *, planned: bool = False) -> int:
        """1 when a finding counts (see the module) or a check could not finish. `planned`: a dry run of
        `fix`, where findings that a step of the plan repairs do not count (applying it repairs them)."""
        counted = [j for j in self.counted if not (planned and j.steps)]
        return 1 if counted or self.failed_checks else 0

    @property
    def headline(self) -> str:
        errors = [j for j in self.findings if j.is_error]
        n_acc = len(self.accepted)
        acc = f"; {n_acc} accepted" if n_acc else ""
        if self.state is State.READY:
            return "No error finding stands in the way of the cutover" + acc + "."
        if self.state is State.READY_ONCE_FIX:
            repaired = sum(1 for j in errors if j.steps and j.accepted is None)
            return (f"Every error finding is repaired by a step of the plan ({repaired} "
                    f"finding{'s' if repaired != 1 else ''}){acc}: run fix --apply.")
        if self.state is State.NEEDS_DECISION:
            n = len(self.undecided) + len(self.failed_checks)
            return (f"{n} error finding{'s' if n != 1 else ''} no step of the plan repairs: "
                    "each needs a person's decision" + acc + ".")
        if self.state is State.MIGRATED_CLEAN:
            return "Every key table has a validated foreign key to the master, and no error finding is left."
        left = len(self.debt)
        debt = (f"{left} error finding{'s are' if left != 1 else ' is'} left as debt"
                + (f" ({n_acc} accepted)" if n_acc else ""))
        if self.state is State.MIGRATED_BRIDGE_ON and self.bridge is not None:
            return (f"Every key table has a validated foreign key to the master, but the cutover bridge is still on: "
                    f"{self.bridge.accepts} It registered {plural(self.bridge.last_day, self.bridge.noun)} "
                    "in the last 24 hours. " + (debt[0].upper() + debt[1:] + "." if left
                                                 else "No error finding is left."))
        return f"Every key table has a validated foreign key to the master; {debt}."

    def to_dict(self) -> dict:
        return {"state": self.state.value, "label": self.label, "headline": self.headline,
                "bridge": self.bridge.to_dict() if self.bridge is not None else None,
                "to_done": list(self.to_done),
                "findings": [j.to_dict() for j in self.findings],
                "failed_checks": [c.check for c in self.failed_checks], "warnings": list(self.warnings),
                "gone": [f.to_dict() for f in self.gone] if self.has_baseline else None}


# --- severity overrides ------------------------------------------------------------------------------

def apply_severity(result: ScanResult, overrides) -> ScanResult:
    """The scan with `[severity]` overrides applied to its findings and checks (a new object)."""
    table = dict(overrides or ())
    if not table:
        return result
    findings = [dataclasses.replace(f, severity=Severity(table[f.check])) if f.check in table else f
                for f in result.findings]
    findings.sort(key=lambda f: (f.severity.rank, f.check, f.table, f.column or ""))
    checks = [dataclasses.replace(c, severity=Severity(table[c.check])) if c.check in table else c
              for c in result.checks]
    return dataclasses.replace(result, findings=findings, checks=checks)


# --- matching ----------------------------------------------------------------------------------------

def partition_parents(result: ScanResult) -> dict[str, str]:
    parts = (result.stats or {}).get("partitions") or []
    return {str(p.get("partition")): str(p.get("table")) for p in parts if isinstance(p, dict)}


def _ref_table(finding: Finding) -> str | None:
    if finding.check not in FK_CHECKS or not finding.references:
        return None
    return finding.references.rsplit(".", 1)[0]


def repairing_steps(finding: Finding, plan: dict | None, parents: dict[str, str] | None = None) -> list[dict]:
    """The steps of `plan` (dicts, as plan.json has them) that declare they repair this finding.

    A step with a `target` (yumai-audit's) is matched by `step_repairs`, the one rule the
    report, the verdict and `apply`'s after-check share (check in `repairs`, the finding's table its
    target or a table it changes, the same column). A saved step without one (an older plan.json) is
    matched on the tables it names; for an FK finding the step, or a step it follows, must name the
    referenced table."""
    if not plan:
        return []
    parents = parents or {}
    steps = list(plan.get("steps") or [])
    by_id = {s.get("id"): s for s in steps}
    ref = _ref_table(finding)

    def tables(step: dict) -> set[str]:
        return {parents.get(str(t), str(t)) for t in (step.get("tables") or [])}

    out = []
    for s in steps:
        repairs = s.get("repairs") or ()
        if finding.check not in repairs:
            continue
        if "target" in s:
            if step_repairs(StepRepairs.from_dict(s), finding, parents):
                out.append(s)
            continue
        deps = [by_id[d] for d in s.get("depends_on") or () if d in by_id]
        about = tables(s) - ({ref} if ref else set())
        if not about:   # e.g. the FK on a partitioned parent: its tables are the referenced one
            about = set().union(*(tables(d) for d in deps if set(d.get("repairs") or ()) & set(repairs)))
        if finding.table not in about:
            continue
        if ref is not None and ref not in tables(s).union(*(tables(d) for d in deps)):
            continue
        out.append(s)
    return out


# --- acceptances and the baseline ----------------------------------------------------------------------

def acceptances_from(config: dict | None) -> tuple[Acceptance, ...]:
    """The `[[accept]]` entries a findings.json carries in its config (as the scan had them)."""
    out = []
    for a in (config or {}).get("accept") or []:
        if isinstance(a, dict) and a.get("check") and a.get("reason"):
            until = a.get("until")
            try:
                until = date.fromisoformat(until) if isinstance(until, str) else None
            except ValueError:
                until = None
            out.append(Acceptance(str(a["check"]), str(a["reason"]), a.get("table"), a.get("column"), until))
    return tuple(out)


def acceptance_for(finding: Finding, accept, today: date) -> Acceptance | None:
    return next((a for a in accept if not a.expired(today) and a.matches(finding.check, finding.table, finding.column)),
                None)


def acceptance_warnings(findings, accept, today: date) -> list[str]:
    out = []
    for a in accept:
        if a.expired(today):
            out.append(f"acceptance of {a.label} expired on {a.until}: it no longer applies")
        elif not any(a.matches(f.check, f.table, f.column) for f in findings):
            out.append(f"acceptance of {a.label} matches no finding any more: remove it from yumai-audit.toml")
    return out


def _identity(f: Finding) -> tuple:
    return (f.check, f.table, f.column)


def baseline_status(finding: Finding, baseline: ScanResult) -> str:
    """"known" when the baseline has the same check, table and column with at least as many rows and keys."""
    for old in baseline.findings:
        if _identity(old) == _identity(finding) and (finding.rows or 0) <= (old.rows or 0) \
                and (finding.keys or 0) <= (old.keys or 0):
            return "known"
    return "new"


# --- the verdict ---------------------------------------------------------------------------------------

def is_migrated(result: ScanResult) -> bool:
    """Every key table has a validated foreign key to the master (from the scan's inventory)."""
    return bool(result.inventory) and all(t.fk_state == "valid" for t in result.inventory)


def judge(result: ScanResult, plan: dict | None = None, *, accept=(), baseline: ScanResult | None = None,
          today: date | None = None) -> Verdict:
    """The verdict of `result` (severity overrides already applied: `apply_severity`)."""
    today = today or date.today()
    accept = tuple(accept or ())
    parents = partition_parents(result)
    judged = []
    for f in result.findings:
        steps = tuple(s["id"] for s in repairing_steps(f, plan, parents))
        judged.append(Judged(f, steps, acceptance_for(f, accept, today),
                             baseline_status(f, baseline) if baseline is not None else None))
    failed = tuple(c for c in result.checks if c.status is Status.ERROR)
    gone: tuple[Finding, ...] = ()
    if baseline is not None:
        now = {_identity(f) for f in result.findings}
        gone = tuple(f for f in baseline.findings if _identity(f) not in now)
    errors = [j for j in judged if j.is_error]
    bridge = Bridge.from_stats(result.stats)
    if is_migrated(result):
        if bridge is not None:
            state = State.MIGRATED_BRIDGE_ON
        else:
            state = State.MIGRATED if errors or failed else State.MIGRATED_CLEAN
    elif failed or any(j.undecided for j in judged):
        state = State.NEEDS_DECISION
    elif any(j.accepted is None for j in errors):
        state = State.READY_ONCE_FIX
    else:
        state = State.READY
    return Verdict(state, tuple(judged), failed, tuple(acceptance_warnings(result.findings, accept, today)), gone,
                   baseline is not None, plan is not None, bridge if state is State.MIGRATED_BRIDGE_ON else None)


def judge_with_config(result: ScanResult, config, plan: dict | None = None, baseline: ScanResult | None = None,
                      today: date | None = None) -> Verdict:
    return judge(result, plan, accept=config.accept, baseline=baseline, today=today)


def summary_line(v: Verdict) -> str:
    """The first line of the terminal summary."""
    parts = [f"Verdict: {v.label}. {v.headline}"]
    return " ".join(parts)


def summary_lines(v: Verdict, *, repaired: bool = False) -> list[str]:
    """What the terminal shows about the verdict beyond its first line; `repaired`: also each error
    finding a step of the plan repairs, with the steps (`fix`'s dry run)."""
    lines = []
    if repaired:
        for j in v.findings:
            if j.is_error and j.steps and j.accepted is None:
                f = j.finding
                lines.append(f"  repaired by the plan: {f.check} on {f.table}{'.' + f.column if f.column else ''}: "
                             f"{', '.join(j.steps)}")
    kinds: dict[tuple[str, ...], list[Judged]] = {}    # the same choices are listed once, under their findings
    for j in v.undecided:
        kinds.setdefault(j.choices, []).append(j)
    for offered, group in kinds.items():
        for j in group:
            f = j.finding
            lines.append(f"  needs a decision: {f.check} on {f.table}{'.' + f.column if f.column else ''}: {f.message}")
        lines += [f"    - {c}" for c in offered]
    for c in v.failed_checks:
        lines.append(f"  needs a decision: {c.check} could not be verified: {c.reason}; run it again "
                     "(a longer --timeout)")
    if v.to_done:
        lines.append("  the way to done:")
        lines += [f"    {i}. {step}" for i, step in enumerate(v.to_done, 1)]
    for j in v.accepted:
        f = j.finding
        reason = j.accepted.reason if j.accepted is not None else ""   # v.accepted: the judged with one
        lines.append(f"  accepted: {f.check} on {f.table}{'.' + f.column if f.column else ''}: {reason}")
    if v.has_baseline:
        new = sum(1 for j in v.findings if j.baseline == "new")
        known = sum(1 for j in v.findings if j.baseline == "known")
        lines.append(f"  baseline: {new} new, {known} known, {len(v.gone)} gone")
    lines += [f"  warning: {w}" for w in v.warnings]
    return lines
