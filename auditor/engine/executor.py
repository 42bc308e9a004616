"""Runs a plan's steps against the database: the very objects the planner built and the script shows.

Live-database manners: statements that could queue writers run under `lock_timeout` and are retried
with backoff; batches and VALIDATE run without statement_timeout; each step's start and end go to
`yumai_audit.journal`; one apply at a time per database (advisory lock). Every step is guarded, so a
run killed at any moment is resumed by the next one: done steps are skipped, and a step that was cut
off was rolled back by PostgreSQL (or, for CONCURRENTLY, left an invalid index of ours that the
step drops and builds again).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from ..connection import Target, connect, server_pid, set_local
from ..errors import AuditError, ConnectionEnded, DidNotFinish, GateClosed, connection_ended, ending_error, first_line
from .lag import LagTimeout, Throttle
from .plan import Plan
from .steps import Block, Kind, Query, Step, run_settings, step_block
from .waits import Watcher, bound_session

JOURNAL = ("yumai_audit", "journal")
ADVISORY_KEY = 0x79756D6169  # "yumai"
RETRYABLE = (pgerrors.LockNotAvailable, pgerrors.DeadlockDetected)
# a guard written for a later state (a table not created yet, a key not yet converted to uuid): not done
# what an on-demand step's outcome says when no step needed it (Step.on_demand)
ON_DEMAND = "on demand: it runs only if a later step finds a row violating the foreign key"
MISSING = (pgerrors.UndefinedTable, pgerrors.UndefinedColumn, pgerrors.UndefinedObject, pgerrors.UndefinedFunction,
           pgerrors.DatatypeMismatch)

Progress = Callable[[str], None]
StepHook = Callable[[Step, psycopg.Connection], None]
ResultHook = Callable[[Step, psycopg.Cursor], None]


class ConcurrentApply(AuditError):
    """Another `fix --apply` holds the database."""


class PreflightFailed(AuditError):
    """A precondition step found the database not ready for the plan (version, privileges, leftovers)."""


class StepFailed(DidNotFinish):
    """A step failed; it was rolled back, earlier steps stay done, a rerun resumes."""


class LockBusy(StepFailed):
    """A step could not take its locks within `lock_timeout`, every try; nothing of it was changed."""


@dataclass
class StepOutcome:
    step: str
    outcome: str              # "done", "skipped" (already done), "failed", "problems" (a check), "unneeded"
                              # (an on-demand step no later step needed)
    seconds: float = 0.0
    rows: int = 0
    tries: int = 0
    detail: str = ""

    def to_dict(self) -> dict:
        return {"step": self.step, "outcome": self.outcome, "seconds": round(self.seconds, 3),
                "rows": self.rows, "tries": self.tries, "detail": self.detail}


@dataclass
class ApplyResult:
    plan: Plan
    outcomes: list[StepOutcome] = field(default_factory=list)
    nothing_to_do: bool = False
    interrupted: list[str] = field(default_factory=list)   # steps an earlier run started and never ended
    problems: list[str] = field(default_factory=list)      # what the verify step still found
    before: object | None = None                           # ScanResult before / after (set by the API)
    after: object | None = None
    verdict: object | None = None                          # auditor.verdict.Verdict of `after` (set by the API)
    started_at: str = ""
    finished_at: str = ""
    replication: dict = field(default_factory=dict)          # WAL written, worst replica lag (auditor/engine/lag.py)

    @property
    def ok(self) -> bool:
        return not self.problems and all(o.outcome != "failed" for o in self.outcomes)

    @property
    def changed(self) -> list[str]:
        return [o.step for o in self.outcomes if o.outcome == "done"]

    def to_dict(self) -> dict:
        return {"started_at": self.started_at, "finished_at": self.finished_at, "ok": self.ok,
                "nothing_to_do": self.nothing_to_do, "interrupted_earlier": self.interrupted,
                "problems": self.problems, "steps": [o.to_dict() for o in self.outcomes],
                "replication": self.replication, "plan": self.plan.to_dict()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def evaluate_guard(conn: psycopg.Connection, step: Step, settings: dict[str, str] | None = None) -> bool:
    """Whether the step is already done (a guard over a table that does not exist yet: not done);
    `settings`: local to the guard's transaction."""
    if step.guard is None:
        return False
    try:
        with conn.transaction():
            set_local(conn, settings)
            row = conn.execute(step.guard).fetchone()
            return row is not None and bool(row[0])
    except MISSING:
        return False
    except RETRYABLE as exc:
        raise _guard_busy(step, exc) from None


