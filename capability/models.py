"""Every table of the workflow capability.

* ``Workflow``: the mutable head of a definition (name, team, which version is
  current); every save adds a ``WorkflowVersion`` that is never changed again, so a run
  can pin the exact definition it was started with.
* ``Secret``: a team's named value, stored only encrypted (``capability.secrets.vault``).
* ``EventTrigger`` and ``RunEvent`` (here, not in ``triggers``: the engine writes a
  ``RunEvent`` when a run ends, and never imports the triggers package).
* ``Run``: one execution of a pinned version; ``TaskRun``: the state of one task of a
  run (or of its undo step, ``TaskKind.COMPENSATION``); ``TaskItem``: one element of a
  ``for_each`` task; ``TaskAttempt``: one try of a task or element, whose id is the
  idempotency key a connector may pass on.

Statuses are ``dsl.RunStatus`` and ``dsl.TaskStatus`` (the definition language names
them) and ``AttemptStatus`` below; every time is an aware UTC ``app.times.UtcDateTime``.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from flask_appbuilder.models.sqla import Model
from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.ids import new_id
from app.models import Team
from app.security.scope import TeamScoped
from app.times import UtcDateTime, utcnow
from capability.dsl.statuses import UNFINISHED_TASK_STATUSES


class Workflow(TeamScoped, Model):
    __tablename__ = "apg_workflow"
    __table_args__ = (
        # Names are unique per team among live workflows; a deleted one frees its name.
        Index(
            "uq_apg_workflow_team_name_live", "team_id", "name", unique=True,
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    current_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False
    )
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    team: Mapped[Team] = relationship(lazy="joined")
    versions: Mapped[list[WorkflowVersion]] = relationship(
        back_populates="workflow", order_by="WorkflowVersion.version"
    )

    def __repr__(self) -> str:
        return self.name


class Secret(TeamScoped, Model):
    """A named value a team's workflows read as ``{{ secrets.<name> }}``; stored only
    encrypted (``capability.secrets.vault``), never shown after it is saved."""

    __tablename__ = "apg_secret"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_apg_secret_team_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    # A Fernet token (AES-128-CBC and HMAC-SHA256) of the value.
    ciphertext: Mapped[str] = mapped_column(Text, nullable=False)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    updated_by: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False
    )

    team: Mapped[Team] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return self.name


class WorkflowVersion(Model):
    __tablename__ = "apg_workflow_version"
    __table_args__ = (UniqueConstraint("workflow_id", "version", name="uq_apg_workflow_version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workflow_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_workflow.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    # What the author wrote (YAML keeps its comments); `definition` is what runs.
    source: Mapped[str] = mapped_column(Text, nullable=False)
    source_format: Mapped[str] = mapped_column(String(8), nullable=False, default="json")
    note: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False
    )

    workflow: Mapped[Workflow] = relationship(back_populates="versions")

    @classmethod
    def scope_clause(cls, actor: Any) -> Any:
        """A version is visible exactly when its workflow is."""
        clause = Workflow.scope_clause(actor)
        if clause is None:
            return None
        from sqlalchemy import select

        return cls.workflow_id.in_(select(Workflow.id).where(clause))

    def __repr__(self) -> str:
        return f"v{self.version}"


class Run(TeamScoped, Model):
    """One execution of a pinned workflow version."""

    __tablename__ = "apg_run"
    __table_args__ = (
        UniqueConstraint("workflow_id", "idempotency_key", name="uq_apg_run_idempotency"),
        Index("ix_apg_run_workflow_status", "workflow_id", "status"),
        # The per-team quotas count a team's unfinished runs and its recent starts.
        Index("ix_apg_run_team_status", "team_id", "status"),
        Index("ix_apg_run_team_created", "team_id", "created_at"),
        # A schedule's overlap policy asks for its active runs at every tick.
        Index("ix_apg_run_trigger_source", "trigger_source_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workflow_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_workflow.id", ondelete="RESTRICT"), nullable=False
    )
    version_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_workflow_version.id", ondelete="RESTRICT"), nullable=False
    )
    workflow_version: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    trigger: Mapped[str] = mapped_column(String(16), nullable=False, default="api")
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    # A sub-workflow run: the run and attempt of its `workflow` task, and how deep it is.
    parent_run_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("apg_run.id", ondelete="RESTRICT"), index=True
    )
    parent_attempt_id: Mapped[str | None] = mapped_column(String(36))
    depth: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # What started it (TRIGGERS.md): a schedule, webhook or event trigger, and the
    # schedule's exact tick (jitter never moves it).
    trigger_source_type: Mapped[str | None] = mapped_column(String(16))
    trigger_source_id: Mapped[str | None] = mapped_column(String(36))
    scheduled_for: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    delivery_id: Mapped[str | None] = mapped_column(String(255))  # a webhook's delivery
    # What expressions read as trigger.payload: a webhook's body, an event's payload
    # (secrets of the team masked); read only by runs that have one.
    # Deferred: a webhook's payload may be large, and every record of a task locks and
    # reads its run; expressions read it on their own (``state.scope_for``).
    trigger_payload: Mapped[Any] = mapped_column(JSON, nullable=True, deferred=True)
    # What its attempts cost (an `llm` task's `cost`, LLM_PRICES), summed as each ends
    # (each element of a for_each task too). Null when none had a cost.
    cost: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False,
        index=True,
    )
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    workflow: Mapped[Workflow] = relationship(lazy="joined")
    version: Mapped[WorkflowVersion] = relationship()
    team: Mapped[Team] = relationship(lazy="joined")
    tasks: Mapped[list[TaskRun]] = relationship(
        back_populates="run", order_by="TaskRun.position", foreign_keys="TaskRun.run_id"
    )

    def __repr__(self) -> str:
        return f"run {self.id}"


class TaskKind(StrEnum):
    """``TaskRun.kind``: a task of the definition, or the undo step of one (its
    ``compensate``), added when the run fails."""

    TASK = "task"
    COMPENSATION = "compensation"


class AttemptStatus(StrEnum):
    """``TaskAttempt.status``. ``waiting``: an approval or a sub-workflow run holds it,
    no worker does; ``lost``: its worker died before it reported (the reaper)."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"  # waits in RQ's scheduled registry (a retry's backoff)
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"
    CANCELLED = "cancelled"


