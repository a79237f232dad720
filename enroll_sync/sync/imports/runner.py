"""What a worker does with an import job: read the SIS page by page, decide, record.

One task runs an import job at a time: it takes the job's **lease**
(``ImportRun.lease``) and every page it records checks that lease in the same
transaction, so a task that was presumed dead (and whose job recovery gave to another
task) stops at its next page instead of writing twice.

For each page of ``adapter.list_students`` (read one page ahead in a thread, so the
SIS and the database work at the same time; two pages in memory at most):

1. decide every student with the connection's ``ImportRule`` (a few queries per page);
2. record the page in **one transaction**: the students created, the profiles, the SIS
   links, one ``ImportItem`` per SIS student, and the cursor after the page. A page is
   recorded whole or not at all, so an interrupted import resumes after its last
   recorded page without a duplicate (and an item already recorded for an SIS id is
   never recorded again in the same job). A preview records only its items.

A page that keeps failing after the transport's retries (``AdapterError``) is read
again from the stored cursor up to ``JOB_RETRY_ATTEMPTS`` times with backoff; then the
job is Failed, saying which page, and **Resume** continues from there. Cancel stops
before the next page. At the end the job is Completed with its counts, and an import
(not a preview) keeps the SIS's change marker for the next run.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import orjson
from peewee import JOIN

from ...adapters import AdapterError, StudentPage
from ...config import JobSettings, job_settings
from ...db import database, executemany, is_sqlite, retrying, table, write_tx
from ...models import (ACTIVE_JOB_STATUSES, IMPORT_CREATED, IMPORT_UNCHANGED, IMPORT_UPDATED, JOB_DONE,
                       JOB_FAILED, JOB_QUEUED, JOB_RUNNING, LINK_IMPORTED, ImportItem, ImportRun, ImportState,
                       SisLink, Student, StudentProfile, SyncConnection, SyncJob, utcnow)
from ...redaction import scrub_text
from ..links import link_scope
from .fields import import_state
from .jobs import import_counts, school_numbers, summary
from .matching import fill_missing_keys
from .rule import Claims, Decision, ImportRule

log = logging.getLogger("enroll_sync.imports")

#: ``ImportRun.cursor`` once the last page is recorded (None: nothing read yet)
READ_TO_END = ""


class LeaseLost(Exception):
    """Another task runs this job now."""


@dataclass
class ImportStats:
    pages: int = 0
    students: int = 0
    finished: bool = False
    stopped: bool = False
    failed: bool = False


class _Prefetch:
    """Pages of ``open_pages(cursor)`` read one ahead in a thread (at most two in memory)."""

    _END = object()

    def __init__(self, open_pages: Callable[[str | None], Iterator[StudentPage]], cursor: str | None):
        self._q: queue.Queue = queue.Queue(maxsize=1)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(open_pages, cursor), daemon=True,
                                        name="import-prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._halt.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _read(self, open_pages, cursor):
        try:
            for page in open_pages(cursor):
                if not self._put(page):
                    return
            self._put(self._END)
        except BaseException as exc:  # handed to the consumer, which decides
            self._put(exc)

    def __iter__(self):
        return self

    def __next__(self) -> StudentPage:
        item = self._q.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._halt.set()
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=5)


class _Heartbeat(threading.Thread):
    def __init__(self, job_id: int, run_id: int, lease: str, interval: float):
        super().__init__(name=f"import-heartbeat-{job_id}", daemon=True)
        self.job_id, self.run_id, self.lease, self.interval = job_id, run_id, lease, interval
        self._halt = threading.Event()

    def run(self):
        with database.connection_context():
            while not self._halt.wait(self.interval):
                try:
                    mine = ImportRun.select().where((ImportRun.id == self.run_id) & (ImportRun.lease == self.lease))
                    SyncJob.update(heartbeat_at=utcnow()).where(
                        (SyncJob.id == self.job_id) & SyncJob.status.in_(ACTIVE_JOB_STATUSES) & mine.exists()
                    ).execute()
                except Exception:
                    log.warning("heartbeat of import job %s failed", self.job_id, exc_info=True)

    def stop(self):
        self._halt.set()
        if self.is_alive():
            self.join(timeout=10)


class ImportRunner:
    """Runs one import job to its end (or until stopped)."""

    def __init__(self, app, job: SyncJob, cfg: JobSettings | None = None, stop: threading.Event | None = None):
        self.app = app
        self.job = job
        self.run_row = ImportRun.get(ImportRun.job == job.id)
        self.conn = SyncConnection.get_by_id(self.run_row.connection_id)
        self.cfg = cfg or job_settings(app)
        self.stop = stop or threading.Event()
        self.lease = uuid.uuid4().hex
        self.stats = ImportStats()

    # -- taking the job
    def claim(self) -> bool:
        """Take the job: Queued, or Running under a task whose heartbeat went stale."""
        now = utcnow()
        stale = now - dt.timedelta(seconds=self.cfg.stale)

        def take():
            with write_tx():
                ok = SyncJob.update(status=JOB_RUNNING, heartbeat_at=now).where(
                    (SyncJob.id == self.job.id) & ((SyncJob.status == JOB_QUEUED) | (
                        (SyncJob.status == JOB_RUNNING) & (SyncJob.heartbeat_at.is_null()
                                                           | (SyncJob.heartbeat_at < stale))))).execute()
                if ok:
                    SyncJob.update(started_at=now).where(
                        (SyncJob.id == self.job.id) & SyncJob.started_at.is_null()).execute()
                    ImportRun.update(lease=self.lease).where(ImportRun.id == self.run_row.id).execute()
                return bool(ok)
        return retrying(take)

    def release(self) -> None:
        """Give the job back to the queue (Queued, no lease): it goes on after its last recorded page."""
        with write_tx():
            if ImportRun.update(lease=None).where((ImportRun.id == self.run_row.id)
                                                  & (ImportRun.lease == self.lease)).execute():
                SyncJob.update(status=JOB_QUEUED, heartbeat_at=utcnow()).where(
                    (SyncJob.id == self.job.id) & (SyncJob.status == JOB_RUNNING)).execute()

    def fail(self, message: str) -> None:
        now = utcnow()
        SyncJob.update(status=JOB_FAILED, finished_at=now, heartbeat_at=now, message=message).where(
            (SyncJob.id == self.job.id) & (SyncJob.status == JOB_RUNNING)).execute()
        self.stats.failed = True

    def still_running(self) -> bool:
        row = (SyncJob.select(SyncJob.status, ImportRun.lease).join(ImportRun, on=(ImportRun.job == SyncJob.id))
               .where(SyncJob.id == self.job.id).tuples().first())
        return bool(row) and row[0] == JOB_RUNNING and row[1] == self.lease

    # -- the rule
    def rule(self) -> ImportRule | str:
        from ..mappings import IMPORT_STUDENT, check_connection
        check = check_connection(self.conn, self.app, kind=IMPORT_STUDENT)
        if check.problem:
            return check.problem
        numbers = school_numbers(self.conn)
        if not numbers:
            return f"No school is assigned to {self.conn.name}, so no student would be imported."
        ImportRun.update(mapping_version=check.mapping_version).where(ImportRun.id == self.run_row.id).execute()
        return ImportRule(check.compiled, scope=link_scope(self.conn), org_id=self.conn.organization_id,
                          school_numbers=numbers,
                          labels={k: t.label for k, t in check.compiled.targets.items()},
                          preview=self.run_row.preview)

    # -- the loop
    def run(self, requeue: Callable[[int], Any] | None = None) -> ImportStats:
        if not self.claim():
            self.stats.finished = True
            return self.stats
        heartbeat = _Heartbeat(self.job.id, self.run_row.id, self.lease, self.cfg.heartbeat)
        heartbeat.start()
        pages = None
        try:
            rule = self.rule()
            if isinstance(rule, str):
                self.fail(f"Not started: {rule}")
                return self.stats
            run = ImportRun.get_by_id(self.run_row.id)
            if run.cursor == READ_TO_END:
                self.complete(run)
                return self.stats
            if run.cursor is None:  # a derived look-up key, not data: a preview fills it in too
                fill_missing_keys(self.conn.organization_id)
            from ..connections import open_adapter, safe_secret_values
            adapter = open_adapter(self.conn, self.app)
            secrets = safe_secret_values(self.conn, self.app)

            def open_pages(cursor):
                return adapter.list_students(since=run.since, cursor=cursor)

            pages = _Prefetch(open_pages, run.cursor)
            while True:
                if self.stop.is_set():  # the worker is stopping: hand the job back, the next task goes on
                    self.stats.stopped = True
                    self.release()
                    if requeue is not None:
                        requeue(self.job.id)
                    return self.stats
                try:
                    page = next(pages)
                except StopIteration:
                    break
                except AdapterError as exc:
                    pages.close()
                    run = ImportRun.get_by_id(self.run_row.id)
                    failures = run.failures + 1
                    ImportRun.update(failures=failures).where(ImportRun.id == run.id).execute()
                    reason = scrub_text(str(exc), secrets) or "The SIS did not answer."
                    if failures > self.cfg.retry_attempts:
                        self.fail(f"Stopped after page {run.pages:,}: {reason} Resume continues from there; "
                                  f"nothing already imported is imported twice.")
                        return self.stats
                    log.warning("import job %s: page after %s failed (%s); reading it again", self.job.id,
                                run.pages, reason)
                    if self.stop.wait(min(self.cfg.retry_backoff * (2 ** (failures - 1)), 30.0)):
                        continue
                    pages = _Prefetch(open_pages, run.cursor)
                    continue
                if not self.still_running():
                    pages.close()
                    return self.stats  # cancelled, or another task has the job now
                self.record(rule, page)
            run = ImportRun.get_by_id(self.run_row.id)
            self.complete(run)
            return self.stats
        except LeaseLost:
            log.warning("import job %s: another task took it over; this one stops", self.job.id)
            return self.stats
        except Exception as exc:
            log.exception("import job %s failed", self.job.id)
            self.fail(f"The import stopped unexpectedly ({type(exc).__name__}); details are in the worker log. "
                      f"Resume continues after the last recorded page.")
            return self.stats
        finally:
            if pages is not None:
                pages.close()
            heartbeat.stop()

    # -- recording a page
    def earlier_claims(self, keys: list[str], students: list[int], schoolmint_ids: list[str]) -> Claims:
        """(A preview) what earlier pages of this job would already take."""
        claims = Claims()
        job = self.job.id
        for start in range(0, len(keys), 900):
            for key, sis in ImportItem.select(ImportItem.match_key, ImportItem.sis_id).where(
                    (ImportItem.job == job) & (ImportItem.status == IMPORT_CREATED)
                    & ImportItem.match_key.in_(keys[start:start + 900])).tuples():
                claims.keys.setdefault(key, sis)
        for start in range(0, len(students), 900):
            for sid, sis in ImportItem.select(ImportItem.student, ImportItem.sis_id).where(
                    (ImportItem.job == job) & ImportItem.status.in_([IMPORT_UPDATED, IMPORT_UNCHANGED])
                    & ImportItem.student.in_(students[start:start + 900])).tuples():
                claims.students.setdefault(sid, sis)
        return claims

    def record(self, rule: ImportRule, page: StudentPage) -> None:
        preview = self.run_row.preview
        decisions = rule.decide_page(page.students, self.earlier_claims if preview else None)
        now = utcnow()
        stamp = now.isoformat(" ") if is_sqlite() else now  # as peewee stores it, without the adapter's cost
        cursor = page.cursor if page.cursor is not None else READ_TO_END

        def write():
            with write_tx():
                run = ImportRun.get_by_id(self.run_row.id)
                changes = dict(cursor=cursor, pages=run.pages + 1, failures=0)
                if page.marker is not None and run.marker is None:
                    changes["marker"] = page.marker
                if not ImportRun.update(**changes).where(
                        (ImportRun.id == run.id) & (ImportRun.lease == self.lease)).execute():
                    raise LeaseLost()
                ids = [d.sis_id for d in decisions]
                seen = set()
                for start in range(0, len(ids), 900):
                    seen.update(s for (s,) in ImportItem.select(ImportItem.sis_id).where(
                        (ImportItem.job == self.job.id) & ImportItem.sis_id.in_(ids[start:start + 900])).tuples())
                todo = [d for d in decisions if d.sis_id not in seen]
                if not preview:
                    self.write_enroll(todo, stamp)
                executemany(
                    f'INSERT INTO {table(ImportItem)} ("job_id", "sis_id", "student_id", "status", "reason", '
                    f'"matched_by", "name", "school", "match_key", "changes", "finished_at") '
                    f'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    [(self.job.id, d.sis_id, d.student_id, d.status, d.reason, d.matched_by, d.name[:255],
                      d.school, d.match_key, _json(d.changes) if d.changes else None, stamp) for d in todo])
                total = page.total if page.total is not None else None
                upd = {"heartbeat_at": now}
                if total is not None:
                    upd["total"] = total
                SyncJob.update(**upd).where(SyncJob.id == self.job.id).execute()
        retrying(write)
        self.stats.pages += 1
        self.stats.students += len(decisions)

    def write_enroll(self, decisions: list[Decision], now) -> None:
        """Students created, profiles, links and match keys for one page (in its transaction)."""
        org, scope = self.conn.organization_id, link_scope(self.conn)
        creates = [d for d in decisions if d.status == IMPORT_CREATED and d.create]
        if creates:
            executemany(f'INSERT INTO {table(Student)} ("organization_id", "schoolmint_id", "first_name", '
                        f'"last_name", "match_key") VALUES (?, ?, ?, ?, ?)',
                        [(org, d.create[0], d.create[1][:255], d.create[2][:255], d.match_key or "")
                         for d in creates])
            sms = [d.create[0] for d in creates]
            made = {}
            for start in range(0, len(sms), 900):
                made.update(dict(Student.select(Student.schoolmint_id, Student.id).where(
                    (Student.organization == org) & Student.schoolmint_id.in_(sms[start:start + 900])).tuples()))
            for d in creates:
                d.student_id = made[d.create[0]]
        writes = [d for d in decisions if d.status in (IMPORT_CREATED, IMPORT_UPDATED) and d.student_id]
        P = table(StudentProfile)
        executemany(f'INSERT INTO {P} ("organization_id", "student_id", "connection_id", "sis_id", "school_number", '
                    f'"values", "imported_at", "job_id") VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                    [(org, d.student_id, scope, d.sis_id, d.school, _json(d.values or {}), now, self.job.id)
                     for d in writes if d.profile_id is None])
        executemany(f'UPDATE {P} SET "values"=?, "sis_id"=?, "school_number"=?, "imported_at"=?, "job_id"=? '
                    f'WHERE "id"=?', [(_json(d.values or {}), d.sis_id, d.school, now, self.job.id, d.profile_id)
                                      for d in writes if d.profile_id is not None])
        executemany(f'UPDATE {table(Student)} SET "match_key"=? WHERE "id"=?',
                    [(rule_key(d) or "", d.student_id) for d in writes if d.new_key and d.status == IMPORT_UPDATED])
        # a student linked here had no link on this connection (else it matched by it, or is a conflict)
        executemany(f'INSERT INTO {table(SisLink)} ("organization_id", "student_id", "connection_id", "sis_id", '
                    f'"how", "linked_at") VALUES (?, ?, ?, ?, ?, ?)',
                    [(org, d.student_id, scope, d.sis_id, LINK_IMPORTED, now) for d in writes if d.link])

    def complete(self, run: ImportRun) -> None:
        counts = import_counts(self.job.id)
        now = utcnow()
        with write_tx():
            ok = SyncJob.update(status=JOB_DONE, finished_at=now, heartbeat_at=now,
                                message=summary(counts, run.preview),
                                total=sum(counts.values())).where(
                (SyncJob.id == self.job.id) & (SyncJob.status == JOB_RUNNING)).execute()
            if ok and not run.preview and run.marker is not None:
                state = import_state(self.conn)
                ImportState.update(marker=run.marker, marker_at=now).where(ImportState.id == state.id).execute()
        self.stats.finished = True
        log.info("import job %s: %s", self.job.id, summary(counts, run.preview))


def _json(value) -> str:
    """JSON text as ``JSONText`` stores it (orjson: a page writes thousands)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=str)