def runs(step: Step) -> bool:
    """Whether a step counts as pending work when its guard says not done: not a check or gate, and not an
    on-demand step (it runs when a pending step needs it)."""
    return not step.kind.inspects and not step.on_demand


def _guard_busy(step: Step, exc: BaseException) -> StepFailed:
    return StepFailed(f"cannot tell whether step {step.id} is done: {first_line(exc)} (another session holds a "
                      "lock on its table); nothing was changed: run again when the database is quieter")


def guard_true(guard: Query) -> sql.Composed:
    """The guard as a boolean expression (a guard is one row of one boolean; NULL is not done). A scalar
    subquery, not EXISTS: EXISTS would plan the guard for its first row (engine/guards.py says why not)."""
    return sql.SQL("COALESCE(({}), false)").format(guard)


def evaluate_guards(conn: psycopg.Connection, plan: Plan, settings: dict[str, str] | None = None,
                    only: Callable[[Step], bool] | None = None) -> dict[str, bool]:
    """Each step's guard (checks and gates have none); `only`: those steps alone."""
    return {s.id: evaluate_guard(conn, s, settings) for s in plan.steps
            if not s.kind.inspects and (only is None or only(s))}


def run_check(conn: psycopg.Connection, step: Step, settings: dict[str, str] | None = None) -> list[str]:
    with conn.transaction():
        set_local(conn, settings)
        return [str(r[0]) for s in step.statements for r in conn.execute(s).fetchall()]


def refuse_if_running(conn: psycopg.Connection, *, always: bool = False) -> None:
    """Raise ConcurrentApply when another apply holds this database's advisory lock (`always`: the
    caller has just failed to take it, so raise even if the holder is gone by now)."""
    row = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND pid <> pg_backend_pid()",
        (ADVISORY_KEY >> 32, ADVISORY_KEY & 0xFFFFFFFF)).fetchone()
    if row is None and not always:
        return
    who = f" (server process {row[0]})" if row else ""
    raise ConcurrentApply(f"another yumai-audit fix --apply is running on this database{who}; "
                          "wait for it to finish, then run again")


def journal_ddl() -> tuple[sql.Composable, ...]:
    """The journal's schema and table (also what a logical subscriber creates: auditor/fix/replication.py)."""
    schema, table = JOURNAL
    return (sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)),
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, run_started_at timestamptz NOT NULL, "
                    "step text NOT NULL, started_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
                    "finished_at timestamptz, outcome text, rows bigint, tries int, detail text)").format(
                sql.Identifier(schema, table)))