# Attempts that will still run or report; the current one of a task holds its slot.
LIVE_ATTEMPT = (AttemptStatus.QUEUED, AttemptStatus.SCHEDULED, AttemptStatus.RUNNING,
                AttemptStatus.WAITING)
OPEN_TASKS = "status IN ({})".format(", ".join(f"'{s}'" for s in UNFINISHED_TASK_STATUSES))


class TaskRun(Model):
    """The state of one task of a run (its outcome is decided exactly once)."""

    __tablename__ = "apg_task_run"
    __table_args__ = (
        UniqueConstraint("run_id", "task_id", "kind", name="uq_apg_task_run"),
        # Only the unfinished tasks: whether a join still waits is one index probe
        # (advance.py) instead of a read of every upstream row.
        Index("ix_apg_task_run_open", "run_id", "kind", "task_id",
              postgresql_where=text(OPEN_TASKS), sqlite_where=text(OPEN_TASKS)),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # Indexed by uq_apg_task_run, whose first column it is (no index of its own).
    run_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_run.id", ondelete="CASCADE"), nullable=False
    )
    task_id: Mapped[str] = mapped_column(String(63), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False, default=TaskKind.TASK)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Attempts made before the last manual retry: the retry policy counts from here.
    retry_base: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # The attempt whose result counts; a late or duplicate attempt cannot overwrite.
    current_attempt_id: Mapped[str | None] = mapped_column(String(36))
    output: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    # Why a task ended without running: `when` was false, an upstream was skipped or
    # failed, its trigger rule (DSL.md, "Skips"; API.md: `reason`).
    reason: Mapped[str | None] = mapped_column(Text)
    # What a waiting task asks, rendered when it began to wait: an approval's message
    # and the role that may answer it.
    prompt: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    run: Mapped[Run] = relationship(back_populates="tasks")

    @classmethod
    def scope_clause(cls, actor: Any) -> Any:
        clause = Run.scope_clause(actor)
        if clause is None:
            return None
        from sqlalchemy import select

        return cls.run_id.in_(select(Run.id).where(clause))


