"""The huey queue of an app, its consumers, and recovery of dead tasks.

``QUEUE_URL`` picks the broker: ``sqlite:///path`` -> SqliteHuey (the embedded
default), ``redis://host:port/db`` -> RedisHuey (the scale-out path). An optional
``?name=...`` sets the queue's name (tests give each run its own). The huey
instance and its tasks live on the app (``app.extensions``), never in a module
global, so two apps with different queues in one process stay apart.

- ``enqueue_job(app, job_id)``: hand a created job to the workers (``JOB_TASKS``
  tasks, so several workers can share one big job).
- ``enqueue_import(app, job_id)``: hand an import job (SIS -> Enroll) to the workers
  (one task: an import reads its SIS page after page). A periodic task starts the
  scheduled imports (``imports.schedule``) every minute.
- ``start_in_process_consumer(app)``: consumer threads inside ``serve``
  (``Consumer.start()``, not ``run()``: signal handlers belong to the main thread);
  returns a handle with ``.stop()``.
- ``run_worker(app, workers)``: ``enroll-sync worker`` -- a consumer in the
  foreground, stopped by SIGINT/SIGTERM.

Both run ``recover`` at start and every ``JOB_RECOVERY_SECONDS``: a task killed
mid-job (SIGKILL, a crash, a reboot) stops heartbeating, and its job is put back
in the queue once its heartbeat is older than ``JOB_STALE_SECONDS``.
"""
from __future__ import annotations

import logging
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from huey import RedisHuey, SqliteHuey
from huey.consumer import Consumer

from ..db import database

log = logging.getLogger("enroll_sync.queue")

HUEY_KEY = "enroll_sync.huey"
STOP_KEY = "enroll_sync.sync_stop"
TASK_NAME = "run_sync_job"
IMPORT_TASK_NAME = "run_import_job"
SCHEDULE_TASK_NAME = "start_scheduled_imports"
DEFAULT_NAME = "enroll_sync"


def make_huey(url: str):
    """A huey instance for ``url`` (no tasks registered)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    name = dict(query).get("name") or DEFAULT_NAME
    rest = [(k, v) for k, v in query if k != "name"]
    if parts.scheme == "sqlite":
        path = url[len("sqlite:///"):].split("?", 1)[0]
        if not path or path == ":memory:":
            raise ValueError("QUEUE_URL sqlite:/// needs a file path shared by the app and its workers.")
        from pathlib import Path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name, filename=path, results=False, timeout=15)
    if parts.scheme in ("redis", "rediss", "unix"):
        clean = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
        return RedisHuey(name, url=clean, results=False, blocking=True, read_timeout=1)
    raise ValueError(f"Unsupported QUEUE_URL {url!r}: use sqlite:///path or redis://host:port/db.")


def stop_event(app) -> threading.Event:
    ev = app.extensions.get(STOP_KEY)
    if ev is None:
        ev = app.extensions[STOP_KEY] = threading.Event()
    return ev


def get_huey(app):
    """The app's huey, built once from QUEUE_URL, with the sync task registered on it."""
    huey = app.extensions.get(HUEY_KEY)
    if huey is not None:
        return huey
    # the tasks below outlive the request that may build the queue: bind the app, not current_app
    app = app._get_current_object() if hasattr(app, "_get_current_object") else app
    huey = make_huey(app.config["QUEUE_URL"])

    def run_sync_job(job_id):
        """Run one task of a sync job (see enroll_sync.sync.jobs)."""
        from .runner import run_job
        with app.app_context(), database.connection_context():
            run_job(app, int(job_id), stop=stop_event(app), requeue=lambda j: enqueue_job(app, j, tasks=1))

    huey.task(name=TASK_NAME)(run_sync_job)

    def run_import_job(job_id):
        """Run an import job (see enroll_sync.sync.imports.runner)."""
        from .imports.runner import run_import_job as run
        with app.app_context(), database.connection_context():
            run(app, int(job_id), stop=stop_event(app), requeue=lambda j: enqueue_import(app, j))

    huey.task(name=IMPORT_TASK_NAME)(run_import_job)

    def start_scheduled_imports():
        """Start the imports whose daily time has come (see enroll_sync.sync.imports.schedule)."""
        from .imports.schedule import run_scheduled_imports
        with app.app_context(), database.connection_context():
            run_scheduled_imports(app)

    from huey import crontab
    huey.periodic_task(crontab(), name=SCHEDULE_TASK_NAME)(start_scheduled_imports)
    app.extensions[HUEY_KEY] = huey
    return huey


def _task(app, name: str = TASK_NAME):
    huey = get_huey(app)
    task_class = huey._registry.string_to_task(f"{__name__}.{name}")
    return huey, task_class


def enqueue_import(app, job_id: int) -> None:
    """Hand import job ``job_id`` to the workers (one task)."""
    huey, task_class = _task(app, IMPORT_TASK_NAME)
    huey.enqueue(task_class((job_id,), {}))