class Executor:
    def __init__(self, target: Target, plan: Plan, *, progress: Progress | None = None,
                 before_first_change: Callable[[list[str]], object] | None = None,
                 step_hook: StepHook | None = None, results: ResultHook | None = None,
                 command: str = "fix --apply", max_tries: int = 6, backoff: float = 0.25, fresh: bool = False):
        """`results`: called with the cursor of a transactional step's last statement, inside its
        transaction (a maintenance command counts what each batch did); `command`: what the messages
        tell the user to run again. `fresh`: the plan's `done` flags were evaluated just now, by the same
        run (they stand in for the evaluation up front when some step is pending and no backup is to be
        taken; each step's guard is evaluated right before it all the same)."""
        self.target = target
        self.plan = plan
        self.say = progress or (lambda _m: None)
        self.before_first_change = before_first_change
        self.step_hook = step_hook
        self.results = results
        self.command = command
        self.max_tries = max_tries
        self.backoff = backoff
        self.fresh = fresh
        self.watcher = Watcher(target, self.say)   # what a step waits for, and the bound of CONCURRENTLY
        self._gate_watched = False                 # the run's first gate has watched the writes
        self._last_sweep: float | None = None      # when a gate last swept
        self.current: Step | None = None           # the step in progress (what a lost connection undid)
        # the journal's end of the step in progress, written in its (last) transaction: done and journaled at once
        self._end_inside: Callable[[psycopg.Connection, int], None] | None = None
        # between batches: no standby or logical slot further behind than --max-replica-lag (engine/lag.py)
        self.throttle = Throttle(plan.options.max_replica_lag, plan.options.wait_timeout, self.say, command)

    # session ------------------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        # one server session for the whole run (refused through a transaction pooler), reset when closed
        return connect(self.target, autocommit=True, session=self.command,
                       application_name="yumai-audit " + self.command.removesuffix(" --apply"))

    def _open(self) -> psycopg.Connection:
        conn = self._connect()
        for setting in run_settings(conn.info.server_version):
            conn.execute(setting)
        bound_session(conn, self.plan.options.lock_timeout)   # guards, checks and the journal too
        # the server's pid, not libpq's (a pooler sends its own): the watcher watches and cancels this one
        self.pid = server_pid(conn)
        return conn

    def _lock_run(self, conn: psycopg.Connection) -> None:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_KEY,)).fetchone()
        if row is not None and row[0]:
            return
        refuse_if_running(conn, always=True)

    # journal ------------------------------------------------------------------------------------
    def _ensure_journal(self, conn) -> list[str]:
        schema, table = JOURNAL
        for statement in journal_ddl():
            conn.execute(statement)
        rows = conn.execute(sql.SQL(
            "UPDATE {} SET outcome = 'interrupted', finished_at = clock_timestamp() "
            "WHERE finished_at IS NULL RETURNING step").format(sql.Identifier(schema, table))).fetchall()
        return [r[0] for r in rows]

    def _journal_start(self, conn, step: Step) -> int:
        return conn.execute(sql.SQL("INSERT INTO {} (run_started_at, step) VALUES (%s, %s) RETURNING id").format(
            sql.Identifier(*JOURNAL)), (self.run_started, step.id)).fetchone()[0]

    def _start_unless_done(self, conn, step: Step) -> int | None:
        """The step's guard and, when it says not done, the step's journal entry, in one statement (one
        round trip, one commit): the entry is committed before the step starts, so that a run killed
        during the step leaves it unfinished there. None: already done (no entry)."""
        if step.guard is None:
            return self._journal_start(conn, step)
        query = sql.SQL("INSERT INTO {} (run_started_at, step) SELECT {}, {} WHERE NOT {} RETURNING id").format(
            sql.Identifier(*JOURNAL), sql.Literal(self.run_started), sql.Literal(step.id), guard_true(step.guard))
        try:
            row = conn.execute(query).fetchone()
        except MISSING:    # the guard reads what does not exist yet: not done
            return self._journal_start(conn, step)
        except RETRYABLE as exc:
            raise _guard_busy(step, exc) from None
        return None if row is None else int(row[0])

    def _journal_end(self, conn, entry: int, outcome: StepOutcome) -> None:
        conn.execute(sql.SQL("UPDATE {} SET finished_at = clock_timestamp(), outcome = %s, rows = %s, tries = %s, "
                             "detail = %s WHERE id = %s").format(sql.Identifier(*JOURNAL)),
                     (outcome.outcome, outcome.rows, outcome.tries, outcome.detail, entry))

    # steps --------------------------------------------------------------------------------------
    def block(self, step: Step) -> Block:
        """What this step sends: the very block `fix --sql` writes (steps.step_block)."""
        return step_block(step, self.plan.options.lock_timeout, self.plan.options.batch_size)

    def _once(self, conn, step: Step) -> tuple[int, bool]:
        """One attempt: the step's block, in one transaction when transactional. Returns rows, and whether
        it was the last batch of a batched step (a walk: its `until` says so; else: a short batch)."""
        block = self.block(step)
        rows = 0
        last = True
        pid = self.pid
        if block.transactional:
            with conn.transaction(), self.watcher.watch(pid, step.id):
                for stmt in block.statements:
                    cur = conn.execute(stmt)
                    rows += max(cur.rowcount, 0)   # SET's and LOCK's rowcount is -1
                if block.batched:
                    rows = max(cur.rowcount, 0)    # a batch is measured by its last statement
                    last = (bool(conn.execute(block.until).fetchone()[0]) if block.until is not None
                            else rows < block.repeat_below)
                if self.results is not None:
                    self.results(step, cur)
                if self.step_hook is not None:
                    self.step_hook(step, conn)
                if last and self._end_inside is not None:
                    self._end_inside(conn, rows)
        else:
            # CONCURRENTLY waits for older transactions, which lock_timeout cannot bound: the watcher does
            try:
                with self.watcher.watch(pid, step.id, cancel_after=self.plan.options.wait_timeout) as wait:
                    try:
                        for stmt in block.statements:
                            conn.execute(stmt)
                    except pgerrors.QueryCanceled:
                        if not wait.cancelled:
                            raise
                        raise StepFailed(
                            f"step {step.id}: cancelled after waiting {wait.longest:.0f}s (--wait-timeout "
                            f"{self.plan.options.wait_timeout:g}) for {wait.line()}; end or commit that "
                            f"transaction, then run {self.command} again (the invalid index left behind is dropped and "
                            "built again)") from None
            finally:
                if not conn.closed and not conn.broken:
                    bound_session(conn, self.plan.options.lock_timeout)
            if self.step_hook is not None:
                self.step_hook(step, conn)
        return rows, last

    def _with_retries(self, conn, step: Step, outcome: StepOutcome) -> tuple[int, bool]:
        for attempt in range(1, self.max_tries + 1):
            outcome.tries += 1
            try:
                return self._once(conn, step)
            except RETRYABLE as exc:
                held = self.watcher.last
                who = f", waiting for {held.line()}" if held is not None and held.blockers else ""
                if attempt == self.max_tries:
                    raise LockBusy(
                        f"step {step.id}: could not take its {step.lock.label} lock after {attempt} tries "
                        f"({first_line(exc)}{who}); nothing of this step was changed: run {self.command} again "
                        "when the database is quieter") from None
                wait = self.backoff * 2 ** (attempt - 1)
                self.say(f"    {step.id}: lock busy ({first_line(exc)}{who}); retrying in {wait:.2f}s")
                time.sleep(wait)
        return 0, True

    def _run_step(self, conn, step: Step, outcome: StepOutcome) -> None:
        if self.block(step).batched:
            batch = 0
            while True:
                try:
                    self.throttle.between_batches(conn, step.id)
                except LagTimeout as exc:
                    raise StepFailed(str(exc)) from None
                n, last = self._with_retries(conn, step, outcome)
                batch += 1
                outcome.rows += n
                if n:
                    self.say(f"    {step.id}: batch {batch}, {outcome.rows} rows so far")
                # the end of the walk, or a short batch, ends the step: what live traffic adds meanwhile
                # (behind a walk's position) is the catch-ups' work
                if last:
                    break
        else:
            outcome.rows = self._with_retries(conn, step, outcome)[0]

    def _gate(self, conn, step: Step, result: ApplyResult, label: str) -> None:
        """A gate. The run's first gate sweeps (its statements after the first), then watches the writes
        for `gate_window` seconds; every gate then measures (its first statement). A count: sweep again
        (nothing is lost) and stop (GateClosed) with the step's own `stop_message`."""
        sweep = dataclasses.replace(step, statements=step.statements[1:], kind=Kind.CHANGE)
        outcome = StepOutcome(step.id, "done")
        entry = self._journal_start(conn, step)
        started = time.monotonic()
        if not self._gate_watched and sweep.statements:
            self._with_retries(conn, sweep, outcome)
            self._last_sweep = time.monotonic()
            window = self.plan.options.gate_window
            self.say(f"{label}: watching the application's writes for {window:g}s (--gate-window): "
                     "does it register its new sessions?")
            time.sleep(window)
        self._gate_watched = True
        with conn.transaction():
            count = int(conn.execute(step.statements[0]).fetchone()[0] or 0)
        seconds = time.monotonic() - self._last_sweep if self._last_sweep is not None else None
        outcome.rows = count
        if count:
            if sweep.statements:
                self._with_retries(conn, sweep, outcome)
            outcome.outcome = "stopped"
            outcome.detail = (step.stop_message(count, seconds) if step.stop_message is not None else
                              f"gate {step.id}: {count} problem{'s' if count != 1 else ''} counted; the run stops here")
        self._last_sweep = time.monotonic()
        outcome.seconds = time.monotonic() - started
        self._journal_end(conn, entry, outcome)
        result.outcomes.append(outcome)
        if count:
            raise GateClosed(outcome.detail)
        self.say(f"{label}: every session written meanwhile was registered by the application")

    def run(self) -> ApplyResult:
        result = self.result = ApplyResult(plan=self.plan, started_at=_now())
        self.run_started = datetime.now(timezone.utc)
        self._gate_watched = False
        self._last_sweep = None
        self.current = None
        conn = self._open()
        try:
            self._lock_run(conn)
            try:
                self._run(conn, result)
            except (AuditError, psycopg.Error) as exc:
                if connection_ended(exc, conn):
                    raise ConnectionEnded(self._ended_line(result, exc)) from None
                raise
            finally:
                if self.throttle.start_position is not None and not conn.closed and not conn.broken:
                    self.throttle.finish(conn)
                    result.replication = self.throttle.summary.to_dict()
                if not conn.closed and not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_KEY,))
        finally:
            conn.close()
            self.watcher.close()
        result.finished_at = _now()
        return result

    def _step(self, conn, step: Step, label: str, result: ApplyResult, *, guarded: bool = True) -> None:
        """One step: its guard and journal entry (`guarded` False: an on-demand step that a failed key needs,
        known not done), its batches or transaction with retries, its journal end."""
        entry = self._start_unless_done(conn, step) if guarded else self._journal_start(conn, step)
        if entry is None:
            result.outcomes.append(StepOutcome(step.id, "skipped", detail="already done"))
            self.say(f"{label}: already done")
            return
        self.say(f"{label}: {step.description}")
        self.current = step
        outcome = StepOutcome(step.id, "done")
        started = time.monotonic()
        ended = False

        def end_inside(conn: psycopg.Connection, rows: int, entry: int = entry, outcome: StepOutcome = outcome,
                       started: float = started, batched: bool = self.block(step).batched) -> None:
            nonlocal ended
            final = StepOutcome(outcome.step, outcome.outcome, time.monotonic() - started,
                                outcome.rows + rows if batched else rows, outcome.tries)
            self._journal_end(conn, entry, final)
            ended = True

        self._end_inside = end_inside if step.transactional else None
        try:
            try:
                self._run_step(conn, step, outcome)
            except pgerrors.ForeignKeyViolation as exc:
                if not step.repaired_by:
                    raise
                # the key found rows its on-demand catch-up repairs (written since the steps before it): that
                # step now, then this one again (once)
                self.say(f"    {step.id}: {self.target.scrub(first_line(exc))}; running "
                         f"{', '.join(step.repaired_by)} first, then {step.id} again")
                self._end_inside = None
                for other in step.repaired_by:
                    result.outcomes = [o for o in result.outcomes if o.step != other]
                    self._step(conn, self.plan.step(other), f"    {other} (on demand)", result, guarded=False)
                self.current = step
                self._end_inside = end_inside if step.transactional else None
                self._run_step(conn, step, outcome)
        except (StepFailed, psycopg.Error) as exc:
            outcome.outcome = "failed"
            outcome.seconds = time.monotonic() - started
            outcome.detail = self.target.scrub(first_line(exc))
            result.outcomes.append(outcome)
            if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                self._journal_end(conn, entry, outcome)
            if isinstance(exc, StepFailed) or connection_ended(exc, conn):
                raise
            raise StepFailed(f"step {step.id} failed: {outcome.detail}; it was rolled back, earlier steps "
                             f"stay done: fix the cause and run {self.command} again") from None
        finally:
            self._end_inside = None
        outcome.seconds = time.monotonic() - started
        if not ended:
            self._journal_end(conn, entry, outcome)
        result.outcomes.append(outcome)
        self.current = None
        rows = f", {outcome.rows} rows" if outcome.rows else ""
        self.say(f"    {step.id}: done in {outcome.seconds:.1f}s{rows}")

    def _ended_line(self, result: ApplyResult, exc: BaseException) -> str:
        """What a run whose connection ended did, and that the next run resumes (one line)."""
        reason = self.target.scrub(first_line(ending_error(exc)))
        finished = [o.step for o in result.outcomes if o.outcome == "done"]
        earlier = sum(1 for o in result.outcomes if o.outcome == "skipped")
        if not finished and self.current is None:
            return (f"the connection to the server ended before the first change ({reason}); nothing was changed: "
                    f"run {self.command} again when the server answers")
        where = f"during step {self.current.id}" if self.current is not None else "between two steps"
        done = f"{len(finished)} step(s) finished in this run" + (f" ({', '.join(finished)})" if finished else "")
        undone = ("the step in progress was rolled back by the server" if self.current is None
                  or self.current.transactional else "the index build in progress left an invalid index of ours, "
                  "which the next run drops and builds again")
        return (f"the connection to the server ended {where} ({reason}): {done}, {earlier} were done before; "
                f"{undone}, so the database is consistent (every step is all or nothing): run {self.command} "
                "again when the server answers, it resumes there")

    def _run(self, conn, result: ApplyResult) -> None:
        steps = self.plan.steps
        total = len(steps)
        for step in steps:
            if step.precondition:
                problems = run_check(conn, step)
                if problems:
                    raise PreflightFailed(f"{step.id}: " + "; ".join(problems))
        # what is pending: the backup's tables, or nothing to do. Every step's guard is evaluated again
        # right before it, so a fresh plan's flags may stand in, unless they would skip the run or the backup
        # (a step undone since the plan would then be missed)
        done = self.plan.done if self.fresh and self.before_first_change is None else {}
        pending = [s for s in steps if runs(s) and not done.get(s.id, False)] if done else []
        if not pending:
            # an on-demand step's guard (a read of its whole table) would count for nothing here
            done = evaluate_guards(conn, self.plan, only=runs)
            pending = [s for s in steps if runs(s) and not done[s.id]]
        if not pending:
            result.nothing_to_do = True
            result.problems = [p for s in steps if s.kind is Kind.CHECK and not s.precondition
                               for p in run_check(conn, s)]
            self.say("nothing to do: every step is already done; the database was not changed")
            return
        self.throttle.start(conn)   # the WAL position before the first change
        if self.before_first_change is not None:
            # before anything is written, the journal included: a failed backup leaves no trace
            # with what an on-demand step they may need could change
            tables = sorted({t for s in pending for t in s.changes}
                            | {t for s in pending for other in s.repaired_by for t in self.plan.step(other).changes})
            self.before_first_change(tables)
        result.interrupted = self._ensure_journal(conn)
        if result.interrupted:
            self.say(f"resuming: an earlier run stopped during {', '.join(result.interrupted)}")
        for number, step in enumerate(steps, 1):
            label = f"[{number}/{total}] {step.id}"
            if step.kind is Kind.CHECK:
                if step.precondition:
                    continue
                problems = run_check(conn, step)
                result.problems.extend(problems)
                result.outcomes.append(StepOutcome(step.id, "problems" if problems else "done",
                                                   detail="; ".join(problems)))
                self.say(f"{label}: " + ("; ".join(problems) if problems else "ok"))
                continue
            if step.kind is Kind.GATE:
                try:
                    self._gate(conn, step, result, label)
                except psycopg.Error as exc:
                    raise StepFailed(f"step {step.id} failed: {self.target.scrub(first_line(exc))}; nothing of "
                                     f"it stays half-done: fix the cause and run {self.command} again") from None
                continue
            if step.on_demand:
                result.outcomes.append(StepOutcome(step.id, "unneeded", detail=ON_DEMAND))
                self.say(f"{label}: not run now ({ON_DEMAND})")
                continue
            self._step(conn, step, label, result)
