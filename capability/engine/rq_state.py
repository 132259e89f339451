"""What RQ holds about attempts and workers, read once per reaper pass.

Split from ``reaper`` so the decisions (what is lost, what to re-send) read apart from
the Redis plumbing (job states, queue lists, worker liveness)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.worker import Worker

from app.runtime.worker import PID_SPACE_FIELD, pid_alive, pid_space
from capability.engine.dispatch import JOB_PREFIX

# A live worker rewrites a lost hash within RQ's job-monitoring heartbeat (30 s) or its
# idle heartbeat (WORKER_TTL - 15 s); twice that without a hash means it is gone.
WORKER_GONE_AFTER = 60.0
GONE_KEY = "apg:reaper:worker-gone:"
GONE_MEMORY_SECONDS = 3600

ALIVE_JOB = ("queued", "scheduled", "started", "deferred", "created")
WORKER_KEY = Worker.redis_worker_namespace_prefix


@dataclass
class JobState:
    status: str | None  # None: Redis has no such job
    worker: str | None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class WorkerLiveness:
    """Worker liveness, asked once per worker and pass."""

    def __init__(self, conn: Redis, now: dt.datetime) -> None:
        self.conn = conn
        self.now = now.timestamp()
        self.space = pid_space()
        self._seen: dict[str, tuple[str, str | None]] = {}
        self.dead: set[str] = set()

    def state(self, name: str | None) -> str:
        """``alive``, ``dead`` or ``unknown`` (no hash yet, not missing for long)."""
        return self._look(name)[0] if name else "unknown"

    def current_job(self, name: str | None) -> str | None:
        return self._look(name)[1] if name else None

    def _look(self, name: str) -> tuple[str, str | None]:
        if name not in self._seen:
            self._seen[name] = self._decide(name)
            if self._seen[name][0] == "dead":
                self.dead.add(name)
        return self._seen[name]

    def _decide(self, name: str) -> tuple[str, str | None]:
        raw = cast(dict[Any, Any], self.conn.hgetall(WORKER_KEY + name))
        data = {_text(k): _text(v) for k, v in raw.items()}
        gone_key = GONE_KEY + name
        if not data.get("birth"):
            # No hash, or only the heartbeat field a live worker writes first after Redis
            # lost its hash (the rest follows within a heartbeat).
            self.conn.set(gone_key, self.now, nx=True, ex=GONE_MEMORY_SECONDS)
            if data.get("last_heartbeat"):
                return "unknown", None
            first = float(_text(self.conn.get(gone_key)) or self.now)
            return ("dead" if self.now - first >= WORKER_GONE_AFTER else "unknown"), None
        current = data.get("current_job") or None
        if data.get("death") or self.local_pid_gone(data):
            # Once its hash expires, a worker known dead stays dead without another wait.
            self.conn.set(gone_key, 0, ex=GONE_MEMORY_SECONDS)
            return "dead", current
        # Alive: a later loss of its hash starts a fresh wait.
        self.conn.delete(gone_key)
        return "alive", current

    def local_pid_gone(self, data: dict[str | None, str | None]) -> bool:
        pid = data.get("pid")
        return bool(self.space and data.get(PID_SPACE_FIELD) == self.space and pid
                    and pid.isdigit() and not pid_alive(int(pid)))

    def bury_dead(self) -> None:
        """Unregister registered workers of this pid space whose process is gone, so
        worker lists and counts drop them now rather than when their key expires."""
        for key in Worker.all_keys(connection=self.conn):
            raw = cast(dict[Any, Any], self.conn.hgetall(key))
            data = {_text(k): _text(v) for k, v in raw.items()}
            if data.get("death") or not self.local_pid_gone(data):
                continue
            worker = Worker.find_by_key(key, connection=self.conn)
            if worker is not None:
                worker.register_death()  # RQ's own: unregisters, keeps the hash 60 s
                name = key[len(WORKER_KEY):]
                self.conn.set(GONE_KEY + name, 0, ex=GONE_MEMORY_SECONDS)
                self.dead.add(name)


def job_id(attempt_id: str, end: bool = False) -> str:
    return JOB_PREFIX + attempt_id + ("-end" if end else "")


def job_states(conn: Redis, ids: list[str]) -> dict[str, JobState]:
    states: dict[str, JobState] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        with conn.pipeline(transaction=False) as pipe:
            for jid in chunk:
                pipe.hmget(Job.key_for(jid), ["status", "worker_name"])
            rows = pipe.execute()
        for jid, (status, worker) in zip(chunk, rows, strict=True):
            states[jid] = JobState(_text(status) or None, _text(worker) or None)
    return states


class RedisView:
    """What RQ holds, read once per pass where it can be."""

    # Past this many lookups in one list, read the whole list once instead of an
    # LPOS (a scan of the list) per job.
    SNAPSHOT_AFTER = 20

    def __init__(self, conn: Redis, workers: WorkerLiveness, states: dict[str, JobState]) -> None:
        self.conn = conn
        self.workers = workers
        self.states = states
        self._lookups: dict[str, int] = {}
        self._lists: dict[str, set[str]] = {}

    def state(self, jid: str) -> JobState:
        if jid not in self.states:
            self.states.update(job_states(self.conn, [jid]))
        return self.states[jid]

    def _in_list(self, key: str, jid: str) -> bool:
        if key not in self._lists:
            self._lookups[key] = self._lookups.get(key, 0) + 1
            if self._lookups[key] <= self.SNAPSHOT_AFTER:
                return self.conn.lpos(key, jid) is not None
            members = cast(list[Any], self.conn.lrange(key, 0, -1))
            self._lists[key] = {_text(v) or "" for v in members}
        return jid in self._lists[key]

    def _waiting_in(self, jid: str, queue: str) -> bool:
        """A job whose hash says queued is really waiting: in its queue, or in the
        intermediate list a worker moves it through (for less than RQ's 1 minute)."""
        q = Queue(queue, connection=self.conn)
        if self._in_list(q.key, jid):
            return True
        if self.conn.lpos(q.intermediate_queue_key, jid) is None:
            return False
        inter = IntermediateQueue(q.key, connection=self.conn)
        return inter.set_first_seen(jid) or not inter.should_be_cleaned_up(jid)

    def alive(self, jid: str, queue: str) -> tuple[bool, str]:
        """Whether RQ will still run this job, and if not, why."""
        state = self.state(jid)
        if state.status is None:
            return False, "its job is missing from Redis"
        if state.status not in ALIVE_JOB:
            return False, f"its job is {state.status} in RQ"
        if state.status == "queued" and not self._waiting_in(jid, queue):
            # Read again: a worker may have taken it between the reads.
            again = _text(self.conn.hget(Job.key_for(jid), "status"))
            if again == "queued":
                return False, "its job is in no queue"
            return again in ALIVE_JOB, f"its job is {again} in RQ"
        if state.status == "scheduled":
            registry = ScheduledJobRegistry(queue, connection=self.conn)
            if self.conn.zscore(registry.key, jid) is None:
                return False, "its job is scheduled but in no scheduled registry"
        if state.status == "started" and self.workers.state(state.worker) == "dead":
            return False, f"worker {state.worker} died"
        return True, ""

    def discard(self, jid: str, queue: str) -> None:
        """Remove what is left of a dead job, so that RQ's own cleanup of it later
        cannot touch the job sent again under the same id."""
        try:
            Job.fetch(jid, connection=self.conn).delete(remove_from_queue=True)
        except NoSuchJobError:
            self.conn.delete(Job.key_for(jid))
        self.conn.lrem(Queue(queue, connection=self.conn).intermediate_queue_key, 0, jid)
        self.states[jid] = JobState(None, None)


