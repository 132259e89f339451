"""The MCP tools (AGENTS.md, "MCP server"): for each, its scope, the JSON Schemas of
its arguments and its result (pydantic models, published through ``tools/list``) and a
handler thin over the services.

A handler takes a ``Call`` (the session, the acting user narrowed by the key, the app)
and the validated arguments, and returns the result as a dict; the services' errors
(``NotFound``, ``ValidationFailed``, ``Forbidden``...) pass through and ``server``
turns them into JSON-RPC errors. A mutating tool acts with ``via: mcp:<tool>``, which
the audit trail records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from flask import Flask
from pydantic import BaseModel, ConfigDict, Field

from app.extensions import DbSession
from app.security.actor import Actor
from capability import service
from capability.engine.dispatch import Dispatcher, dispatcher_for
from capability.mcp import service as reads
from capability.runs import agents
from capability.runs import service as runs
from capability.service import MAX_TEAM

READ, RUN, AUTHOR = "read", "run", "author"
# A value longer than this (characters of JSON) is cut in run_status's outputs: an
# agent reads the rest through the REST API (``output_cut.href``).
MAX_VALUE = 64_000


@dataclass
class Call:
    """One tool call: who acts (``actor``, already narrowed by the key) and where."""

    session: DbSession
    actor: Actor
    app: Flask
    _dispatcher: Dispatcher | None = field(default=None, repr=False)

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            self._dispatcher = dispatcher_for(self.app)
        return self._dispatcher


# -- arguments ------------------------------------------------------------------------

class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


Definition = dict[str, Any] | str
DEFINITION = "a workflow definition (DSL v1): an object, or YAML/JSON text"
WORKFLOW = "the workflow's id, its name, or team/name"


class WorkflowListIn(_In):
    query: str | None = Field(default=None, max_length=200,
                              description="words in the name or the description")
    team: str | None = Field(default=None, max_length=MAX_TEAM,
                             description="a team, as name or tenant/name")
    cursor: str | None = Field(default=None, max_length=1000,
                               description="next_cursor of the previous page")


class WorkflowIn(_In):
    workflow: str = Field(min_length=1, max_length=300, description=WORKFLOW)


class ValidateIn(_In):
    definition: Definition = Field(description=DEFINITION)


class SaveIn(_In):
    team: str = Field(min_length=1, max_length=MAX_TEAM, description="name or tenant/name")
    definition: Definition = Field(description=DEFINITION)


class RunStartIn(_In):
    workflow: str = Field(min_length=1, max_length=300, description=WORKFLOW)
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="the run's inputs (workflow_get: params_schema)")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128,
                                        description="the same key again gives the same run")


class RunIn(_In):
    run_id: str = Field(min_length=1, max_length=64)


class RunStatusIn(RunIn):
    outputs: bool = Field(default=False, description="include each task's output")


class StepCompleteIn(RunIn):
    task_id: str = Field(min_length=1, max_length=200)
    output: Any = Field(description="the step's output: must satisfy its output_schema")


class StepFailIn(RunIn):
    task_id: str = Field(min_length=1, max_length=200)
    error: str = Field(min_length=1, max_length=4000)


class ApprovalListIn(_In):
    pass


class ApprovalAnswerIn(RunIn):
    task_id: str = Field(min_length=1, max_length=200)
    decision: Literal["approve", "reject"]
    comment: str = Field(default="", max_length=4000)


class TemplateListIn(_In):
    category: str | None = Field(default=None, max_length=100)
    search: str | None = Field(default=None, max_length=200)


class TemplateUseIn(_In):
    slug: str = Field(min_length=1, max_length=100)
    team: str = Field(min_length=1, max_length=MAX_TEAM)
    name: str | None = Field(default=None, min_length=1, max_length=63)
    params_defaults: dict[str, Any] | None = None


# -- results (open: a result may carry more than its schema names) -----------------------

class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class WorkflowSummary(_Out):
    id: str
    name: str
    team: str
    version: int
    description: str
    params: dict[str, Any]


class WorkflowListOut(_Out):
    workflows: list[WorkflowSummary]
    next_cursor: str | None


class WorkflowOut(WorkflowSummary):
    tenant: str
    definition: dict[str, Any]
    params_schema: dict[str, Any] | None
    triggers: dict[str, list[dict[str, Any]]]


class Issue(_Out):
    path: str
    line: int | None = None
    message: str


class ValidateOut(_Out):
    valid: bool
    errors: list[Issue]


class SaveOut(WorkflowSummary):
    created: bool


class RunOut(_Out):
    run_id: str
    status: str


class RunStartOut(RunOut):
    created: bool


class Progress(_Out):
    done: int
    total: int


class TaskState(_Out):
    task_id: str
    status: str
    error: str | None


class RunStatusOut(RunOut):
    workflow: str
    progress: Progress
    tasks: list[TaskState]
    outputs: dict[str, Any] | None = None


class NextOut(_Out):
    run_id: str
    status: str
    done: bool
    progress: Progress
    steps: list[dict[str, Any]]
    approvals: list[dict[str, Any]]


class StepOut(_Out):
    run_id: str
    task_id: str
    status: str
    error: str | None
    run_status: str


class ApprovalListOut(_Out):
    approvals: list[dict[str, Any]]


class TemplateListOut(_Out):
    templates: list[dict[str, Any]]


class TemplateUseOut(SaveOut):
    template: str


# -- handlers ---------------------------------------------------------------------------

def workflow_list(call: Call, args: WorkflowListIn) -> dict[str, Any]:
    return reads.workflow_page(call.session, call.actor, args.query, args.team, args.cursor)


def workflow_get(call: Call, args: WorkflowIn) -> dict[str, Any]:
    return reads.workflow_detail(call.session, call.actor, args.workflow)


def workflow_validate(call: Call, args: ValidateIn) -> dict[str, Any]:
    return reads.validation(args.definition)


def workflow_save(call: Call, args: SaveIn) -> dict[str, Any]:
    workflow, created = reads.save(call.session, call.actor, args.team, args.definition)
    definition = service.version_of(call.session, workflow).definition
    return {**reads.summary(workflow, definition), "created": created}


def run_start(call: Call, args: RunStartIn) -> dict[str, Any]:
    workflow = reads.find_workflow(call.session, call.actor, args.workflow)
    body = runs.StartRunIn(params=args.params, idempotency_key=args.idempotency_key)
    run, created = runs.start_run(call.session, call.actor, call.dispatcher, workflow.id, body,
                                  trigger="mcp")
    return {**reads.run_brief(run), "created": created}


def run_status(call: Call, args: RunStatusIn) -> dict[str, Any]:
    return reads.run_status(call.session, call.actor, args.run_id, args.outputs, MAX_VALUE)


def run_cancel(call: Call, args: RunIn) -> dict[str, Any]:
    run = runs.control(call.session, call.actor, call.dispatcher, args.run_id, "cancel")
    return reads.run_brief(run)


def approval_answer(call: Call, args: ApprovalAnswerIn) -> dict[str, Any]:
    run = runs.answer_approval(call.session, call.actor, call.dispatcher, args.run_id,
                               args.task_id, args.decision == "approve",
                               runs.AnswerIn(comment=args.comment))
    return reads.run_brief(run)


def workflow_next(call: Call, args: RunIn) -> dict[str, Any]:
    return agents.next_for(call.session, call.actor, args.run_id)


def step_complete(call: Call, args: StepCompleteIn) -> dict[str, Any]:
    return agents.complete_step(call.session, call.actor, call.dispatcher, args.run_id,
                                args.task_id, args.output)


def step_fail(call: Call, args: StepFailIn) -> dict[str, Any]:
    return agents.fail_step(call.session, call.actor, call.dispatcher, args.run_id,
                            args.task_id, args.error)


def approval_list(call: Call, args: ApprovalListIn) -> dict[str, Any]:
    return {"approvals": agents.approvals_for(call.session, call.actor)}


def template_list(call: Call, args: TemplateListIn) -> dict[str, Any]:
    from capability.templates import service as templates

    return {"templates": templates.list_templates(call.actor, args.category, args.search)}


def template_use(call: Call, args: TemplateUseIn) -> dict[str, Any]:
    from capability.templates import service as templates

    made = templates.use_template(call.session, call.actor, args.slug, args.team, args.name,
                                  args.params_defaults)
    workflow = reads.find_workflow(call.session, call.actor, made["id"])
    definition = service.version_of(call.session, workflow).definition
    return {**reads.summary(workflow, definition), "created": True, "template": args.slug}


# -- the table --------------------------------------------------------------------------

@dataclass(frozen=True)
class Tool:
    name: str
    scope: str
    description: str
    arguments: type[BaseModel]
    result: type[BaseModel]
    handler: Callable[[Call, Any], dict[str, Any]]
    mutates: bool = False
    # The service records its own refusals (runs.agents): not audited a second time.
    audits_refusals: bool = False

    def acting(self, actor: Actor) -> Actor:
        """The actor the handler gets: a mutation is recorded as made through this tool."""
        return replace(actor, via=f"mcp:{self.name}") if self.mutates else actor


TOOLS: dict[str, Tool] = {tool.name: tool for tool in (
    Tool("workflow_list", READ,
         "List the workflows you can see, by name, 50 at a time: pass next_cursor back "
         "as cursor for the next page. query matches name or description.",
         WorkflowListIn, WorkflowListOut, workflow_list),
    Tool("workflow_get", READ,
         "A workflow's current definition, version, the JSON Schema of its params and "
         "its triggers (schedules, webhooks, event triggers).",
         WorkflowIn, WorkflowOut, workflow_get),
    Tool("workflow_validate", READ,
         "Check a definition without saving it: every error with its path (and its line "
         "when the definition is YAML/JSON text).",
         ValidateIn, ValidateOut, workflow_validate),
    Tool("workflow_save", AUTHOR,
         "Save a definition into a team: creates the workflow, or adds a version to the "
         "team's workflow of that name.",
         SaveIn, SaveOut, workflow_save, mutates=True),
    Tool("run_start", RUN,
         "Start a run of a workflow's current version; answers at once with the run's "
         "id (follow it with run_status or workflow_next).",
         RunStartIn, RunStartOut, run_start, mutates=True),
    Tool("run_status", READ,
         "A run's status, progress {done, total} and tasks with status and error; "
         "outputs: true adds each task's output.",
         RunStatusIn, RunStatusOut, run_status),
    Tool("run_cancel", RUN, "Cancel a run (and its sub-workflow runs).",
         RunIn, RunOut, run_cancel, mutates=True),
    Tool("workflow_next", READ,
         "What to do next in a run: its progress, the agent steps waiting for you (task_id, "
         "rendered instructions and inputs, the output_schema your output must satisfy, "
         "model_hint), approvals waiting on you, what else is running; done: true at the "
         "end. Loop workflow_next -> do the steps -> step_complete.",
         RunIn, NextOut, workflow_next),
    Tool("step_complete", RUN,
         "Submit the output of an agent step. An output that breaks its output_schema or "
         "a check is refused (-32002, every violation in data.errors) and the step keeps "
         "waiting: correct it and submit again.",
         StepCompleteIn, StepOut, step_complete, mutates=True, audits_refusals=True),
    Tool("step_fail", RUN, "Fail an agent step you cannot do, with the reason.",
         StepFailIn, StepOut, step_fail, mutates=True, audits_refusals=True),
    Tool("approval_list", READ,
         "The approvals waiting in your teams' runs that you may answer, oldest first.",
         ApprovalListIn, ApprovalListOut, approval_list),
    Tool("approval_answer", RUN,
         "Approve or reject an approval task waiting in a run.",
         ApprovalAnswerIn, RunOut, approval_answer, mutates=True),
    Tool("template_list", READ,
         "The template library (production-grade workflows to start from): slug, title, "
         "category, description, params, the connection types it needs. Filter by "
         "category or words.",
         TemplateListIn, TemplateListOut, template_list),
    Tool("template_use", AUTHOR,
         "Create a workflow in a team from a template (optionally renamed, with other "
         "params defaults).",
         TemplateUseIn, TemplateUseOut, template_use, mutates=True),
)}
