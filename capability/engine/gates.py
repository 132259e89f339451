"""A task's ``when``, evaluated by the worker that begins its attempt, outside any
transaction.

An expression may run for up to its budget (``EXPRESSION_TIMEOUT``); evaluated while
the engine held the run's lock (as ``advance`` once did, inside the completion of the
task upstream), it kept every control of the run (a cancel) waiting that long. So a
ready task with a ``when`` is queued like any other, and its attempt, once begun and
committed, reads what the ``when`` reads, ends that read, and only then evaluates it
(``when_outcome``). False: the task is skipped (``advance.skip_gated``), as if it had
never been queued; an error or a breach of the budget: the task fails, not retried.

A ``for_each`` task's ``when`` and list are evaluated the same way, by the attempt
that makes its elements (``foreach.evaluate``, then ``runner.record_expansion``).
"""

from __future__ import annotations

from typing import Any

from app.extensions import DbSession
from app.runtime import interrupt
from capability import dsl
from capability.engine import masking, state
from capability.engine.decide import plan_of
from capability.engine.settings import EngineSettings
from capability.engine.state import AttemptContext, Outcome
from capability.models import Run


def when_outcome(session: DbSession, ctx: AttemptContext,
                 settings: EngineSettings) -> Outcome | None:
    """``None`` when the task runs (no ``when``, or a true one); else what its attempt
    records: a skip, or a failure naming the field. Reads in the caller's unit of work
    (it must hold no lock) and ends that read before evaluating."""
    spec = ctx.task
    if not state.gated(spec):
        return None
    scope: dict[str, Any] = {}
    try:
        run = session.get(Run, ctx.run_id)
        if run is None:
            return None
        plan = plan_of(ctx.definition)
        scope = state.scope_for(session, run, plan.reads(spec, "when"),
                                plan.secrets(spec, "when"), settings)
    finally:
        session.rollback()  # nothing was written: no transaction while it evaluates
    try:
        # A cancel's stop ends the evaluation at once (``JobStopped``), not its budget.
        with interrupt.interruptible():
            if dsl.evaluate_condition(str(spec.when), scope, path="when",
                                      budget=settings.expression_budget):
                return None
    except dsl.ExpressionError as exc:
        return Outcome.failure(masking.text(str(exc), scope) or str(exc), retriable=False)
    return Outcome.skip(f"when was false: {spec.when}")