def queued_import_ids(app) -> set[int]:
    huey, task_class = _task(app, IMPORT_TASK_NAME)
    return {int(t.args[0]) for t in huey.pending() if isinstance(t, task_class) and t.args}


def enqueue_job(app, job_id: int, tasks: int | None = None) -> int:
    """Enqueue ``tasks`` tasks for the job (default JOB_TASKS, at most one per record)."""
    from ..models import SyncJob
    from ..config import job_settings
    huey, task_class = _task(app)
    if tasks is None:
        tasks = job_settings(app).tasks
        total = SyncJob.select(SyncJob.total).where(SyncJob.id == job_id).scalar() or 1
        tasks = max(1, min(tasks, total))
        # the width recovery restores when tasks die
        SyncJob.update(planned_tasks=tasks).where(SyncJob.id == job_id).execute()
    for _ in range(tasks):
        huey.enqueue(task_class((job_id,), {}))
    return tasks


def queued_task_counts(app) -> dict[int, int]:
    """job id -> tasks of it waiting in the queue."""
    huey, task_class = _task(app)
    out: dict[int, int] = {}
    for task in huey.pending():
        if isinstance(task, task_class) and task.args:
            try:
                job_id = int(task.args[0])
            except (TypeError, ValueError):
                continue
            out[job_id] = out.get(job_id, 0) + 1
    return out


def queued_job_ids(app) -> set[int]:
    """Jobs that have a task waiting in the queue."""
    return set(queued_task_counts(app))


def recover_now(app) -> list[int]:
    """Run recovery once (in an app context with a database connection)."""
    from .imports.runner import stalled_imports
    from .recovery import recover
    with app.app_context(), database.connection_context():
        requeued = recover(app, lambda job_id, n: enqueue_job(app, job_id, tasks=n), lambda: queued_task_counts(app))
        stalled = stalled_imports(app)  # imports have their own task and lease (imports.runner)
        if stalled:
            waiting = queued_import_ids(app)
            for job_id in stalled:
                if job_id not in waiting:
                    enqueue_import(app, job_id)
                    requeued.append(job_id)
            log.warning("re-enqueued import job(s) %s whose worker stopped", ", ".join(map(str, stalled)))
        return requeued


class _Recovery(threading.Thread):
    def __init__(self, app, interval: float):
        super().__init__(name="sync-recovery", daemon=True)
        self.app = app
        self.interval = interval
        self.halt = threading.Event()

    def run(self):
        delay = 0.0
        while not self.halt.wait(delay):
            delay = self.interval
            try:
                recover_now(self.app)
            except Exception:  # e.g. the database is briefly unreachable: try again later
                log.warning("sync recovery failed; retrying in %ss", self.interval, exc_info=True)

    def stop(self):
        self.halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=10)


class _Consumer(Consumer):
    """A huey consumer that tells running sync tasks to stop after their batch."""

    def __init__(self, huey, sync_stop: threading.Event, signals: bool, **options):
        self._sync_stop = sync_stop
        self._signals = signals
        super().__init__(huey, **options)

    def stop(self, graceful=False):
        self._sync_stop.set()
        super().stop(graceful=graceful)

    def _set_signal_handlers(self):
        if self._signals:
            super()._set_signal_handlers()


def _consumer_options(app, workers):
    return dict(workers=max(1, int(workers or app.config.get("WORKERS") or 2)), periodic=True,
                initial_delay=0.05, backoff=1.5, max_delay=0.25, check_worker_health=True,
                health_check_interval=5, worker_type="thread")


class InProcessConsumer:
    """Consumer threads and the recovery thread inside a web process."""

    def __init__(self, app, workers=None):
        from ..config import job_settings
        self.app = app
        self.stop_event = stop_event(app)
        self.stop_event.clear()
        self.consumer = _Consumer(get_huey(app), self.stop_event, signals=False,
                                  **_consumer_options(app, workers))
        self.recovery = _Recovery(app, job_settings(app).recovery)

    def start(self) -> "InProcessConsumer":
        self.consumer.start()
        self.recovery.start()
        return self

    def stop(self, graceful: bool = True) -> None:
        """Running tasks finish their batch and hand the rest back to the queue."""
        self.recovery.stop()
        self.consumer.stop(graceful=graceful)


def start_in_process_consumer(app, workers=None) -> InProcessConsumer:
    return InProcessConsumer(app, workers).start()


def run_worker(app, workers=None) -> None:
    """Consume sync tasks in the foreground until SIGINT/SIGTERM (``enroll-sync worker``)."""
    from ..config import job_settings
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ev = stop_event(app)
    ev.clear()
    consumer = _Consumer(get_huey(app), ev, signals=True, **_consumer_options(app, workers))
    recovery = _Recovery(app, job_settings(app).recovery)
    recovery.start()
    log.info("sync worker: %s consumer thread(s) on %s", consumer.workers, _safe_url(app.config["QUEUE_URL"]))
    try:
        consumer.run()
    finally:
        recovery.stop()


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url
