"""RQ worker and scheduler processes that run inside the Flask app context.

Signals (RQ's own handling, kept as is):

* worker, first SIGTERM or SIGINT: warm shutdown. An idle worker exits at once; a busy
  one finishes its current job, then exits. A second signal, a second or more later,
  is a cold shutdown: the job is interrupted where it is and the worker exits (the
  reaper records its attempt lost).
* worker, SIGUSR1: reserved for stopping the running task (``app.runtime.interrupt``).
* scheduler, SIGTERM or SIGINT: it releases its locks and exits within a second.

Capabilities hook into these processes through ``runtime_hooks(app)`` (the workflow
capability's reaper uses them): once when a worker starts, and every
``MAINTENANCE_SECONDS`` in a scheduler that holds a queue lock. The platform itself
knows nothing of what they do.
"""

from __future__ import annotations

import gc
import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from flask import Flask
from rq import Queue, SimpleWorker, get_current_job, worker_registration
from rq.exceptions import StopRequested
from rq.scheduler import RQScheduler
from rq.scripts import ACQUIRE_OR_REFRESH_LOCK_SCRIPT, acquire_or_refresh_lock
from rq.utils import now as utcnow
from rq.utils import utcformat

from app.extensions import db
from app.runtime import interrupt
from app.runtime.reconnect import LOST, keep_working
from app.runtime.redis_conn import get_redis

log = logging.getLogger(__name__)

# Worker registrations: an idle worker renews its key every WORKER_TTL - 15 s and the
# key lives WORKER_TTL + 60 s, so a worker killed with SIGKILL (or a machine that
# vanished) drops out of Worker.all() within about 90 s, instead of RQ's 8 minutes.
WORKER_TTL = 30

# A scheduler's queue locks live this long unless their holder renews them, which it
# does every loop (each second). A standby (a scheduler without every queue's lock)
# tries to take them every LOCK_RETRY_SECONDS: when the holder dies, retries and delays
# wait at most the sum (RQ's own lifetime is 61 s, its retry period 10 minutes).
SCHEDULER_LOCK_SECONDS = 10
LOCK_RETRY_SECONDS = 3

# How often a scheduler holding a queue lock runs the maintenance hooks (the reaper).
MAINTENANCE_SECONDS = 5.0

# The worker hash field naming the process-id space the worker's pid belongs to.
PID_SPACE_FIELD = "apg_pid_space"

HOOKS_KEY = "apg_runtime_hooks"

# How often an idle worker checks that Redis still lists it (see AppWorker.heartbeat).
REGISTRATION_CHECK = 10.0


@dataclass
class RuntimeHooks:
    """Callbacks a capability registers (``reg.on_ready``); each runs inside the app
    context, and an exception in one is logged, never fatal to the process."""

    worker_start: list[Callable[[Flask], None]] = field(default_factory=list)
    maintenance: list[Callable[[Flask], None]] = field(default_factory=list)
    # Every loop of every scheduler, lock holder or not (the triggers' ticker: deciding
    # exactly once is its own business, not the queue locks').
    tick: list[Callable[[Flask], None]] = field(default_factory=list)


def runtime_hooks(app: Flask) -> RuntimeHooks:
    hooks = app.extensions.get(HOOKS_KEY)
    if hooks is None:
        hooks = app.extensions[HOOKS_KEY] = RuntimeHooks()
    return hooks  # type: ignore[no-any-return]


def _run_hooks(app: Flask, what: str, callbacks: list[Callable[..., None]], *args: Any) -> None:
    for callback in callbacks:
        with app.app_context():
            try:
                callback(app, *args)
            except Exception:  # maintenance must never take a worker or scheduler down
                log.exception("%s hook %s failed", what, getattr(callback, "__name__", callback))
            finally:
                db.session.remove()


