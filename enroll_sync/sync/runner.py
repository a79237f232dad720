"""What a worker does with a job: the batch runner.

Several tasks may run one job at once (in threads and in separate
``enroll-sync worker`` processes); each loops:

1. **claim** a chunk of Pending items of one connection and take each registration's
   in-flight marker ``Registration.sync_lock`` (= the SyncItem id) unless another live
   job holds it: one ``UPDATE ... RETURNING`` on PostgreSQL (``FOR UPDATE SKIP LOCKED``
   inside), three statements in one ``BEGIN IMMEDIATE`` transaction on SQLite. Items and
   registrations become In Progress.
2. **re-check and map**: a registration that is no longer Approved is Skipped; the
   connection's mapping is compiled once per connection and task
   (``mappings.check_connection``); records whose mapping has an error are Failed
   with the message and never sent.
3. **export** the rest through ``open_adapter(conn).export()`` in the adapter's batch
   size; exactly one outcome per record.
4. **record** every outcome in one transaction: SyncItem (status, payload sent, SIS
   answer, errors, SIS id; secrets scrubbed), Registration (Sync Status, last synced;
   marker released) and the student's SIS link on the connection.

The steps are pipelined, so the SIS always has work: while one chunk is on its way to
the SIS (an exporter thread), the task claims, loads and maps the next one (and asks the
adapter to do its look-ups for it, ``SISAdapter.prepare``), and a writer thread records
the chunk before. At most one chunk is claimed ahead of the one being sent; a cancelled
job's chunk that was claimed ahead is not sent (its records are Skipped).

While a task runs, a heartbeat thread refreshes ``SyncJob.heartbeat_at`` and the
``sync_lock_at`` of the records it holds (every chunk claimed and not yet recorded). A
task killed at any point (SIGKILL included) stops heartbeating, and ``recovery`` takes
its records back. Every item ends Succeeded, Partial Sync, Failed or Skipped.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

from ..adapters import AdapterError, ExportRecord, ExportResult, Outcome
from ..catalog import source_field_keys
from ..config import JobSettings, job_settings
from ..db import database, execute_values, executemany, fetch, is_sqlite, retrying, table, write_tx
from ..models import (ACTIVE_JOB_STATUSES, APPROVED, JOB_CANCELLED, JOB_QUEUED, JOB_RUNNING, SKIPPED, SYNC_FAILED, SYNC_IN_PROGRESS, SYNC_PARTIAL, SYNC_PENDING,
                      SYNC_SUCCEEDED, Organization, Registration, School, Student, SyncConnection, SyncItem,
                      SyncJob, SyncTask, utcnow)
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
class _Chunk:
    """One claimed chunk on its way through the pipeline: claimed, mapped, sent, recorded."""

    conn: Any
    mine: list                       # (item id, registration id) claimed
    outcomes: list                   # _Outcome: Skipped / Failed before sending, then the answers
    reroute: list                    # (item id, registration id, new connection id)
    to_send: list                    # _Send
    check: Any = None
    mapped: set | None = None        # item ids mapped with check's mapping
    dead: bool = False               # a stage failed: leave it In Progress for recovery


CANCELLED_REASON = "Not sent: the sync was cancelled."


@dataclass
class RunStats:
    claimed: int = 0
    exported: int = 0
    batches: int = 0
    finished: bool = False
    stopped: bool = False


class _Heartbeat(threading.Thread):
    """Keeps the job's heartbeat, this task's ``SyncTask`` row and the held records'
    markers fresh while a task runs."""

    def __init__(self, job_id: int, interval: float):
        super().__init__(name=f"sync-heartbeat-{job_id}", daemon=True)
        self.job_id = job_id
        self.interval = interval
        self.held: list[tuple[int, int]] = []  # (item id, registration id)
        self.token = uuid.uuid4().hex
        self._halt = threading.Event()

    def start(self):
        SyncTask.create(job=self.job_id, token=self.token)  # alive from now on
        super().start()

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
        SyncTask.update(heartbeat_at=now).where(SyncTask.token == self.token).execute()
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
        try:
            SyncTask.delete().where(SyncTask.token == self.token).execute()
        except Exception:  # recovery forgets a task row that stopped beating anyway
            log.warning("could not remove the task row of job %s", self.job_id, exc_info=True)


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
        self._held: dict[int, int] = {}  # item id -> registration id, claimed and not yet recorded
        self._held_lock = threading.Lock()

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
        """Take the next chunk of Pending items of one connection (and their registrations'
        markers); returns (connection id, [(item id, registration id)])."""
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
        take = self._take_sqlite if is_sqlite() else self._take_postgres
        mine = retrying(lambda: take(conn_id, size, now, cutoff))
        if not mine:
            return conn_id, []
        self._hold(mine)
        self.stats.claimed += len(mine)
        return conn_id, mine

    def _take_postgres(self, conn_id, size, now, cutoff) -> list[tuple[int, int]]:
        """One statement: pick the items (``SKIP LOCKED``: tasks of one job take different
        rows), lock their registrations in id order (no deadlock between claims), take the
        markers that are free (a row another job holds is left as it is), and mark the
        items whose marker was taken In Progress."""
        I, R = table(SyncItem), table(Registration)
        conn_sql = 'i."connection_id" IS NULL' if conn_id is None else 'i."connection_id" = %s'
        sql = (
            f'WITH picked AS (SELECT i."id", i."registration_id" FROM {I} i JOIN {R} r ON r."id" = i."registration_id" '
            f'WHERE i."job_id" = %s AND i."status" = %s AND {conn_sql} '
            f'AND (r."sync_lock" IS NULL OR r."sync_lock_at" < %s) '
            f'ORDER BY i."id" LIMIT %s FOR UPDATE OF i SKIP LOCKED), '
            f'free AS (SELECT r."id" FROM {R} r WHERE r."id" IN (SELECT "registration_id" FROM picked) '
            f'AND (r."sync_lock" IS NULL OR r."sync_lock_at" < %s) ORDER BY r."id" FOR UPDATE OF r SKIP LOCKED), '
            f'marked AS (UPDATE {R} r SET "sync_lock" = CAST(p."id" AS TEXT), "sync_lock_at" = %s, '
            f'"sync_status" = %s FROM picked p WHERE r."id" = p."registration_id" '
            f'AND r."id" IN (SELECT "id" FROM free) RETURNING p."id" AS item_id) '
            f'UPDATE {I} i SET "status" = %s, "started_at" = %s FROM marked m WHERE i."id" = m.item_id '
            f'RETURNING i."id", i."registration_id"')
        params = [self.job_id, SYNC_PENDING, *([] if conn_id is None else [conn_id]), cutoff, size, cutoff,
                  now, SYNC_IN_PROGRESS, SYNC_IN_PROGRESS, now]
        with write_tx():
            return sorted(tuple(row) for row in database.execute_sql(sql, params).fetchall())

    def _take_sqlite(self, conn_id, size, now, cutoff) -> list[tuple[int, int]]:
        """Three statements in one ``BEGIN IMMEDIATE`` transaction (SQLite has one writer)."""
        I, R = table(SyncItem), table(Registration)
        free = Registration.sync_lock.is_null() | (Registration.sync_lock_at < cutoff)
        conn_cond = SyncItem.connection.is_null() if conn_id is None else (SyncItem.connection == conn_id)
        with write_tx():
            pairs = list(SyncItem.select(SyncItem.id, SyncItem.registration)
                         .join(Registration, on=(SyncItem.registration == Registration.id))
                         .where((SyncItem.job == self.job_id) & (SyncItem.status == SYNC_PENDING) & free & conn_cond)
                         .order_by(SyncItem.id).limit(size).tuples())
            if not pairs:
                return []
            values = ",".join("(?, ?)" * 1 for _ in pairs)
            rows = fetch(
                f'UPDATE {R} SET "sync_lock" = m.lock, "sync_lock_at" = ?, "sync_status" = ? '
                f'FROM (SELECT column1 AS reg, column2 AS lock FROM (VALUES {values})) AS m '
                f'WHERE {R}."id" = m.reg AND ({R}."sync_lock" IS NULL OR {R}."sync_lock_at" < ?) '
                f'RETURNING {R}."id", {R}."sync_lock"',
                [now, SYNC_IN_PROGRESS, *(v for i, r in pairs for v in (r, str(i))), cutoff])
            held = dict(rows)
            taken = [(i, r) for i, r in pairs if held.get(r) == str(i)]
            if taken:
                fetch(f'UPDATE {I} SET "status" = ?, "started_at" = ? WHERE "id" IN ({",".join("?" * len(taken))})',
                      [SYNC_IN_PROGRESS, now, *(i for i, _ in taken)])
            return taken

    def _hold(self, pairs: list[tuple[int, int]]) -> None:
        with self._held_lock:
            self._held.update(pairs)
            self.heartbeat.held = list(self._held.items())

    def _release(self, pairs: list[tuple[int, int]]) -> None:
        with self._held_lock:
            for item_id, _ in pairs:
                self._held.pop(item_id, None)
            self.heartbeat.held = list(self._held.items())

    # -- 2. + 3. check, map and export one claimed chunk
    def process(self, conn_id: int | None, mine: list[tuple[int, int]]) -> None:
        """Map, send and record one claimed chunk, one step after the other (the pipeline
        in ``run`` does the same steps in three threads)."""
        chunk = self.prepare(conn_id, mine)
        self.send_chunk(chunk)
        self.record_chunk(chunk)

    def prepare(self, conn_id: int | None, mine: list[tuple[int, int]]) -> _Chunk:
        """Load, re-check and map a claimed chunk: what to send, and the outcomes already
        known (Skipped, Failed by its mapping, rerouted)."""
        regs = load_registrations([r for _, r in mine])
        conn = self.connection(conn_id) if conn_id else None
        chunk = _Chunk(conn, mine, [], [], [], mapped=set())
        outcomes, reroute, to_send = chunk.outcomes, chunk.reroute, chunk.to_send
        check = None
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
            chunk.mapped.add(item_id)
            send = self.map(check, reg, item_id, linked.get(reg.student_id))
            if isinstance(send, _Outcome):
                outcomes.append(send)
            else:
                to_send.append(send)
        chunk.check = check
        return chunk

    def look_up(self, chunk: _Chunk) -> None:
        """The adapter's look-ups for a mapped chunk (its own pipeline stage: they wait on
        the SIS while the task maps the next chunk and the exporter sends the one before)."""
        if chunk.to_send and chunk.conn is not None:
            self._prepare_export(chunk.conn, [s.record for s in chunk.to_send])

    def _prepare_export(self, conn: SyncConnection, records: list[ExportRecord]) -> None:
        """Let the adapter do its look-ups for these records now, while the previous chunk
        is on its way (``SISAdapter.prepare``); a failure here is the export's to report."""
        from .connections import open_adapter
        try:
            open_adapter(conn, self.app).prepare(records)
        except Exception:
            log.info("preparing an export through connection %s failed; the export looks up itself",
                     conn.id, exc_info=True)

    def send_chunk(self, chunk: _Chunk) -> None:
        """Export what the chunk has to send (nothing when the job was cancelled after the
        chunk was claimed: those records are Skipped, never sent)."""
        if chunk.to_send:
            if self.cancelled():
                reason = self.cancel_reason()
                chunk.outcomes.extend(_Outcome(s.item_id, s.reg.id, SKIPPED, reason) for s in chunk.to_send)
            elif self.stop.is_set():
                # the worker is shutting down: what was claimed but not sent goes back to
                # Pending for the next task, untouched (the chunk on the wire finishes)
                chunk.reroute.extend((s.item_id, s.reg.id, chunk.conn.id) for s in chunk.to_send)
            else:
                chunk.outcomes.extend(self.export(chunk.conn, chunk.check, chunk.to_send))
            chunk.to_send = []
        if chunk.mapped and chunk.check is not None:
            for o in chunk.outcomes:
                if o.item_id in chunk.mapped and o.status != SKIPPED:
                    o.mapping_version = chunk.check.mapping_version

    def record_chunk(self, chunk: _Chunk) -> None:
        self.record(chunk.conn, chunk.outcomes, chunk.reroute)
        self._release(chunk.mine)
        self.stats.batches += 1

    def cancelled(self) -> bool:
        return SyncJob.select(SyncJob.status).where(SyncJob.id == self.job_id).scalar() == JOB_CANCELLED

    def cancel_reason(self) -> str:
        """The reason Cancel sync gave the records it skipped (it names who cancelled)."""
        row = (SyncItem.select(SyncItem.reason).where(
            (SyncItem.job == self.job_id) & (SyncItem.status == SKIPPED)
            & SyncItem.reason.startswith("Not sent: the sync was cancelled")).limit(1).tuples().first())
        return row[0] if row else CANCELLED_REASON

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
                if is_sqlite():  # one prepared statement per table, run for every row (no round trips)
                    executemany(
                        f'UPDATE {I} SET "status"=?, "reason"=?, "action"=?, "sis_id"=?, "sent"=?, "response"=?, '
                        f'"errors"=?, "mapping_version"=?, "finished_at"=? WHERE "id"=? AND "status"=?', item_rows)
                    executemany(
                        f'UPDATE {R} SET "sync_status"=?, "last_synced_at"=COALESCE(?, "last_synced_at"), '
                        f'"sync_lock"=NULL, "sync_lock_at"=NULL WHERE "id"=? AND "sync_lock"=?', reg_rows)
                else:  # one UPDATE ... FROM (VALUES ...) per table
                    execute_values(
                        f'UPDATE {I} AS t SET "status"=v.st, "reason"=v.reason, "action"=v.action, "sis_id"=v.sis_id, '
                        f'"sent"=v.sent, "response"=v.response, "errors"=v.errors, "mapping_version"=v.mv, '
                        f'"finished_at"=v.fin FROM (VALUES %s) AS v(st, reason, action, sis_id, sent, response, '
                        f'errors, mv, fin, id, cur) WHERE t."id"=v.id AND t."status"=v.cur', item_rows,
                        "(%s, %s, %s, %s, %s, %s, %s, %s::integer, %s::timestamp, %s::integer, %s)")
                    execute_values(
                        f'UPDATE {R} AS t SET "sync_status"=v.st, "last_synced_at"=COALESCE(v.at, t."last_synced_at"), '
                        f'"sync_lock"=NULL, "sync_lock_at"=NULL FROM (VALUES %s) AS v(st, at, id, lock) '
                        f'WHERE t."id"=v.id AND t."sync_lock"=v.lock', reg_rows,
                        "(%s, %s::timestamp, %s::integer, %s)")
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
        pipe = _Pipeline(self)
        try:
            if first and self.job.total > PENDING_INLINE_MAX:
                mark_pending_in_chunks(self.job_id)
            while True:
                if self.stop.is_set():
                    self.stats.stopped = True
                    pipe.close()  # the chunks on their way finish first
                    if requeue is not None:
                        requeue(self.job_id)  # the next worker carries on at once
                    break
                if not pipe.wait_for_room():
                    break  # a stage failed
                conn_id, mine = self.claim()
                if mine:
                    pipe.submit(self.prepare(conn_id, mine))
                    continue
                # nothing to claim: what is on its way is recorded before deciding what is left
                if not pipe.drain():
                    break
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
            pipe.close()
            self.heartbeat.stop()
        if pipe.error is not None:
            raise pipe.error
        log.info("sync job %s: this task sent %d record(s) in %d batch(es)%s", self.job_id, self.stats.exported,
                 self.stats.batches, "; the job is complete" if self.stats.finished else "")
        return self.stats


