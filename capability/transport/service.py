"""Queue and worker status of the RQ transport the engine runs on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from app.errors import Forbidden
from app.security.actor import Actor


@dataclass(frozen=True)
class QueueStatus:
    name: str
    queued: int
    started: int
    scheduled: int
    failed: int


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    state: str
    queues: list[str]
    current_job: str | None
    last_heartbeat: str | None
    successful: int
    failed: int


def queue_status(conn: Redis, names: list[str]) -> list[QueueStatus]:
    out = []
    for name in names:
        queue = Queue(name, connection=conn)
        out.append(QueueStatus(
            name=name,
            queued=queue.count,
            started=StartedJobRegistry(queue=queue).count,
            scheduled=ScheduledJobRegistry(queue=queue).count,
            failed=FailedJobRegistry(queue=queue).count,
        ))
    return out


def worker_status(conn: Redis) -> list[WorkerStatus]:
    out = []
    for worker in sorted(Worker.all(connection=conn), key=lambda w: w.name):
        out.append(WorkerStatus(
            name=worker.name,
            state=str(worker.get_state()),
            queues=worker.queue_names(),
            current_job=worker.get_current_job_id(),
            last_heartbeat=worker.last_heartbeat.isoformat() if worker.last_heartbeat else None,
            successful=worker.successful_job_count,
            failed=worker.failed_job_count,
        ))
    return out


def transport_status(actor: Actor, conn: Redis, names: list[str]) -> dict[str, Any]:
    """Queues and workers are shared by every team, so only an Admin sees them."""
    if not actor.is_admin:
        raise Forbidden("Only an Admin may see the workers and queues")
    return {"queues": queue_status(conn, names), "workers": worker_status(conn)}


def health(conn: Redis, names: list[str]) -> dict[str, Any]:
    conn.ping()
    return {
        "status": "ok",
        "workers": len(Worker.all(connection=conn)),  # count() keeps dead workers
        "queued": sum(Queue(n, connection=conn).count for n in names),
    }
