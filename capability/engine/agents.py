"""Agent steps (AGENTS.md, "Agent steps"): the answer to a task waiting in
``waiting_input``, and its timeout.

An ``agent`` task's attempt renders its ``with`` on a worker, keeps it on the task as
its ``prompt`` and waits (``runner.await_input``): no worker is held. An agent then
submits the output (``complete_step``), which is checked against the prompt's
``output_schema`` and ``checks`` (``dsl.agent_steps.output_errors``): refused, nothing
changes and the step keeps waiting; accepted, the attempt succeeds with it and the run
goes on, as an approval's answer does. ``fail_step`` fails it, not retried (the agent
said why). A waiting attempt past the task's timeout fails as a timeout (``expire``,
from the reaper's pass), so the task's retry policy decides, as for any timeout.

Each function is one step on the locked run inside its owner's transaction (a service,
or the reaper); what it makes ready goes out after the commit (``outbox``).
"""

from __future__ import annotations

from typing import Any

from app.errors import Conflict, ValidationFailed
from app.extensions import DbSession
from capability.dsl import TaskStatus
from capability.dsl.agent_steps import output_errors
from capability.engine import outbox, outputs, runner, state
from capability.engine.dispatch import Dispatcher
from capability.models import AttemptStatus, Run, TaskAttempt, TaskKind, TaskRun

__all__ = ["complete_step", "expire", "fail_step", "timeout_message"]

MAX_ERROR = 4000  # characters of an agent's reason kept as the task's error


def _waiting(session: DbSession, run_id: str, task_id: str) -> tuple[Run, TaskRun]:
    run = state.lock_run(session, run_id)
    task = next((t for t in run.tasks if t.task_id == task_id and t.kind == TaskKind.TASK),
                None)
    if task is None:
        raise ValidationFailed(f"The run has no task {task_id!r}",
                               [{"path": "task_id", "message": "unknown task"}])
    if task.status != TaskStatus.WAITING_INPUT:
        raise Conflict(f"Task {task_id!r} is {task.status}, not waiting for input")
    return run, task


def _answer(session: DbSession, task: TaskRun, outcome: state.Outcome) -> None:
    attempt = session.get(TaskAttempt, task.current_attempt_id)
    assert attempt is not None
    # complete_attempt takes a running attempt; a waiting one is answered now.
    attempt.status = AttemptStatus.RUNNING
    session.flush()
    if not runner.complete_attempt(session, attempt.id, outcome):
        raise Conflict(f"Task {task.task_id!r} was answered already")


def complete_step(session: DbSession, run_id: str, task_id: str, output: Any,
                  max_bytes: int = 0) -> Run:
    """Accept ``output`` for the waiting agent step, or refuse it (``ValidationFailed``
    listing every violation, ``path`` from ``output``) and change nothing."""
    run, task = _waiting(session, run_id, task_id)
    prompt = task.prompt or {}
    errors = output_errors(output, prompt.get("output_schema"), prompt.get("checks"))
    size = outputs.size_of(output)
    if max_bytes > 0 and size > max_bytes:
        errors.append({"path": "output", "message": f"is {size} bytes, over "
                                                    f"TASK_OUTPUT_MAX_BYTES ({max_bytes})"})
    if errors:
        count = f"{len(errors)} violation{'s' if len(errors) > 1 else ''}"
        raise ValidationFailed(f"The output of {task_id!r} was refused ({count}): the step "
                               "is still waiting", errors)
    _answer(session, task, state.Outcome.success(output))
    return run


def fail_step(session: DbSession, run_id: str, task_id: str, error: str) -> Run:
    """Fail the waiting agent step with ``error``, not retried."""
    _, task = _waiting(session, run_id, task_id)
    text = " ".join(error.split())[:MAX_ERROR] or "failed by the agent"
    _answer(session, task, state.Outcome.failure(text, retriable=False))
    return task.run


def timeout_message(seconds: float) -> str:
    return f"timed out after {seconds:g}s waiting for an agent's output"


def expire(session: DbSession, dispatcher: Dispatcher, run_id: str, attempt_id: str,
           seconds: float) -> bool:
    """The waiting attempt ``attempt_id`` is past its timeout: a retriable failure (the
    task's retry policy decides), in a transaction of its own. False, and nothing
    written, when it was answered meanwhile."""
    outbox.begin(session, dispatcher)
    try:
        run = state.lock_run(session, run_id)
        task = next((t for t in run.tasks if t.current_attempt_id == attempt_id), None)
        attempt = session.get(TaskAttempt, attempt_id)
        if (task is None or task.status != TaskStatus.WAITING_INPUT or attempt is None
                or attempt.status != AttemptStatus.WAITING):
            outbox.rollback(session)
            return False
        attempt.status = AttemptStatus.RUNNING
        session.flush()
        outcome = state.Outcome.failure(timeout_message(seconds))
        if not runner.complete_attempt(session, attempt_id, outcome):
            outbox.rollback(session)
            return False
    except Exception:
        outbox.rollback(session)
        raise
    outbox.commit(session)
    return True