def rule_key(d: Decision) -> str | None:
    from .fields import BIRTH_DATE, FIRST_NAME, LAST_NAME
    from .matching import match_key
    values = d.values or {}
    return match_key(values.get(FIRST_NAME), values.get(LAST_NAME), values.get(BIRTH_DATE))


def run_import_job(app, job_id: int, *, stop: threading.Event | None = None,
                   requeue: Callable[[int], Any] | None = None) -> ImportStats:
    """Run import job ``job_id`` (needs an app context and a database connection)."""
    job = SyncJob.get_or_none(SyncJob.id == job_id)
    if job is None or job.status not in ACTIVE_JOB_STATUSES:
        return ImportStats(finished=True)
    if ImportRun.get_or_none(ImportRun.job == job_id) is None:
        return ImportStats(finished=True)
    return ImportRunner(app, job, stop=stop).run(requeue)


def stalled_imports(app) -> list[int]:
    """Import jobs no live task is running: Queued or Running with a heartbeat older than
    ``JOB_STALE_SECONDS`` (recovery hands them back to the queue)."""
    cutoff = utcnow() - dt.timedelta(seconds=job_settings(app).stale)
    return [j for (j,) in SyncJob.select(SyncJob.id).join(ImportRun, JOIN.INNER, on=(ImportRun.job == SyncJob.id))
            .where(SyncJob.status.in_(ACTIVE_JOB_STATUSES)
                   & ((SyncJob.heartbeat_at.is_null() & (SyncJob.created_at < cutoff))
                      | (SyncJob.heartbeat_at < cutoff))).tuples()]


__all__ = ["ImportRunner", "ImportStats", "run_import_job", "stalled_imports", "READ_TO_END"]
