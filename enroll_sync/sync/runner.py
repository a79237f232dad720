"""What a worker does with a job: the batch runner.

Several tasks may run one job at once (in threads and in separate
``enroll-sync worker`` processes); each loops:

1. **claim** a batch of Pending items of one connection (``FOR UPDATE SKIP LOCKED``
   on PostgreSQL, a ``BEGIN IMMEDIATE`` transaction on SQLite) and take each
   registration's in-flight marker ``Registration.sync_lock`` (= the SyncItem id)
   unless another live job holds it. Items and registrations become In Progress.
2. **re-check and map**: a registration that is no longer Approved is Skipped; the
   connection's mapping is compiled once per connection and task
   (``mappings.check_connection``); records whose mapping has an error are Failed
   with the message and never sent.
3. **export** the rest through ``open_adapter(conn).export()`` in the adapter's batch
   size; exactly one outcome per record.
4. **record** every outcome in one transaction: SyncItem (status, payload sent, SIS
   answer, errors, SIS id; secrets scrubbed), Registration (Sync Status, last synced;
   marker released) and the student's SIS link on the connection.

While a task runs, a heartbeat thread refreshes ``SyncJob.heartbeat_at`` and the
``sync_lock_at`` of the records it holds. A task killed at any point (SIGKILL
included) stops heartbeating, and ``recovery`` takes its records back. Every item
ends Succeeded, Partial Sync, Failed or Skipped.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

from ..adapters import AdapterError, ExportRecord, ExportResult, Outcome
from ..catalog import source_field_keys
from ..config import JobSettings, job_settings
from ..db import database, executemany, is_sqlite, retrying, table, write_tx
from ..models import (ACTIVE_JOB_STATUSES, APPROVED, JOB_QUEUED, JOB_RUNNING, SKIPPED, SYNC_FAILED, SYNC_IN_PROGRESS, SYNC_PARTIAL, SYNC_PENDING,
                      SYNC_SUCCEEDED, Organization, Registration, School, Student, SyncConnection, SyncItem,
                      SyncJob, utcnow)
from ..redaction import dumps_scrubbed, scrub_text
from .export_rule import ExportContexts, map_for_export, status_for
from .jobs import PENDING_INLINE_MAX, mark_pending_in_chunks
from .links import LinkChange, forget_gone, how_linked, link_scope, record_links, sis_ids_for
from .mappings import ConnectionCheck, check_connection, mapping_stamp
from .plan import NO_MODULE
from .progress import counts_for, finish_if_done, settled_status
from .recovery import reset_stale_items

log = logging.getLogger("enroll_sync.sync")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)


@dataclass
class _Outcome:
    item_id: int
    reg_id: int
    status: str
    reason: str | None = None
    action: str | None = None
    sis_id: str | None = None
    sent: str | None = None       # JSON text, scrubbed
    response: str | None = None   # JSON text, scrubbed
    errors: list | None = None
    student_id: int | None = None
    mapping_version: int | None = None  # the mapping version it was mapped with (None: not mapped)
    link_how: str | None = None   # how the student's SIS link on the connection came about
    stale_sis_id: str | None = None  # the linked id the SIS said it no longer has


@dataclass
class _Send:
    """A record on its way to the SIS, and what happened to it so far."""

    item_id: int
    reg: Any
    record: ExportRecord
    warnings: list
    relinked_from: str | None = None  # the linked id the SIS no longer had (sent again as an insert)
    busy: int = 0                     # times the SIS asked to try again


@dataclass
class RunStats:
    claimed: int = 0
    exported: int = 0
    batches: int = 0
    finished: bool = False
    stopped: bool = False


class _Heartbeat(threading.Thread):
    """Keeps the job's heartbeat and the held records' markers fresh while a task runs."""

    def __init__(self, job_id: int, interval: float):
        super().__init__(name=f"sync-heartbeat-{job_id}", daemon=True)
        self.job_id = job_id
        self.interval = interval
        self.held: list[tuple[int, int]] = []  # (item id, registration id)
        self._halt = threading.Event()

    def run(self):
        with database.connection_context():
            while not self._halt.wait(self.interval):
                try:
                    self.beat()
                except Exception:  # a missed beat is not fatal; the next one may work
                    log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)

    def beat(self):
        # two single-statement transactions, never one holding both: a batch being
        # recorded locks its registrations and must not wait on the job row (deadlock)
        now = utcnow()
        held = list(self.held)
        SyncJob.update(heartbeat_at=now).where(SyncJob.id == self.job_id).execute()
        if held:
            mine = (Registration.id.in_([r for _, r in held])
                    & Registration.sync_lock.in_([str(i) for i, _ in held]))
            if not is_sqlite():
                # rows being recorded right now are locked and about to be released: skip them
                Reg = Registration.alias()
                mine = Registration.id.in_(Reg.select(Reg.id).where(
                    Reg.id.in_([r for _, r in held]) & Reg.sync_lock.in_([str(i) for i, _ in held]))
                    .for_update(of=Reg, skip_locked=True))
            Registration.update(sync_lock_at=now).where(mine).execute()

    def stop(self):
        self._halt.set()
        if self.is_alive():
            self.join(timeout=10)


def mapping_failure_reason(result) -> str:
    return "Not sent: " + "; ".join(p.message for p in result.errors)


def gone_reason(sis_id: str | None) -> str:
    return f"The SIS no longer had student {sis_id};"


def mapping_crash_reason(exc: BaseException) -> str:
    return (f"Not sent: the mapping could not be applied ({type(exc).__name__}); details are in the "
            f"server log.")


class JobRunner:
    """Runs one task of a job: claim, map, export, record, until nothing is left."""

    def __init__(self, app, job: SyncJob, cfg: JobSettings | None = None, stop: threading.Event | None = None):
        self.app = app
        self.job = job
        self.job_id = job.id
        self.cfg = cfg or job_settings(app)
        self.stop = stop or threading.Event()
        self.org = Organization.get_by_id(job.organization_id)
        self.source_fields = source_field_keys(self.org.id)
        self.contexts = ExportContexts.for_day()
        self._checks: dict[int, ConnectionCheck] = {}
        self._connections: dict[int, SyncConnection] = {}
        self.heartbeat = _Heartbeat(job.id, self.cfg.heartbeat)
        self.stats = RunStats()

    # -- connections and mappings (compiled once per connection)
    def connection(self, conn_id: int) -> SyncConnection | None:
        conn = self._connections.get(conn_id)
        if conn is None:
            conn = SyncConnection.get_or_none(SyncConnection.id == conn_id)
            if conn is not None:
                self._connections[conn_id] = conn
        return conn

    def check(self, conn: SyncConnection) -> ConnectionCheck:
        cached = self._checks.get(conn.id)
        if cached is not None and cached.version == mapping_stamp(conn.id):
            return cached
        check = check_connection(conn, self.app, self.source_fields)
        self._checks[conn.id] = check
        return check

    def batch_size(self, conn: SyncConnection | None) -> int:
        size = 100
        if conn is not None:
            try:
                from .connections import open_adapter
                size = int(getattr(open_adapter(conn, self.app), "batch_size", 100) or 100)
            except Exception:
                size = 100
        return max(1, size) * max(1, self.cfg.batches_per_export)

    # -- 1. claim
    def claim(self) -> tuple[int | None, list[tuple[int, int]]]:
        now = utcnow()
        cutoff = now - dt.timedelta(seconds=self.cfg.stale)
        free = Registration.sync_lock.is_null() | (Registration.sync_lock_at < cutoff)
        base = ((SyncItem.job == self.job_id) & (SyncItem.status == SYNC_PENDING) & free)
        first = (SyncItem.select(SyncItem.connection)
                 .join(Registration, on=(SyncItem.registration == Registration.id))
                 .where(base).order_by(SyncItem.id).limit(1).tuples().first())
        if first is None:
            return None, []
        conn_id = first[0]
        size = self.batch_size(self.connection(conn_id) if conn_id else None)
        conn_cond = SyncItem.connection.is_null() if conn_id is None else (SyncItem.connection == conn_id)

        def take() -> list[tuple[int, int]]:
            with write_tx():
                q = (SyncItem.select(SyncItem.id, SyncItem.registration)
                     .join(Registration, on=(SyncItem.registration == Registration.id))
                     .where(base & conn_cond).order_by(SyncItem.id).limit(size))
                if not is_sqlite():
                    q = q.for_update(of=SyncItem, skip_locked=True)  # tasks of one job take different rows
                pairs = list(q.tuples())
                if not pairs:
                    return []
                reg_ids = [r for _, r in pairs]
                # the in-flight markers (and In Progress), row by row in id order (no deadlock
                # between claims); a row another job holds is left as it is
                executemany(f'UPDATE {table(Registration)} SET "sync_lock"=?, "sync_lock_at"=?, "sync_status"=? '
                             f'WHERE "id"=? AND ("sync_lock" IS NULL OR "sync_lock_at" < ?)',
                             [(str(i), now, SYNC_IN_PROGRESS, r, cutoff)
                              for i, r in sorted(pairs, key=lambda p: p[1])])
                held = dict(Registration.select(Registration.id, Registration.sync_lock)
                            .where(Registration.id.in_(reg_ids)).tuples())
                taken = [(i, r) for i, r in pairs if held.get(r) == str(i)]
                if taken:
                    SyncItem.update(status=SYNC_IN_PROGRESS, started_at=now).where(
                        SyncItem.id.in_([i for i, _ in taken])).execute()
                return taken

        mine = retrying(take)
        if not mine:
            return conn_id, []
        self.heartbeat.held = mine
        self.stats.claimed += len(mine)
        return conn_id, mine

    # -- 2. + 3. check, map and export one claimed batch
    def process(self, conn_id: int | None, mine: list[tuple[int, int]]) -> None:
        regs = load_registrations([r for _, r in mine])
        outcomes: list[_Outcome] = []
        reroute: list[tuple[int, int, int]] = []
        to_send: list[_Send] = []
        conn = self.connection(conn_id) if conn_id else None
        check = None
        mapped: set[int] = set()
        linked = sis_ids_for([reg.student_id for reg in regs.values()], link_scope(conn)) if conn else {}
        for item_id, reg_id in mine:
            reg = regs.get(reg_id)
            if reg is None:
                continue  # deleted meanwhile: its item went with it (ON DELETE CASCADE)
            if not self.org.uses_registration_module:
                outcomes.append(_Outcome(item_id, reg_id, SKIPPED, NO_MODULE))
                continue
            if reg.status != APPROVED:
                outcomes.append(_Outcome(item_id, reg_id, SKIPPED,
                                         f"Not Approved (the registration is {reg.status}): only Approved "
                                         f"registrations are synced."))
                continue
            current = reg.school.sync_connection_id
            if current is None:
                outcomes.append(_Outcome(item_id, reg_id, SYNC_FAILED,
                                         f"{reg.school.name} has no sync connection. Set one under "
                                         f"Schools/Programs, then Retry failed."))
                continue
            if current != conn_id:
                reroute.append((item_id, reg_id, current))
                continue
            if check is None:
                check = self.check(conn)
            if check.problem:
                outcomes.append(_Outcome(item_id, reg_id, SYNC_FAILED, check.problem))
                continue
            mapped.add(item_id)
            sis_id = linked.get(reg.student_id)
            send = self.map(check, reg, item_id, sis_id)
            if isinstance(send, _Outcome):
                outcomes.append(send)
            else:
                to_send.append(send)
        if to_send:
            outcomes.extend(self.export(conn, check, to_send))
        if mapped and check is not None:
            for o in outcomes:
                if o.item_id in mapped:
                    o.mapping_version = check.mapping_version
        self.record(conn, outcomes, reroute)
        self.stats.batches += 1

    def map(self, check: ConnectionCheck, reg, item_id: int, sis_id: str | None,
            relinked_from: str | None = None) -> "_Send | _Outcome":
        """The record to send for ``reg`` (an update of ``sis_id``, or an insert), or the
        Failed outcome when its mapping has an error."""
        try:
            result = map_for_export(check.compiled, reg, self.contexts, sis_id)
        except Exception as exc:  # a bug must fail this record, not stall the job on it forever
            log.exception("mapping registration %s failed", reg.id)
            return _Outcome(item_id, reg.id, SYNC_FAILED, mapping_crash_reason(exc), stale_sis_id=relinked_from)
        if not result.ok:
            errors = [p.to_dict() for p in result.problems]
            reason = mapping_failure_reason(result)
            if relinked_from:
                reason = f"{gone_reason(relinked_from)} {reason}"
            return _Outcome(item_id, reg.id, SYNC_FAILED, reason, errors=errors, stale_sis_id=relinked_from)
        warnings = [p.to_dict() for p in result.problems]  # warnings only: the record is sent
        return _Send(item_id, reg, ExportRecord(str(reg.id), result.payload, sis_id), warnings, relinked_from)

    def export(self, conn: SyncConnection, check: ConnectionCheck, to_send: list[_Send]) -> list[_Outcome]:
        """Send the batch; a record whose linked SIS record is gone is mapped again as an
        insert and sent once more (match-before-insert relinks it); a record the SIS asks
        to try again is sent again after a bounded backoff."""
        from .connections import safe_secret_values
        secrets = safe_secret_values(conn, self.app)
        out: list[_Outcome] = []
        pending = to_send
        while pending:
            results, failure = self._send(conn, [s.record for s in pending], secrets)
            again: list[_Send] = []
            for s in pending:
                r = results.get(s.record.record_id)
                if r is not None and r.outcome == Outcome.NOT_FOUND and s.record.sis_id and not s.relinked_from:
                    resend = self.map(check, s.reg, s.item_id, None, relinked_from=s.record.sis_id)
                    (again if isinstance(resend, _Send) else out).append(resend)
                elif r is not None and r.outcome == Outcome.RETRY and s.busy < self.cfg.retry_attempts:
                    s.busy += 1
                    again.append(s)
                else:
                    out.append(self.outcome(s, r, failure, secrets))
            if any(s.busy for s in again):
                busy = max(s.busy for s in again)
                if self.stop.wait(min(self.cfg.retry_backoff * (2 ** (busy - 1)), 30.0)):
                    pass  # stopping: send what is left once more, then record the truth
            pending = again
        return out

    def _send(self, conn: SyncConnection, records: list[ExportRecord], secrets) -> tuple[dict, str | None]:
        """(record id -> ExportResult, why the whole batch failed or None)."""
        from .connections import open_adapter
        results: dict[str, ExportResult] = {}
        failure = None
        try:
            adapter = open_adapter(conn, self.app)
            for r in adapter.export(records) or ():
                if isinstance(r, ExportResult):
                    results[str(r.record_id)] = r
        except AdapterError as exc:
            failure = scrub_text(str(exc), secrets) or "The SIS refused the batch."
        except Exception as exc:
            log.exception("export through connection %s failed", conn.id)
            failure = (f"The {conn.adapter} adapter failed unexpectedly ({type(exc).__name__}); nothing is "
                       f"known to have reached the SIS. Details are in the worker log.")
        self.stats.exported += len(records)
        return results, failure

    def outcome(self, s: _Send, r: ExportResult | None, failure: str | None, secrets) -> _Outcome:
        """What one record's answer means for its Sync Status, reason and SIS link."""
        reg = s.reg
        if r is None:
            reason = failure or ("The adapter gave no answer for this record, so it may or may not have "
                                 "reached the SIS. Syncing it again is safe.")
            return _Outcome(s.item_id, reg.id, SYNC_FAILED, reason, sent=None,
                            errors=(s.warnings or []) + [{"field": None, "code": "NO_RESULT",
                                                          "message": reason, "severity": "error"}],
                            student_id=reg.student_id)
        status = status_for(r.outcome)
        errors = [{"field": e.field, "code": e.code, "message": scrub_text(e.message, secrets),
                   "severity": "error"} for e in (r.errors or [])]
        reason = scrub_text(r.message, secrets) or ("; ".join(e["message"] for e in errors) if errors else None)
        sis_id = str(r.sis_id) if r.sis_id not in (None, "") else None
        how = how_linked(r, s.record.sis_id, s.relinked_from) if r.ok and sis_id else None
        if r.outcome == Outcome.RETRY:
            reason = (f"The SIS asked to try again later {s.busy + 1} times, so the record was not sent"
                      f"{': ' + reason if reason else '.'} Retry failed sends it again.")
        elif r.outcome == Outcome.NOT_FOUND:
            reason = (f"{gone_reason(s.relinked_from or s.record.sis_id)} It could not be matched or inserted"
                      f"{': ' + reason if reason else '.'}")
        elif how and s.relinked_from:
            found = f"matched by {r.matched_by} and relinked to" if r.matched_by else "inserted it again as"
            reason = f"{gone_reason(s.relinked_from)} {found} {sis_id}." + (f" {reason}" if reason else "")
        return _Outcome(s.item_id, reg.id, status, reason, action=r.action, sis_id=sis_id,
                        sent=dumps_scrubbed(r.sent, secrets), response=dumps_scrubbed(r.response, secrets),
                        errors=((s.warnings or []) + errors) or None, student_id=reg.student_id, link_how=how,
                        stale_sis_id=s.relinked_from or (s.record.sis_id if r.outcome == Outcome.NOT_FOUND
                                                          else None))

    # -- 4. record
    def record(self, conn, outcomes: list[_Outcome], reroute: list[tuple[int, int, int]]) -> None:
        now = utcnow()
        I, R = table(SyncItem), table(Registration)
        scope = link_scope(conn)
        item_rows, reg_rows, link_changes, stale, skipped = [], [], [], [], []
        for o in outcomes:
            item_rows.append((o.status, o.reason, o.action, o.sis_id, o.sent, o.response,
                              _dumps(o.errors), o.mapping_version, now, o.item_id, SYNC_IN_PROGRESS))
            if o.status == SKIPPED:
                skipped.append(o)
                continue
            reached = o.status in (SYNC_SUCCEEDED, SYNC_PARTIAL)
            reg_rows.append((o.status, now if reached else None, o.reg_id, str(o.item_id)))
            if o.stale_sis_id and o.student_id and scope:
                stale.append((o.student_id, o.stale_sis_id))
            if reached and o.sis_id and o.student_id and scope and o.link_how:
                link_changes.append(LinkChange(self.org.id, o.student_id, scope, o.sis_id, o.link_how, o.item_id))

        # rows in registration order in every transaction, so two never wait on each other in a circle
        reg_rows.sort(key=lambda row: row[2])

        def write():
            with write_tx():
                executemany(
                    f'UPDATE {I} SET "status"=?, "reason"=?, "action"=?, "sis_id"=?, "sent"=?, "response"=?, '
                    f'"errors"=?, "mapping_version"=?, "finished_at"=? WHERE "id"=? AND "status"=?', item_rows)
                executemany(
                    f'UPDATE {R} SET "sync_status"=?, "last_synced_at"=COALESCE(?, "last_synced_at"), '
                    f'"sync_lock"=NULL, "sync_lock_at"=NULL WHERE "id"=? AND "sync_lock"=?', reg_rows)
                for student_id, gone in stale:  # the SIS said it no longer has this record
                    forget_gone(student_id, scope, gone)
                record_links(link_changes)
                for o in skipped:
                    Registration.update(sync_status=settled_status(o.reg_id, self.job_id), sync_lock=None,
                                        sync_lock_at=None).where(
                        (Registration.id == o.reg_id) & (Registration.sync_lock == str(o.item_id))).execute()
                for item_id, reg_id, new_conn in reroute:
                    # the school's connection changed since the job was created: send it through the new one
                    SyncItem.update(status=SYNC_PENDING, connection=new_conn, started_at=None).where(
                        (SyncItem.id == item_id) & (SyncItem.status == SYNC_IN_PROGRESS)).execute()
                    Registration.update(sync_status=SYNC_PENDING, sync_lock=None, sync_lock_at=None).where(
                        (Registration.id == reg_id) & (Registration.sync_lock == str(item_id))).execute()

        retrying(write)
        self.heartbeat.held = []
        SyncJob.update(heartbeat_at=now).where(SyncJob.id == self.job_id).execute()

    # -- the loop
    def run(self, requeue: Callable[[int], Any] | None = None) -> RunStats:
        now = utcnow()
        first = SyncJob.update(status=JOB_RUNNING, started_at=now, heartbeat_at=now).where(
            (SyncJob.id == self.job_id) & (SyncJob.status == JOB_QUEUED)).execute()
        if not first and not SyncJob.update(heartbeat_at=now).where(
                (SyncJob.id == self.job_id) & (SyncJob.status == JOB_RUNNING)).execute():
            self.stats.finished = True  # completed meanwhile
            return self.stats
        self.heartbeat.start()
        try:
            if first and self.job.total > PENDING_INLINE_MAX:
                mark_pending_in_chunks(self.job_id)
            while True:
                if self.stop.is_set():
                    self.stats.stopped = True
                    if requeue is not None:
                        requeue(self.job_id)  # the next worker carries on at once
                    break
                conn_id, mine = self.claim()
                if mine:
                    self.process(conn_id, mine)
                    continue
                counts = counts_for([self.job_id])[self.job_id]
                pending, in_progress = counts.get(SYNC_PENDING, 0), counts.get(SYNC_IN_PROGRESS, 0)
                if not pending and not in_progress:
                    self.stats.finished = finish_if_done(self.job_id)
                    break
                if reset_stale_items(self.cfg.stale, job_id=self.job_id):
                    continue
                if not pending:
                    break  # live tasks hold the rest; the last of them completes the job
                # pending records are held by another job (or a task mid-claim): wait for them
                self.stop.wait(self.cfg.poll)
        finally:
            self.heartbeat.stop()
        log.info("sync job %s: this task sent %d record(s) in %d batch(es)%s", self.job_id, self.stats.exported,
                 self.stats.batches, "; the job is complete" if self.stats.finished else "")
        return self.stats


