"""Several schedulers: one holds the queue locks and moves due retries and delays; when
it is killed, a standby takes the locks over within the locks' lifetime."""

from __future__ import annotations

import os
import signal
import time

from rq.scheduler import RQScheduler

from app.runtime import worker as runtime
from app.runtime.redis_conn import get_redis
from tests.support.runs import wait_for


def test_a_standby_scheduler_takes_over_soon_after_the_holder_is_killed(app, processes):
    conn = get_redis(app)
    keys = [RQScheduler.get_locking_key(name) for name in app.config["RQ_QUEUES"]]
    procs = [processes("scheduler"), processes("scheduler")]

    def holder() -> str | None:
        owners = {conn.get(key) for key in keys}
        return owners.pop().decode() if len(owners) == 1 and None not in owners else None

    def pid_of(name: str) -> int:
        return int(conn.hget(f"rq:scheduler:{name}", "pid") or 0)

    ours = {p.pid for p in procs}
    # An earlier test's killed scheduler may still own the locks until they expire:
    # wait until one of ours holds them.
    first = wait_for(lambda: (name := holder()) and pid_of(name) in ours and name, 60,
                     "none of our schedulers took every queue's lock")
    victim = next(p for p in procs if p.pid == pid_of(first))
    standby = next(p for p in procs if p is not victim)
    wait_for(lambda: standby.poll() is None and any(
        pid_of(key.decode().rsplit(":", 1)[1]) == standby.pid
        for key in conn.keys("rq:scheduler:*")), 60, "the standby did not start")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed = time.monotonic()
    # Generous: the bound itself is the locks' lifetime plus the standby's retry period.
    second = wait_for(lambda: (name := holder()) != first and name, 40,
                      "the standby did not take the locks over")
    took = time.monotonic() - killed
    assert pid_of(second) == standby.pid
    assert runtime.SCHEDULER_LOCK_SECONDS + runtime.LOCK_RETRY_SECONDS <= 15, took
