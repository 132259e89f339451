"""What ``Dispatcher.send`` puts on RQ: a wide fan-out in pipelines of
``Dispatcher.PIPELINE`` jobs, every job once, in the order sent, on its own queue."""

from __future__ import annotations

from rq import Queue

from app.ids import new_id
from app.runtime.redis_conn import get_redis
from capability.engine.dispatch import JOB_PREFIX, Dispatcher, Send, dispatcher_for


def test_a_wide_fan_out_is_enqueued_in_slices_in_order(app, monkeypatch):
    conn = get_redis(app)
    queues = {name: Queue(name, connection=conn) for name in ("default", "low")}
    for queue in queues.values():
        queue.empty()
    dispatcher = dispatcher_for(app)
    sends = [Send(new_id(), "default", timeout=5.0, instant=True)
             for _ in range(2 * Dispatcher.PIPELINE + 50)]
    sends.insert(7, Send(new_id(), "low"))
    piped: list[int] = []
    pipeline = type(conn.pipeline())
    execute = pipeline.execute

    def counting(pipe, *args, **kwargs):
        piped.append(len(pipe.command_stack))
        return execute(pipe, *args, **kwargs)

    monkeypatch.setattr(pipeline, "execute", counting)
    dispatcher.send(sends)
    monkeypatch.undo()
    default = [s for s in sends if s.queue == "default"]
    assert queues["default"].job_ids == [JOB_PREFIX + s.attempt_id for s in default]
    assert queues["low"].job_ids == [JOB_PREFIX + sends[7].attempt_id]
    assert len(piped) == 4  # 100 + 100 + 50 jobs on "default", 1 on "low"
    job = queues["default"].fetch_job(JOB_PREFIX + default[0].attempt_id)
    assert job is not None and job.args == (default[0].attempt_id, True)
    assert job.timeout == 35  # the task's 5 s and the 30 s backstop
    for queue in queues.values():
        queue.empty()