class TaskItem(Model):
    """One element of a ``for_each`` task: its own attempts, output and error."""

    __tablename__ = "apg_task_item"
    __table_args__ = (UniqueConstraint("task_run_id", "index", name="uq_apg_task_item"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # Indexed by the unique constraint above, whose first column it is.
    task_run_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_task_run.id", ondelete="CASCADE"), nullable=False
    )
    index: Mapped[int] = mapped_column(Integer, nullable=False)
    value: Mapped[Any | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    retry_base: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    current_attempt_id: Mapped[str | None] = mapped_column(String(36))
    output: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    # Never loaded by the engine: it tells the unit of work to insert a new run's task
    # rows before the elements its first for_each made in the same flush.
    task_run: Mapped[TaskRun] = relationship()


class TaskAttempt(Model):
    """One try of a task. Its id is the idempotency key a connector may pass on."""

    __tablename__ = "apg_task_attempt"
    __table_args__ = (
        UniqueConstraint("task_run_id", "item_id", "number", name="uq_apg_task_attempt"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # Indexed by the unique constraint above, whose first column it is.
    task_run_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_task_run.id", ondelete="CASCADE"), nullable=False
    )
    # Set for the attempts of one element of a for_each task.
    item_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("apg_task_item.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # AttemptStatus
    queue: Mapped[str] = mapped_column(String(63), nullable=False, default="default")
    not_before: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    worker: Mapped[str | None] = mapped_column(String(256))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False
    )
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # Its log (CONNECTORS.md, "Task logs"): what its connector or ``python`` callable
    # wrote, masked, [{at, level, message}], and how many lines past TASK_LOG_MAX_LINES
    # were not kept; null when it wrote nothing. Written with its outcome, in the same
    # UPDATE (``engine.tasklog``); deferred: read only where a log is shown.
    log: Mapped[list[Any] | None] = mapped_column(JSON, deferred=True)
    log_truncated: Mapped[int | None] = mapped_column(Integer, deferred=True)

    task_run: Mapped[TaskRun] = relationship()
    item: Mapped[TaskItem | None] = relationship()


class EventTrigger(TeamScoped, Model):
    """Starts a run of ``workflow_id`` when a run of ``on_workflow_id`` ends in one of
    ``on_statuses``, or when the team's named event ``on_event`` is posted."""

    __tablename__ = "apg_event_trigger"
    __table_args__ = (Index("ix_apg_event_trigger_upstream", "on_workflow_id"),
                      Index("ix_apg_event_trigger_event", "team_id", "on_event"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workflow_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_workflow.id", ondelete="CASCADE"), nullable=False)
    on_workflow_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("apg_workflow.id", ondelete="CASCADE"))
    on_statuses: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    on_event: Mapped[str | None] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # The last time it did not start a run, and why (the depth limit, bad params).
    last_refusal: Mapped[str | None] = mapped_column(Text)
    last_refusal_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    updated_by: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, nullable=False
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, nullable=False
    )

    team: Mapped[Team] = relationship(lazy="joined")


class RunEvent(Model):
    """A run that ended while run-finished triggers listened to its workflow, written in
    the transaction that ended it; the scheduler's pass starts the downstream runs and
    deletes it (``events.process``)."""

    __tablename__ = "apg_run_event"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(String(36), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, nullable=False
    )