def load_registrations(ids: list[int]) -> dict[int, SimpleNamespace]:
    """What a batch needs of its registrations, students and schools, in one query
    (plain rows: building model instances costs more than the mapping itself)."""
    rows = (Registration.select(
        Registration.id, Registration.form_id, Registration.grade, Registration.school_year, Registration.status,
        Registration.approved_at, Registration.answers, Registration.student,
        Student.schoolmint_id, School.name, School.school_number, School.sync_connection)
        .join(Student, on=(Registration.student == Student.id))
        .switch(Registration).join(School, on=(Registration.school == School.id))
        .where(Registration.id.in_(ids)).tuples())
    out = {}
    for (rid, form_id, grade, year, status, approved_at, answers, student_id, sm_id,
         school_name, school_number, conn_id) in rows:
        if isinstance(approved_at, str):
            approved_at = Registration.approved_at.python_value(approved_at)
        out[rid] = SimpleNamespace(
            id=rid, form_id=form_id, grade=grade, school_year=year, status=status, approved_at=approved_at,
            answers=answers, student_id=student_id,
            student=SimpleNamespace(schoolmint_id=sm_id),
            school=SimpleNamespace(name=school_name, school_number=school_number, sync_connection_id=conn_id))
    return out


def run_job(app, job_id: int, *, stop: threading.Event | None = None,
            requeue: Callable[[int], Any] | None = None) -> RunStats:
    """Run one task of job ``job_id`` to the end (needs an app context and a
    database connection). Safe to run many times and in parallel."""
    job = SyncJob.get_or_none(SyncJob.id == job_id)
    if job is None or job.status not in ACTIVE_JOB_STATUSES:
        return RunStats(finished=True)
    return JobRunner(app, job, stop=stop).run(requeue)