@lru_cache(maxsize=1)
def pid_space() -> str | None:
    """Who can interpret this process's pids: the kernel boot (``boot_id`` differs per
    machine and per boot) and the pid namespace (differs per container). Two processes
    with the same value see the same pids, so one can tell whether the other's pid is
    still alive. None where this cannot be told (not Linux)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}/{namespace}"


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` (in this process's pid space) is a running process. A zombie,
    killed but not yet waited for by its parent, counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


class PromptUnsubscribe:
    """RQ's ``unsubscribe`` without its wait for the pub/sub thread.

    RQ sends UNSUBSCRIBE, then stops its pub/sub thread and joins it. When the reply
    reaches the thread before the stop, the thread goes back to waiting for up to 60 s:
    RQ waited 1 s of that before redis-py 8.2, and the whole minute since (its
    ``stop()`` joins the thread). Telling the thread to stop first, without waiting,
    lets the reply end it at once."""

    pubsub_thread: Any

    def unsubscribe(self) -> None:
        if self.pubsub_thread:
            thread = self.pubsub_thread
            # redis-py 8.2's stop() takes a timeout for its join; earlier ones only
            # clear the flag.
            if "timeout" in inspect.signature(thread.stop).parameters:
                thread.stop(timeout=0)
            else:
                thread.stop()
        super().unsubscribe()  # type: ignore[misc]


class AppWorker(PromptUnsubscribe, SimpleWorker):
    """An RQ worker whose jobs run inside the application context (as Flask's Celery
    example does), so jobs call the same services as the web process.

    Jobs run in the worker's own process, not in a work horse forked per job: a fork
    costs ~10 ms a job, and the horse re-opens its database connections, while the
    engine's hops should cost a few milliseconds. What the fork gave is kept:

    * stop (RQ's stop-job command, used by cancel) interrupts the running task
      (``app.runtime.interrupt``), where RQ's ``SimpleWorker`` ignores it;
    * timeouts: the task's own SIGALRM timeout in the job, and the watchdog killing
      the worker 60 s past the RQ job timeout (RQ's monitor does that to a horse);
    * crashes: user code (`python` tasks) runs in a child process of its own
      (``capability.engine.isolation``); a crash of the worker itself loses only the
      attempt it ran, which the reaper retries once a new worker starts.

    Database connections stay in the pool between jobs."""

    flask_app: Flask | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watchdog = interrupt.Watchdog(self.name)

    def serialize(self) -> dict[str, Any]:
        # The pid space next to RQ's pid and hostname lets a reaper on the same machine
        # (and pid namespace) see at once that this worker died, instead of waiting for
        # its registration to expire.
        data: dict[str, Any] = super().serialize()
        space = pid_space()
        if space:
            data[PID_SPACE_FIELD] = space
        return data

    # Set by a SIGTERM that came before RQ's handlers were installed (``reconnect``).
    early_stop: threading.Event | None = None

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        interrupt.install()
        if self.early_stop is not None and self.early_stop.is_set():
            self._stop_requested = True

    def execute_job(self, job: Any, queue: Any) -> None:
        global _current
        _current = self
        interrupt.job_started(job.id)
        self.watchdog.arm(job.id, job.timeout)
        try:
            super().execute_job(job, queue)
        finally:
            _current = None
            self.watchdog.disarm()
            interrupt.job_ended()

    def continue_as(self, job_id: str, rq_timeout: float) -> bool:
        """The running job goes on with the work of ``job_id`` (never enqueued: see
        ``capability.engine.jobs``): stop-job commands for ``job_id`` reach it, the
        reaper sees this worker on it, the watchdog guards its timeout. False when this
        worker is shutting down or its job was asked to stop."""
        if self._stop_requested or interrupt.stop_pending():
            return False
        job = get_current_job()
        ttl = int(rq_timeout) + 60
        # RQ's alarm for the first job must not cut the next one short; the watchdog
        # (re-armed below) and the task's own timeout guard it instead.
        signal.alarm(0)
        with self.connection.pipeline() as pipe:
            self.set_current_job_id(job_id, pipeline=pipe)
            self.heartbeat(ttl, pipeline=pipe)
            if job is not None:
                if self.execution is not None:
                    self.execution.heartbeat(job.started_job_registry, ttl, pipeline=pipe)
                job.heartbeat(utcnow(), ttl, pipeline=pipe, xx=True)
            pipe.execute()
        interrupt.job_started(job_id)
        self.watchdog.arm(job_id, rq_timeout)
        return True

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        # RQ's stop-job command lands here (pub/sub thread) after setting
        # _stopped_job_id, which makes RQ record the job as stopped.
        job_id = self._stopped_job_id
        if job_id and interrupt.request_stop(job_id):
            self.watchdog.stopping(job_id)

    def perform_job(self, job: Any, queue: Any) -> bool:
        assert self.flask_app is not None
        with self.flask_app.app_context():
            try:
                return bool(super().perform_job(job, queue))
            finally:
                db.session.remove()

    # -- Redis going away (``app.runtime.reconnect``) --------------------------------------

    _registration_checked = 0.0

    @property
    def stop_requested(self) -> bool:
        """Whether SIGTERM or SIGINT asked this worker to stop (RQ raises StopRequested
        at once for an idle worker without setting ``_stop_requested``)."""
        return self._stop_requested or self._shutdown_requested_date is not None

    def _shutdown(self) -> None:
        # RQ asks Redis whether the worker is busy: with Redis away that raised in the
        # signal handler, and RQ's dequeue loop took it for one more failed connection,
        # ignoring the stop. This process knows whether it runs a job.
        try:
            super()._shutdown()
        except LOST:
            if serving() is self:
                self._stop_requested = True  # finish the job, then stop
                return
            raise StopRequested() from None

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        # An idle worker rides out an outage in RQ's dequeue loop; a Redis restarted
        # without its data (or flushed) then no longer lists it (Worker.all, /health,
        # cancel's stop-job): register again. Looked at every REGISTRATION_CHECK seconds.
        if pipeline is None and (
                time.monotonic() - self._registration_checked > REGISTRATION_CHECK):
            # Not the key: RQ's own heartbeat writes it back, without the rest.
            if not self.connection.hexists(self.key, "birth"):
                log.warning("worker %s: its registration was lost in Redis; registering "
                            "again", self.name)
                with self.connection.pipeline() as pipe:
                    pipe.hset(self.key, mapping=self.serialize())
                    worker_registration.register(self, pipe)
                    pipe.expire(self.key, self.worker_ttl + 60)
                    pipe.execute()
            self._registration_checked = time.monotonic()
        super().heartbeat(timeout, pipeline)

    def bury(self) -> None:
        """After a round lost to Redis, once it answers: stop this worker's pub/sub
        thread and record it dead (the reaper then retries at once what it ran)."""
        if self.pubsub_thread:
            self.pubsub_thread.stop()
        if self.pubsub is not None:
            with suppress(*LOST):
                self.pubsub.close()
        self.register_death()



_current: AppWorker | None = None  # the AppWorker running a job in this process


def serving() -> AppWorker | None:
    """The AppWorker whose job runs now in this process (None outside one: the tests'
    in-process workers, the web)."""
    return _current


class AppScheduler(RQScheduler):
    """RQ's scheduler, with queue locks that live ``SCHEDULER_LOCK_SECONDS`` (renewed
    every loop) and are retried every ``LOCK_RETRY_SECONDS`` when not held, instead of
    RQ's 61 s and 10 minutes: several schedulers may run (one per machine); one of them
    moves due jobs, the others stand by and take over soon after it dies."""

    def acquire_locks(self, auto_start: bool = False) -> set[str]:
        held = set()
        for name in sorted(self._queue_names):
            outcome = acquire_or_refresh_lock(self.connection, self.get_locking_key(name),
                                              self.name, SCHEDULER_LOCK_SECONDS)
            if outcome == "acquired" and self.lock_acquisition_time is not None:
                log.warning("scheduler pid %s took over the lock of queue %s",
                            os.getpid(), name)
            if outcome != "taken":
                held.add(name)
        self._scheduled_job_registries = []
        self._acquired_locks = held
        self.lock_acquisition_time = datetime.now()  # type: ignore[assignment]  # RQ: None
        return held

    def heartbeat(self) -> None:
        # RQ's heartbeat with this lifetime: renew what is held, drop what another took.
        self.last_heartbeat = utcnow()
        names = sorted(self._acquired_locks)
        renew = self.connection.register_script(ACQUIRE_OR_REFRESH_LOCK_SCRIPT)
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, "last_heartbeat", utcformat(self.last_heartbeat))
            pipe.expire(self.key, self.interval + 60)
            for name in names:
                renew(keys=[self.get_locking_key(name)], args=[self.name, SCHEDULER_LOCK_SECONDS],
                      client=pipe)
            results = pipe.execute()
        lost = {name for name, outcome in zip(names, results[2:], strict=True) if outcome == 0}
        if lost:
            log.warning("scheduler pid %s lost the lock of %s to another scheduler "
                        "(it stood still longer than %ss)", os.getpid(),
                        ", ".join(sorted(lost)), SCHEDULER_LOCK_SECONDS)
            self._acquired_locks -= lost
            self._scheduled_job_registries = []

    @property
    def should_reacquire_locks(self) -> bool:
        if self._queue_names == self.acquired_locks:
            return False
        if not self.lock_acquisition_time:
            return True
        waited = (datetime.now() - self.lock_acquisition_time).total_seconds()
        return waited > LOCK_RETRY_SECONDS

    flask_app: Flask | None = None
    _last_maintenance = 0.0
    early_stop: threading.Event | None = None  # as AppWorker's

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        if self.early_stop is not None and self.early_stop.is_set():
            self._stop_requested = True

    def enqueue_scheduled_jobs(self) -> None:
        super().enqueue_scheduled_jobs()
        if self.flask_app is not None:
            _run_hooks(self.flask_app, "tick", runtime_hooks(self.flask_app).tick)
        # Only a scheduler that moves jobs for some queue maintains: a standby stays idle.
        # The hooks must be safe to run twice anyway (two lock holders of different queues).
        if self.flask_app is None or not self.acquired_locks:
            return
        if time.monotonic() - self._last_maintenance < MAINTENANCE_SECONDS:
            return
        self._last_maintenance = time.monotonic()
        _run_hooks(self.flask_app, "maintenance", runtime_hooks(self.flask_app).maintenance)


def queues(app: Flask, names: list[str] | None = None) -> list[Queue]:
    conn = get_redis(app)
    return [Queue(name, connection=conn) for name in (names or app.config["RQ_QUEUES"])]


def run_worker(app: Flask, queue_names: list[str] | None = None, burst: bool = False) -> bool:
    # A worker starting is often a worker restarted after a crash: recover what it lost.
    _run_hooks(app, "worker-start", runtime_hooks(app).worker_start)
    # The worker itself needs no database connection while it waits for jobs.
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    # The app's objects live as long as the process: out of the collector's way, so a
    # full collection (~100 ms over the whole app) no longer lands inside a task hop.
    gc.collect()
    gc.freeze()
    conn = get_redis(app)
    cap = float(app.config.get("REDIS_RECONNECT_MAX") or 30)
    worked = False

    rounds = 0

    def new_worker(stop: threading.Event) -> AppWorker:
        nonlocal rounds
        rounds += 1
        if rounds > 1:
            # Redis is back, perhaps empty: send again at once what the database says
            # is queued, and record lost what the worker before this one was running.
            _run_hooks(app, "worker-start", runtime_hooks(app).worker_start)
        worker = AppWorker(queues(app, queue_names), connection=conn, worker_ttl=WORKER_TTL)
        worker.flask_app = app
        worker.early_stop = stop
        worker.max_connection_wait_time = cap  # RQ's own retries while idle
        # RQ narrates every job at INFO (held at WARNING by app.logs); this is the one
        # line an operator wants from a worker.
        log.info("worker pid %s started, listening on queues %s%s", os.getpid(),
                 ", ".join(q.name for q in worker.queues), " (burst)" if burst else "")
        return worker

    def run(worker: AppWorker) -> bool:
        nonlocal worked
        worked = bool(worker.work(burst=burst, with_scheduler=False)) or worked
        return burst  # a burst worker's end is its purpose; any other is a failure

    try:
        keep_working(conn, f"worker pid {os.getpid()}", cap, new_worker, run,
                     lambda w: w.stop_requested, lambda w: w.bury())
        return worked
    finally:
        log.info("worker pid %s stopped", os.getpid())


def run_scheduler(app: Flask, queue_names: list[str] | None = None, interval: int = 1) -> None:
    """Move due delayed and retried jobs onto their queues. Each queue's scheduler lock
    lives in Redis, so running several schedulers never enqueues a job twice."""
    names = queue_names or app.config["RQ_QUEUES"]
    # RQ's scheduler sets its logger to INFO unless told a level: keep the one app.logs set.
    scheduler = AppScheduler(names, connection=get_redis(app), interval=interval,
                             logging_level=logging.getLogger("rq.scheduler").level)
    scheduler.flask_app = app
    cap = float(app.config.get("REDIS_RECONNECT_MAX") or 30)
    what = f"scheduler pid {os.getpid()}"

    def this_scheduler(stop: threading.Event) -> AppScheduler:
        # The same one every round: its name holds the locks, which it takes back.
        scheduler.early_stop = stop
        held = scheduler.acquire_locks()
        log.info("%s started for queues %s (holding the lock of: %s)", what,
                 ", ".join(names), ", ".join(sorted(held)) or "none, standing by")
        return scheduler

    def run(it: AppScheduler) -> bool:
        it.work()
        return True  # RQ's scheduler returns only once stopped

    keep_working(scheduler.connection, what, cap, this_scheduler, run,
                 lambda it: bool(it._stop_requested))
    log.info("scheduler pid %s stopped", os.getpid())
