"""Opening runs inside the caller's transaction: one (a person's start, a webhook's
delivery) or many at once (a scheduler deciding the ticks of a thousand schedules that
fell due on the same second). One path for both, so the rules of a start (the
workflow's lock, the idempotency key, the team's quotas, ``max_active_runs``, the
payload masked, the audit event) are written once; many starts pay per statement, not
per run: a lock per workflow, a count per team, one flush, one INSERT of task rows and
one link of the audit chain (``runner.open_runs``)."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select

from app.audit.recorder import build_event, record
from app.errors import NotFound, ServiceError
from app.extensions import DbSession
from app.ids import new_id
from app.models import Team
from app.security.actor import SYSTEM, Actor
from capability import dsl
from capability.engine import runner, state
from capability.engine.decide import unknown_queues
from capability.engine.dispatch import Dispatcher
from capability.models import Run, Workflow, WorkflowVersion
from capability.runs import quotas


class NotStarted(Exception):
    """A run that cannot start (a trigger's params no longer valid, a quota): the
    trigger records why, no run is made. ``cause``: the refusal a person's start raises
    instead (``TooManyRequests``)."""

    def __init__(self, message: str, cause: ServiceError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


@dataclass
class Start:
    """One run to open. ``actor``: who asked (default: the system, named ``who``);
    ``resolved``: params already validated against ``version`` (a person's start has
    answered its errors with a 422 before the transaction); ``run_id``: chosen by the
    caller (a tick's ledger row names its run before the run exists)."""

    workflow: Workflow
    params: dict[str, Any]
    trigger: str
    who: str = "scheduler"
    actor: Actor | None = None
    source: tuple[str, str] | None = None
    scheduled_for: dt.datetime | None = None
    delivery_id: str | None = None
    depth: int = 0
    key: str | None = None
    payload: Any = None
    run_id: str | None = None
    resolved: dict[str, Any] | None = None
    version: WorkflowVersion | None = None
    masks: list[str] | None = None  # the team's secret values, when the caller read them


def open_triggered(session: DbSession, dispatcher: Dispatcher, workflow: Workflow,
                   params: dict[str, Any], *, trigger: str, source: tuple[str, str],
                   scheduled_for: dt.datetime | None = None, delivery_id: str | None = None,
                   who: str = "scheduler", depth: int = 0, key: str | None = None,
                   payload: Any = None, version: WorkflowVersion | None = None,
                   run_id: str | None = None, masks: list[str] | None = None) -> Run:
    """A run started by a trigger, inside the caller's transaction (its ``outbox`` begun):
    the trigger's own record (a tick, a delivery) commits with it, or neither does.
    Params are validated against the workflow's current version again, now
    (``version``: the current one, when the caller read it already)."""
    out = open_many(session, dispatcher, [Start(
        workflow, params, trigger, who=who, source=source, scheduled_for=scheduled_for,
        delivery_id=delivery_id, depth=depth, key=key, payload=payload, version=version,
        run_id=run_id, masks=masks)])[0]
    if isinstance(out, NotStarted):
        raise out
    return out


# (workflow id, version number) -> the version's id: versions never change once saved,
# so a start reads the current one's id once per process, and its definition from
# ``state``'s cache (a webhook's delivery or a scheduler's tick saves a statement).
_VERSION_IDS: OrderedDict[tuple[str, int], str] = OrderedDict()
_VERSION_IDS_LOCK = threading.Lock()


def current_version_id(session: DbSession, workflow: Workflow) -> str:
    key = (workflow.id, workflow.current_version)
    with _VERSION_IDS_LOCK:
        found = _VERSION_IDS.get(key)
    if found is not None:
        return found
    found = session.execute(select(WorkflowVersion.id).where(
        WorkflowVersion.workflow_id == workflow.id,
        WorkflowVersion.version == workflow.current_version)).scalar()
    if found is None:
        raise NotFound(f"version {workflow.current_version} of workflow {workflow.id} "
                       "not found")
    with _VERSION_IDS_LOCK:
        _VERSION_IDS[key] = found
        while len(_VERSION_IDS) > 1024:
            _VERSION_IDS.popitem(last=False)
    return found


def current_definition(session: DbSession, workflow: Workflow) -> dsl.WorkflowDefinition:
    """The definition of the workflow's current version (read once per process)."""
    return state.definition_for_version(session, current_version_id(session, workflow))


class _Workflow:
    """What the starts of one workflow share within a call."""

    def __init__(self, session: DbSession, dispatcher: Dispatcher, workflow: Workflow,
                 version: WorkflowVersion | None) -> None:
        self.workflow = workflow
        if version is not None:
            self.version_id, self.number = version.id, version.version
            self.definition = state.definition_of(version)
        else:
            self.version_id = current_version_id(session, workflow)
            self.number = workflow.current_version
            self.definition = state.definition_for_version(session, self.version_id)
        self.queue_errors = unknown_queues(self.definition, dispatcher.settings.queues)
        self._checked: dict[str, tuple[dict[str, Any], str | None]] = {}

    def resolve(self, params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The params with their defaults, or why they are not valid (the same params,
        as a thousand copies of one schedule have, are checked once)."""
        marker = json.dumps(params, sort_keys=True, default=str)
        if marker not in self._checked:
            resolved, errors = dsl.validate_params(self.definition, params)
            errors = list(errors) + self.queue_errors
            why = None
            if errors:
                why = "params are not valid for the workflow's current version: " + "; ".join(
                    f"{e.get('path') or 'params'}: {e['message']}" for e in errors)
            self._checked[marker] = (resolved, why)
        return self._checked[marker]


def open_many(session: DbSession, dispatcher: Dispatcher, starts: Sequence[Start], *,
              locked: bool = False) -> list[Run | NotStarted]:
    """Open ``starts`` in the caller's transaction: for each, its run (an existing one
    when its idempotency key was used before) or why it did not start.

    Locks: each workflow's row (exclusive when a start counts toward
    ``max_active_runs`` or carries a key, so that concurrent starts agree; shared
    otherwise, which only keeps the workflow from changing under the start), in id
    order so two schedulers cannot deadlock; then each team's (``quotas.admit``).
    ``locked``: the caller holds the workflows' rows already, and has looked up the
    idempotency key of its one start under that lock (``service.start_run``)."""
    out: list[Run | NotStarted | None] = [None] * len(starts)
    groups: dict[str, list[int]] = {}
    shared: dict[str, _Workflow] = {}
    for i, start in enumerate(starts):
        wid = start.workflow.id
        if wid not in shared:
            shared[wid] = _Workflow(session, dispatcher, start.workflow, start.version)
        if start.resolved is None:
            start.resolved, why = shared[wid].resolve(start.params)
            if why is not None:
                out[i] = NotStarted(why)
                continue
        groups.setdefault(wid, []).append(i)
    aliases: dict[int, int] = {}
    for wid in sorted(groups):
        if locked:  # the caller holds the lock, and has looked its key up under it
            continue
        exclusive = bool(shared[wid].definition.max_active_runs) or any(
            starts[i].key for i in groups[wid])
        query = select(Workflow.id).where(Workflow.id == wid)
        session.execute(query.with_for_update(read=not exclusive))
        groups[wid] = _without_known_keys(session, wid, starts, groups[wid], out, aliases)
    _admit(session, dispatcher, starts, groups, out)
    opened: list[tuple[Run, dsl.WorkflowDefinition, bool]] = []
    audits: list[tuple[Start, Run, _Workflow]] = []
    payloads = _Payloads(session, dispatcher)
    for wid, indexes in groups.items():
        one = shared[wid]
        limit = one.definition.max_active_runs
        free = limit - state.active_runs(session, wid) if limit else len(indexes)
        for n, i in enumerate(indexes):
            run = _run(starts[i], one, payloads)
            opened.append((run, one.definition, n < free))
            out[i] = run
            audits.append((starts[i], run, one))
    if opened:
        runner.open_runs(session, opened)
    # Chained at the commit: the audit trail's lock is then held for its own rows only.
    for start, run, one in audits:
        _audit(session, start, run, one)
    for i, first in aliases.items():
        out[i] = out[first]
    return [o if o is not None else NotStarted("not started") for o in out]


def _without_known_keys(session: DbSession, wid: str, starts: Sequence[Start],
                        indexes: list[int], out: list[Any], aliases: dict[int, int]
                        ) -> list[int]:
    """The starts whose idempotency key has no run yet (read under the workflow's lock:
    a start with the same key that committed while we waited is seen now); the others
    get the key's run (``aliases``: a key used twice in one call, one run)."""
    keys = {starts[i].key for i in indexes if starts[i].key}
    if not keys:
        return indexes
    known = {run.idempotency_key: run for run in session.execute(select(Run).where(
        Run.workflow_id == wid, Run.idempotency_key.in_(keys))).scalars()}
    left = []
    first_of: dict[str, int] = {}
    for i in indexes:
        key = starts[i].key
        if key in known:
            out[i] = known[key]
        elif key and key in first_of:
            aliases[i] = first_of[key]
        else:
            if key:
                first_of[key] = i
            left.append(i)
    return left


def _admit(session: DbSession, dispatcher: Dispatcher, starts: Sequence[Start],
           groups: dict[str, list[int]], out: list[Any]) -> None:
    """The team quotas, once per team: the starts over a quota get its refusal."""
    by_team: dict[str, list[int]] = {}
    for indexes in groups.values():
        for i in indexes:
            by_team.setdefault(starts[i].workflow.team_id, []).append(i)
    refused: set[int] = set()
    for team_id in sorted(by_team):
        indexes = by_team[team_id]
        team: Team = starts[indexes[0]].workflow.team
        admitted, refusal = quotas.admit(session, team, dispatcher.settings, len(indexes))
        if refusal is None:
            continue
        for i in indexes[admitted:]:
            out[i] = NotStarted(refusal.message, refusal)
            refused.add(i)
    if refused:
        for wid in list(groups):
            groups[wid] = [i for i in groups[wid] if i not in refused]


class _Payloads:
    """A trigger's payload as stored: every value of the team's secrets masked, as in
    anything else the engine keeps (the team's secrets read once per call)."""

    def __init__(self, session: DbSession, dispatcher: Dispatcher) -> None:
        self.session, self.settings = session, dispatcher.settings
        self._values: dict[str, list[str]] = {}

    def _secrets(self, team_id: str) -> list[str]:
        if team_id not in self._values:
            from capability.secrets import vault

            try:
                found = vault.values_for(self.session, self.settings.secrets_key,
                                         self.settings.secret_key, team_id, None)
            except vault.SecretsKeyError:
                found = {}
            self._values[team_id] = [v for v in found.values() if v]
        return self._values[team_id]

    def masked(self, team_id: str, payload: Any, values: list[str] | None) -> Any:
        if payload is None:
            return None
        if values is None:
            values = self._secrets(team_id)
        masked = dsl.mask_secrets(payload, values) if values else payload
        # As a task's output: at most TASK_OUTPUT_MAX_BYTES kept (a run-finished
        # trigger's payload holds the upstream's outputs); over it, its size and why.
        size = len(json.dumps(masked, default=str))
        limit = self.settings.output_max_bytes
        if limit and size > limit:
            return {"cut": True, "size": size, "reason": f"over TASK_OUTPUT_MAX_BYTES ({limit})"}
        return masked


def _actor(start: Start) -> Actor:
    return start.actor or replace(SYSTEM, username=start.who)


def _run(start: Start, one: _Workflow, payloads: _Payloads) -> Run:
    workflow, source = start.workflow, start.source
    return Run(
        id=start.run_id or new_id(), workflow_id=workflow.id, version_id=one.version_id,
        workflow_version=one.number, team_id=workflow.team_id, params=start.resolved,
        trigger=start.trigger, idempotency_key=start.key, created_by=_actor(start).username,
        trigger_source_type=source[0] if source else None,
        trigger_source_id=source[1] if source else None, scheduled_for=start.scheduled_for,
        delivery_id=start.delivery_id, depth=start.depth,
        trigger_payload=payloads.masked(workflow.team_id, start.payload, start.masks),
    )


def _audit(session: DbSession, start: Start, run: Run, one: _Workflow) -> None:
    workflow = start.workflow
    after: dict[str, Any] = {"workflow": workflow.name, "version": one.number,
                             "trigger": start.trigger}
    if start.source:
        after["trigger_source"] = {"type": start.source[0], "id": start.source[1]}
    record(session, build_event(_actor(start), "start", "run", run.id,
                                team=workflow.team.name, tenant=workflow.team.tenant.name,
                                after=after))
