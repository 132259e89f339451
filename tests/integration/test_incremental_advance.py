"""Incremental advance, driven in this process without RQ: a completion decides only the
finished task's downstream tasks (skips and upstream failures still cascade), joins of
many tasks are decided once, expressions see the tasks they name, a hop's statements do
not grow with the run, and live updates carry what ``runs.run_dict`` shows."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from sqlalchemy import select

from app.extensions import db
from capability import live
from capability.engine import controls, instant, jobs, runner, state
from capability.engine.state import AttemptContext, Outcome
from capability.models import Run, TaskAttempt, TaskRun
from capability.runs import service as runs
from tests.support.driver import Driver, Fifo, fail, noop, statements, unit


@pytest.fixture(params=["instant", "general"])
def op(request, author):
    """``author``, with the path instant types take: their own (``instant.run_attempt``,
    as workers do) or the general one (begin, then complete)."""
    return {**author, "path": request.param}


def test_skips_and_upstream_failures_cascade_from_one_completion(app, client, op):
    run = Driver(app, client, op, [
        noop("a"),
        fail("bad", "a"),
        noop("c", "bad"),
        noop("d", "bad", "c"),  # decidable only once c, in the same step, is decided
        noop("e", "d", trigger_rule="all_done"),
        noop("s1", "a", when="{{ tasks.a.output == 'never' }}"),
        noop("s2", "s1"),
        noop("s3", "s1", "s2"),
        noop("s4", "s3", trigger_rule="none_failed"),
    ])
    assert run.drain() == "failed"
    status = {k: t.status for k, t in run.tasks().items()}
    assert status == {
        "a": "succeeded", "bad": "failed", "c": "upstream_failed", "d": "upstream_failed",
        "e": "succeeded", "s1": "skipped", "s2": "skipped", "s3": "skipped",
        "s4": "succeeded",
    }


def test_a_run_whose_last_task_is_skipped_ends(app, client, op):
    run = Driver(app, client, op, [
        noop("a"), noop("b", "a", when="{{ false }}"), noop("c", "b"),
    ])
    assert run.drain() == "succeeded"
    assert [t.status for t in run.tasks().values()].count("skipped") == 2


def test_a_wide_join_is_decided_once_after_its_last_upstream(app, client, op):
    leaves = [f"l{i:03d}" for i in range(130)]  # more than are read row by row
    run = Driver(app, client, op, [
        noop("root"),
        *(noop(leaf, "root") for leaf in leaves[:-1]),
        fail(leaves[-1], "root"),
        noop("all_success", *leaves),
        noop("all_done", *leaves, trigger_rule="all_done"),
        noop("one_failed", *leaves, trigger_rule="one_failed"),
        noop("small", leaves[0], leaves[1], "root"),  # a join read row by row
    ])
    assert run.step() == "root"
    assert len(run.fifo.items) == 130
    for _ in range(129):
        run.step()
        assert {"all_success", "all_done", "one_failed"} & set(run.scopes) == set()
    assert run.drain() == "failed"
    tasks = run.tasks()
    assert tasks["all_success"].status == "upstream_failed"
    assert (tasks["all_done"].status, tasks["all_done"].attempts) == ("succeeded", 1)
    assert (tasks["one_failed"].status, tasks["one_failed"].attempts) == ("succeeded", 1)
    assert (tasks["small"].status, tasks["small"].attempts) == ("succeeded", 1)


def test_a_hop_reads_the_same_whatever_the_size_of_the_run(app, client, author):
    leaves = [f"l{i:03d}" for i in range(150)]
    run = Driver(app, client, author, [
        noop("root"), *(noop(leaf, "root") for leaf in leaves),
        noop("join", *leaves), noop("join2", *leaves, trigger_rule="all_done"),
    ])
    run.step()
    send = run.fifo.items.popleft()
    with app.app_context(), statements(app) as seen:
        with unit(db.session, run.fifo):
            ctx = runner.begin_attempt(db.session, send.attempt_id, "test")
            assert isinstance(ctx, AttemptContext)
        begin = len(seen)
        with unit(db.session, run.fifo):
            assert runner.complete_attempt(db.session, send.attempt_id, Outcome.success(1))
        complete = len(seen) - begin
        db.session.remove()
        sqlite = db.engine.dialect.name == "sqlite"
    # begin: lock, attempt + task, 2 updates; complete: lock, attempt + task + the 2
    # joins (on SQLite the joins after the first write), 2 updates, one probe for an
    # unfinished upstream of the joins (they have the same upstreams).
    assert begin <= 4, seen
    assert complete <= (6 if sqlite else 5), seen[begin:]
    assert not any("count(" in s for s in seen), seen


def test_an_instant_hop_is_a_lock_a_write_and_a_probe(app, client, author):
    leaves = [f"l{i:03d}" for i in range(150)]
    run = Driver(app, client, author, [
        noop("root"), *(noop(leaf, "root") for leaf in leaves), noop("join", *leaves),
    ])
    run.step()
    send = run.fifo.items.popleft()
    assert send.instant
    ran: list[str] = []

    def execute(ctx: AttemptContext) -> Outcome:
        ran.append(ctx.task.id)
        return Outcome.success(ctx.task.id)

    with app.app_context(), statements(app) as seen:
        with unit(db.session, run.fifo) as box:
            handled = instant.run_attempt(db.session, send.attempt_id, "test", execute)
        db.session.remove()
        sqlite = db.engine.dialect.name == "sqlite"
    assert handled is not None and handled.ran
    assert box.sends == []  # the join waits for 149 others
    # The lock's statement reads the run, task and attempt; PostgreSQL writes the
    # attempt and the task in one statement; the join is not read, only probed.
    assert len(seen) == (4 if sqlite else 3), seen
    assert "count(" not in " ".join(seen) and "apg_task_run.output" not in seen[-1]
    [leaf] = ran
    tasks = run.tasks()
    assert tasks[leaf].status == "succeeded" and tasks[leaf].output == leaf
    assert tasks["join"].status == "pending"
    with app.app_context():
        attempt = db.session.get(TaskAttempt, send.attempt_id)
        assert (attempt.status, attempt.worker) == ("succeeded", "test")
        assert attempt.started_at is not None and attempt.finished_at is not None
        db.session.remove()


def test_a_leaf_asks_whether_its_run_is_over_in_its_write(app, client, author):
    """A task nothing depends on (a fan-out without a join: bench/engine.py's (c)) asks
    whether another task is unfinished in the statement that records it, on PostgreSQL;
    no leaf counts the run's statuses, and the last one ends the run."""
    leaves = [f"l{i:02d}" for i in range(30)]
    run = Driver(app, client, author, [noop("root"), *(noop(leaf, "root") for leaf in leaves)])
    run.step()
    assert len(run.fifo.items) == len(leaves)
    hops: list[list[str]] = []
    while run.fifo.items:
        send = run.fifo.items.popleft()
        with app.app_context(), statements(app) as seen:
            with unit(db.session, run.fifo) as box:
                handled = instant.run_attempt(
                    db.session, send.attempt_id, "test",
                    lambda ctx: Outcome.success(ctx.task.id))
            db.session.remove()
            sqlite = db.engine.dialect.name == "sqlite"
        assert handled is not None and handled.ran and box.sends == []
        hops.append(seen)
    # PostgreSQL: the lock, then the write that answers; SQLite: two writes and a probe.
    assert all(len(seen) == (4 if sqlite else 2) for seen in hops[:-1]), hops[0]
    assert not any("count(" in statement for seen in hops[:-1] for statement in seen)
    assert any("count(" in statement for statement in hops[-1])  # the last one concludes
    assert run.status() == "succeeded"
    assert {t.status for t in run.tasks().values()} == {"succeeded"}


def test_a_fan_out_is_queued_from_columns(app, client, op):
    """The hop that decides a fan-out reads its downstream tasks as columns and queues
    them with two executemany statements, no ``TaskRun`` loaded; only a task whose
    verdict needs more (``when``, ``for_each``, a skip) is loaded and decided as before."""
    plain = [f"p{i:02d}" for i in range(runner.PREFETCH_DOWNSTREAM + 4)]
    run = Driver(app, client, op, [
        noop("root", with_={"value": [1, 2]}),
        *(noop(task_id, "root") for task_id in plain),
        noop("never", "root", when="{{ false }}"),
        noop("each", "root", for_each="{{ tasks.root.output }}", with_={"value": "{{ item }}"}),
        noop("only_on_failure", "root", trigger_rule="one_failed"),
    ])
    with statements(app) as seen:
        assert run.step() == "root"
    # Whole rows: each of never, each and only_on_failure is loaded by its primary key
    # (session.get); the plain ones are not loaded, nor read together.
    whole = [s for s in seen if "apg_task_run.retry_base" in s and "apg_task_attempt" not in s]
    by_key = [s for s in whole if s.rstrip().endswith(("apg_task_run.id = %(pk_1)s",
                                                       "apg_task_run.id = ?"))]
    assert len(by_key) == 3, whole
    assert not any("apg_task_run.task_id IN" in s for s in whole), whole
    sent = {s.attempt_id: s for s in run.fifo.items}
    tasks = run.tasks()
    # A `when` is evaluated by the worker that begins the task, never under the lock of
    # this hop (issue 11, item 3): queued here, skipped once its attempt began.
    assert tasks["never"].status == "queued" and tasks["only_on_failure"].status == "skipped"
    # Its elements are made by a job of their own (foreach.start), queued here.
    assert tasks["each"].status == "queued"
    with app.app_context():
        attempts = {a.task_run_id: a for a in db.session.execute(
            select(TaskAttempt).join(TaskRun).where(TaskRun.run_id == run.run_id,
                                                    TaskAttempt.item_id.is_(None))).scalars()}
        db.session.remove()
    for task_id in plain:
        task = tasks[task_id]
        attempt = attempts[task.id]
        assert (task.status, task.attempts, task.current_attempt_id) == ("queued", 1, attempt.id)
        assert (attempt.number, attempt.status, attempt.queue) == (1, "queued", "default")
        assert attempt.created_at is not None and attempt.worker is None
        assert sent[attempt.id].instant and sent[attempt.id].timeout is None
    assert run.drain() == "succeeded"
    tasks = run.tasks()
    assert tasks["each"].output == [1, 2]
    assert all(tasks[t].output is None and tasks[t].status == "succeeded" for t in plain)
    never = tasks["never"]
    assert (never.status, never.reason, never.attempts, never.current_attempt_id) == (
        "skipped", "when was false: {{ false }}", 0, None)


def test_templates_see_the_tasks_they_name_and_nothing_more(app, client, op):
    run = Driver(app, client, op, [
        noop("a", with_={"value": [1, 2]}),
        noop("b", "a", with_={"value": "{{ tasks.a.output | length }}"}),
        noop("c", "b", with_={"value": "{{ tasks['a'].status }}-{{ tasks.b.output }}"}),
        noop("d", "c", with_={"value": "{{ tasks | length }}"}),
        noop("e", "c", with_={"value": "{{ tasks.items() | list | length }}"}),
        noop("f", "c", when="{{ tasks.b.output == 2 }}", for_each="{{ tasks.a.output }}",
             with_={"value": "{{ item * tasks.b.output }}"}),
        noop("g", "f", with_={"value": "{{ tasks.f.output }} {{ tasks.e.status }}"}),
    ])
    assert run.drain() == "succeeded"
    out = {k: t.output for k, t in run.tasks().items()}
    assert out["b"] == 2 and out["c"] == "succeeded-2"
    assert out["d"] == 7 and out["e"] == 7  # the whole of `tasks`
    assert out["f"] == [2, 4]
    assert out["g"] == "[2, 4] succeeded"
    assert set(run.scopes["a"]["tasks"]) == set()
    assert set(run.scopes["b"]["tasks"]) == {"a"}
    assert run.scopes["b"]["tasks"]["a"] == {"output": [1, 2], "status": "succeeded",
                                            "error": None}
    assert set(run.scopes["c"]["tasks"]) == {"a", "b"}
    assert set(run.scopes["d"]["tasks"]) == set("abcdefg")
    assert list(run.scopes["e"]["tasks"]) == list("abcdefg")  # in run order, as before
    assert set(run.scopes["f"]["tasks"]) == {"b"} and run.scopes["f"]["item"] in (1, 2)


def test_the_lazy_scope_is_the_full_scope_cut_down(app, client, op):
    run = Driver(app, client, op, [
        noop("a", with_={"value": {"x": 1}}),
        fail("bad", "a"),
        noop("c", "bad", trigger_rule="all_done"),
    ])
    assert run.drain() == "failed"
    with app.app_context():
        row = db.session.get(Run, run.run_id)
        full = state.scope_for(db.session, row, None)
        assert full["tasks"] == {t.task_id: {"output": t.output, "status": t.status,
                                             "error": t.error}
                                 for t in row.tasks if t.kind == "task"}
        part = state.scope_for(db.session, row, frozenset({"bad"}))
        assert part["tasks"] == {"bad": full["tasks"]["bad"]}
        assert part["tasks"]["bad"]["error"] == "boom"
        assert {k: v for k, v in part.items() if k != "tasks"} == \
            {k: v for k, v in full.items() if k != "tasks"}
        db.session.remove()


def test_a_completion_while_paused_is_decided_on_resume(app, client, op):
    run = Driver(app, client, op, [noop("a"), noop("b", "a")])
    send = run.fifo.items.popleft()
    with app.app_context():
        with unit(db.session, run.fifo):  # the run's first begin: its lock exclusive
            assert isinstance(runner.begin_attempt(db.session, send.attempt_id, "test",
                                                   exclusive=True), AttemptContext)
        with unit(db.session, run.fifo):
            controls.pause(db.session, run.run_id)
        with unit(db.session, run.fifo) as box:
            assert runner.complete_attempt(db.session, send.attempt_id, Outcome.success(1))
        assert box.sends == []
        db.session.remove()
    assert run.tasks()["b"].status == "pending"
    with app.app_context():
        with unit(db.session, run.fifo):
            controls.resume(db.session, run.run_id)
        db.session.remove()
    assert run.drain() == "succeeded"


def test_an_early_job_waits_for_its_attempt_then_begins(app, client, op):
    run = Driver(app, client, op, [noop("a")])
    send = run.fifo.items.popleft()
    fifo = Fifo()
    with app.app_context():
        attempt = db.session.get(TaskAttempt, send.attempt_id)
        due = state.now() + dt.timedelta(seconds=0.4)
        attempt.not_before = due
        db.session.commit()
        # The engine says how long to wait, and the job waits with no lock held.
        with unit(db.session, fifo):
            again = runner.begin_attempt(db.session, send.attempt_id, "test", exclusive=True,
                                         early=True)
        assert isinstance(again, runner.Again) and 0.3 <= again.wait <= 0.4
        t0 = time.monotonic()
        assert jobs.run_one(db.session, fifo, send.attempt_id, False, "test") is not None
        waited = time.monotonic() - t0
        assert waited >= 0.3
        started = db.session.get(TaskAttempt, send.attempt_id).started_at
        assert started >= due
        t0 = time.monotonic()  # begun: a duplicate neither waits nor begins
        assert jobs.run_one(db.session, fifo, send.attempt_id, False, "dup") is None
        assert time.monotonic() - t0 < 0.3
        db.session.remove()


def _old_run_state(session, run) -> dict[str, Any]:
    """What ``live.run_state`` published before it read in bulk (from ``run_dict``)."""
    full = runs.run_dict(session, run)

    def task(t: dict[str, Any]) -> dict[str, Any]:
        return {
            **{k: t[k] for k in ("task_id", "status", "attempts", "reason", "started_at",
                                 "finished_at", "items_total", "item_counts",
                                 "attempt_history_total")},
            "items": [{"index": i["index"], "status": i["status"]} for i in t["items"]],
            "attempt_history": [
                {**{k: a.get(k) for k in ("number", "status", "worker", "started_at",
                                          "finished_at")}, "item": a.get("item")}
                for a in t["attempt_history"]],
        }

    return {**{k: full[k] for k in ("id", "status", "created_at", "started_at",
                                    "finished_at", "retry_blocked")},
            "controls": [],  # failed, and compensated: no control is left
            "tasks": [task(t) for t in full["tasks"]],
            "compensations": [task(t) for t in full["compensations"]]}


def test_live_state_is_read_in_bulk_and_unchanged(app, client, op):
    run = Driver(app, client, op, [
        noop("a", with_={"value": [1, 2, 3]},
             compensate={"type": "noop", "with": {"value": "{{ tasks.a.output }}"}}),
        noop("each", "a", for_each="{{ tasks.a.output }}", with_={"value": "{{ item }}"},
             compensate={"type": "noop", "with": {"value": "{{ item }}"}}),
        fail("bad", "each", retry={"max_attempts": 2, "delay": "0s", "jitter": False}),
        noop("after", "bad"),
    ])
    assert run.drain() == "failed"
    with app.app_context(), statements(app) as seen:
        row = db.session.get(Run, run.run_id)
        old = _old_run_state(db.session, row)
        before = len(seen)
        state = live.run_state(db.session, row)
        # Tasks, a page of elements, element counts, a page of attempts (engine.snapshot).
        assert len(seen) - before == 4
        # What workers publish: the same state, serialised task by task.
        raw = live.run_state_json(db.session, row)
        db.session.remove()
    assert state == old
    assert isinstance(raw, live.RawJSON) and json.loads(raw) == state
    assert len(state["compensations"]) == 2
    assert [len(t["attempt_history"]) for t in state["tasks"]] == [1, 3, 2, 0]
    assert [i["index"] for i in state["tasks"][1]["items"]] == [0, 1, 2]
    with app.app_context():  # an undo step reads the output of the task it undoes
        undo = db.session.execute(select(TaskRun).where(
            TaskRun.run_id == run.run_id, TaskRun.task_id == "a",
            TaskRun.kind == "compensation")).scalar_one()
        assert (undo.status, undo.output) == ("succeeded", [1, 2, 3])
        db.session.remove()
