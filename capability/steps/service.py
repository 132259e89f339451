"""Testing one step of a workflow without a run (CONNECTORS.md, "Testing a step").

An Author of the workflow's team gives params and the outputs its upstream tasks should
seem to have had; the task runs on a worker of its queue (``engine.steptest.run_test``), as an
attempt would, and the result comes back: ``{status, output, error, logs, took_ms}``.
Nothing of a run is made. Each test is audited (who, which task, the outcome; not the
output: it may be data the audit trail should not keep).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.results import Result

from app.audit.recorder import build_event, record
from app.errors import NotFound, ServiceError, ValidationFailed
from app.extensions import DbSession
from app.security.actor import Actor
from capability import dsl
from capability import service as workflows
from capability.engine import steptest
from capability.runs import starts

# Seconds past the task's own timeout that the web waits for the worker's answer (a
# worker busy with other jobs, the queue's backlog), and the most it waits at all: a
# test is a person waiting on a page.
ANSWER_MARGIN = 15.0
ANSWER_MAX = 300.0


class UpstreamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    output: Any = None


class StepTestIn(BaseModel):
    """``POST /api/v1/workflows/<id>/tasks/<task_id>/test``."""

    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = Field(default_factory=dict)
    upstream: dict[str, UpstreamIn] = Field(default_factory=dict)
    # A for_each task's element to test with (default: the first its list gives).
    item: Any = None


class NoAnswer(ServiceError):
    status = 504


def _check(definition: dsl.WorkflowDefinition, task_id: str, body: StepTestIn
           ) -> tuple[dsl.TaskSpec, dict[str, Any]]:
    spec = next((t for t in definition.tasks if t.id == task_id), None)
    if spec is None:
        raise NotFound(f"task {task_id!r} not found in the workflow's current version")
    if spec.type in steptest.NEEDS_A_RUN:
        raise ValidationFailed("This task cannot be tested alone", [
            {"path": "task_id", "message": f"a {spec.type} task needs a run: start one"}])
    known = {t.id for t in definition.tasks}
    errors = [{"path": f"upstream.{name}", "message": "not a task of this workflow"}
              for name in body.upstream if name not in known]
    params, param_errors = dsl.validate_params(definition, body.params)
    errors += [{"path": e.get("path") or "params", "message": e["message"]}
               for e in param_errors]
    if errors:
        raise ValidationFailed("The test's scope is not valid", errors)
    return spec, params


def test_step(session: DbSession, actor: Actor, redis: Redis, workflow_id: str,
              task_id: str, body: StepTestIn) -> dict[str, Any]:
    workflow = workflows.get_workflow(session, actor, workflow_id)
    workflows.require_author(actor, workflow.team_id)
    definition = starts.current_definition(session, workflow)
    version_id = starts.current_version_id(session, workflow)
    spec, params = _check(definition, task_id, body)
    request = {"test_id": steptest.new_test_id(), "version_id": version_id,
               "team_id": workflow.team_id, "task_id": task_id, "params": params,
               "upstream": {k: v.model_dump() for k, v in body.upstream.items()}}
    if "item" in body.model_fields_set:
        request["item"] = body.item
    team = workflow.team
    session.rollback()  # no transaction held while the worker runs it
    limit = dsl.effective_timeout(spec, definition.defaults)
    wait = min(ANSWER_MAX, (limit or ANSWER_MAX) + ANSWER_MARGIN)
    queue = Queue(dsl.effective_queue(spec, definition.defaults), connection=redis)
    job = queue.enqueue("capability.engine.steptest.run_test", request,
                        job_timeout=int(wait), result_ttl=60, failure_ttl=300,
                        job_id=request["test_id"])
    result = _answer(job, wait)
    record(session, build_event(
        actor, "test_step", "workflow", workflow.id, team=team.name, tenant=team.tenant.name,
        after={"task_id": task_id, "type": spec.type, "version": workflow.current_version,
               "status": result["status"], "took_ms": result["took_ms"]}))
    session.commit()
    return result


def _answer(job: Job, wait: float) -> dict[str, Any]:
    found = job.latest_result(timeout=int(max(1, wait)))
    if found is None:
        job.cancel()
        raise NoAnswer(f"no worker answered within {wait:g}s: is a worker serving queue "
                       f"{job.origin!r}? (flask --app app worker)")
    if found.type != Result.Type.SUCCESSFUL:
        # The job itself failed (not the task: a task's failure is a result): a worker
        # without this code, a crash.
        detail = (found.exc_string or "").strip().splitlines()
        raise NoAnswer(f"the worker could not run the test: {detail[-1] if detail else found.type}")
    return dict(found.return_value or {})
