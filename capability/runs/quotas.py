"""Per-team quotas on run starts, so that one team cannot occupy every worker.

* ``TEAM_MAX_ACTIVE_RUNS``: runs of the team not finished yet (queued, running,
  paused), sub-workflow runs included;
* ``TEAM_RUN_RATE``: runs the team started in the last 60 seconds (a sliding window),
  sub-workflow runs excluded: they are the engine's steps of a run already admitted.

0 turns a quota off. Both are counted in the database, from the runs themselves: every
web process agrees, nothing is lost when Redis is away, and the check costs two indexed
counts. A start over a quota raises ``TooManyRequests`` (429 with ``Retry-After``).

Sub-workflow runs (``subruns.start_child``) are never refused: refusing one would fail
a run that was admitted; they count toward the active runs, so a team whose runs fan
out into children reaches its quota sooner."""

from __future__ import annotations

import datetime as dt
import math

from sqlalchemy import func, select

from app.errors import TooManyRequests
from app.extensions import DbSession
from app.models import Team
from app.times import utcnow
from capability.dsl import RunStatus
from capability.engine.settings import EngineSettings
from capability.models import Run

WINDOW_SECONDS = 60
# When the active runs are at the quota, no one can tell when one ends: the client is
# asked to come back after this long.
ACTIVE_RETRY_AFTER = 30
UNFINISHED = (RunStatus.QUEUED.value, RunStatus.RUNNING.value, RunStatus.PAUSED.value)
ENGINE_TRIGGER = "workflow"  # sub-workflow runs (``subruns``)


def check_start(session: DbSession, team: Team, settings: EngineSettings) -> None:
    """Refuse a start by (or on behalf of) a client when the team is at a quota. Call it
    in the transaction that creates the run: it holds the team's row until the commit,
    so two starts at once cannot both take the last place."""
    _, refused = admit(session, team, settings, 1)
    if refused is not None:
        raise refused


def admit(session: DbSession, team: Team, settings: EngineSettings,
          wanted: int) -> tuple[int, TooManyRequests | None]:
    """How many of ``wanted`` starts of the team the quotas admit now, and the refusal
    of the others (None when all are admitted). The same lock and counts as one start:
    a scheduler starting many runs at once counts once."""
    max_active, rate = settings.team_max_active_runs, settings.team_run_rate
    if max_active <= 0 and rate <= 0:
        return wanted, None
    # FOR NO KEY UPDATE: it serialises the starts of one team, while rows that merely
    # reference the team (the engine's sub-workflow runs, new workflows) go on.
    session.execute(select(Team.id).where(Team.id == team.id).with_for_update(key_share=True))
    admitted, refused = wanted, None
    if max_active > 0:
        active = session.execute(select(func.count()).select_from(Run).where(
            Run.team_id == team.id, Run.status.in_(UNFINISHED))).scalar_one()
        if active + admitted > max_active:
            admitted = max(0, max_active - active)
            refused = TooManyRequests(
                f"Team {team.name} has {max(active, max_active)} active runs, its quota "
                f"(TEAM_MAX_ACTIVE_RUNS = {max_active}): start more once some have finished",
                ACTIVE_RETRY_AFTER)
    if rate > 0:
        now = utcnow()
        since = now - dt.timedelta(seconds=WINDOW_SECONDS)
        started, oldest = session.execute(select(func.count(), func.min(Run.created_at)).where(
            Run.team_id == team.id, Run.created_at >= since, Run.trigger != ENGINE_TRIGGER,
        )).one()
        if started + admitted > rate:
            admitted = max(0, min(admitted, rate - started))
            # The oldest start in the window leaves it first (the starts admitted now,
            # when none is older).
            wait = WINDOW_SECONDS if oldest is None else max(1, math.ceil(
                WINDOW_SECONDS - (now - _aware(oldest)).total_seconds()))
            refused = TooManyRequests(
                f"Team {team.name} started {max(started, rate)} runs in the last minute, its "
                f"quota (TEAM_RUN_RATE = {rate} a minute): try again in {wait}s", wait)
    return admitted, refused


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)