class _Pipeline:
    """The exporter and writer threads of one task.

    The task's own thread claims and maps chunk k+2 while a look-up thread has the
    adapter prepare chunk k+1 (``SISAdapter.prepare``), the exporter sends chunk k and the
    writer records chunk k-1. ``wait_for_room`` lets the task claim only when at most
    ``AHEAD`` chunks wait besides the one being sent, so little is claimed ahead (a cancel
    skips what was not sent). A stage that fails stops the pipeline; the
    chunks it held stay In Progress under their markers, and recovery takes them back
    once the task is gone, as after a crash.
    """

    AHEAD = 2  # chunks claimed besides the one being sent (one mapped, one being looked up)

    def __init__(self, runner: JobRunner):
        self.runner = runner
        self.cond = threading.Condition()
        self.unsent = 0       # submitted, export not finished
        self.unrecorded = 0   # submitted, not recorded
        self.error: BaseException | None = None
        self.to_look_up: queue.Queue = queue.Queue()
        self.to_send: queue.Queue = queue.Queue()
        self.to_record: queue.Queue = queue.Queue()
        self.threads = [threading.Thread(target=self._thread, args=(self._look_up_loop,), daemon=True,
                                         name=f"sync-look-up-{runner.job_id}"),
                        threading.Thread(target=self._thread, args=(self._send_loop,), daemon=True,
                                         name=f"sync-send-{runner.job_id}"),
                        threading.Thread(target=self._thread, args=(self._record_loop,), daemon=True,
                                         name=f"sync-record-{runner.job_id}")]
        self.closed = False
        for t in self.threads:
            t.start()

    def _thread(self, loop) -> None:
        with self.runner.app.app_context(), database.connection_context():
            loop()

    def _fail(self, exc: BaseException) -> None:
        log.exception("sync job %s: a task stage failed; its records are taken back by recovery",
                      self.runner.job_id, exc_info=exc)
        with self.cond:
            if self.error is None:
                self.error = exc
            self.cond.notify_all()

    def _look_up_loop(self) -> None:
        while True:
            chunk = self.to_look_up.get()
            if chunk is None:
                self.to_send.put(None)
                return
            if self.error is None:
                self.runner.look_up(chunk)  # never raises: the export looks up itself
            self.to_send.put(chunk)

    def _send_loop(self) -> None:
        while True:
            chunk = self.to_send.get()
            if chunk is None:
                self.to_record.put(None)
                return
            try:
                if self.error is None:
                    self.runner.send_chunk(chunk)
                else:
                    chunk.dead = True
            except BaseException as exc:
                chunk.dead = True
                self._fail(exc)
            finally:
                with self.cond:
                    self.unsent -= 1
                    self.cond.notify_all()
            self.to_record.put(chunk)

    def _record_loop(self) -> None:
        while True:
            chunk = self.to_record.get()
            if chunk is None:
                return
            try:
                if self.error is None and not chunk.dead:
                    self.runner.record_chunk(chunk)
            except BaseException as exc:
                self._fail(exc)
            finally:
                with self.cond:
                    self.unrecorded -= 1
                    self.cond.notify_all()

    def submit(self, chunk: _Chunk) -> None:
        with self.cond:
            self.unsent += 1
            self.unrecorded += 1
        self.to_look_up.put(chunk)

    def wait_for_room(self) -> bool:
        """Wait until the next chunk may be claimed; False when a stage failed."""
        with self.cond:
            while self.error is None and self.unsent > self.AHEAD:
                self.cond.wait(0.5)
            return self.error is None

    def drain(self) -> bool:
        """Wait until every submitted chunk is recorded; False when a stage failed."""
        with self.cond:
            while self.error is None and self.unrecorded:
                self.cond.wait(0.5)
            return self.error is None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.to_look_up.put(None)
        for t in self.threads:
            t.join()


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
