"""What RQ workers execute: one task attempt, the end of a `delay`, a sub-workflow's end.

The RQ entry points of the engine (RQ stores these functions' import paths in Redis:
the module path is fixed). They run inside the Flask app context (``AppWorker``), take
the worker's app once (``dispatcher_for``: its Redis and ``EngineSettings``) and own
every transaction: engine steps never commit, these functions do, and what a step made
ready is sent after the commit (``outbox``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from flask import current_app
from redis import Redis
from rq import get_current_job
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty
from sqlalchemy.exc import DBAPIError, OperationalError

from app.extensions import DbSession, db
from app.runtime import interrupt
from app.runtime.worker import serving
from capability import dsl
from capability.engine import (
    advance,
    foreach,
    gates,
    masking,
    outbox,
    outputs,
    runner,
    state,
    subruns,
    success,
    tasklog,
)
from capability.engine import instant as instant_path
from capability.engine.dispatch import JOB_PREFIX, Dispatcher, Send, dispatcher_for
from capability.engine.executors import EXECUTORS
from capability.engine.settings import EngineSettings
from capability.engine.state import AttemptContext, Outcome

# RQ's scheduler is whole-second; a job may wait at most this long for its due time.
MAX_EARLY_WAIT = 2.0

# Seconds a job may go on with the attempts its own made ready (see run_attempt), so a
# long chain does not keep other runs' jobs waiting for long.
FOLLOW_BUDGET = 0.5

# The engine's own bookkeeping (begin, record, an instant hop, a delay's end) is done
# again on a fresh connection when its connection breaks (a reset, a terminated
# backend, a restarted server): this many tries in all, with these pauses between them,
# before the job fails and the reaper takes over. A reset must not cost the task an
# attempt: the task itself may have succeeded at its receiver.
BOOKKEEPING_TRIES = 3
BOOKKEEPING_PAUSES = (0.2, 1.0)

log = logging.getLogger(__name__)
T = TypeVar("T")


def _dispatcher() -> Dispatcher:
    """The worker's dispatcher: live updates coalesced off the hot path."""
    return dispatcher_for(current_app._get_current_object(), coalesce=True)  # type: ignore[attr-defined]


def _worker_name() -> str | None:
    job = get_current_job()
    return getattr(job, "worker_name", None) if job is not None else None


def execute(ctx: AttemptContext, settings: EngineSettings, live: Redis | None = None
            ) -> Outcome:
    """Render the task's templates and run its type, inside its per-attempt timeout;
    every secret the task could read is masked in what comes back (``masking``), and an
    output over ``TASK_OUTPUT_MAX_BYTES`` fails the attempt (``outputs``). What the type
    writes to its log is in ``ctx.log`` (sent to ``live`` as it is written)."""
    if ctx.log is None:
        scope = ctx.scope
        ctx.log = tasklog.Writer(ctx.attempt_id, settings.log_max_lines,
                                 lambda message: masking.text(message, scope) or "", live)
    outcome = _execute(ctx, settings)
    if masking.values(ctx.scope):
        outcome.output = masking.mask(outcome.output, ctx.scope)
        outcome.error = masking.text(outcome.error, ctx.scope)
        if outcome.start_child is not None:  # a child run's params are stored
            outcome.start_child = masking.mask(outcome.start_child, ctx.scope)
    return outputs.capped(outcome, settings.output_max_bytes)


def _execute(ctx: AttemptContext, settings: EngineSettings) -> Outcome:
    try:
        params = dsl.render(ctx.task.with_, ctx.scope, path="with",
                            budget=settings.expression_budget)
    except dsl.ExpressionError as exc:
        return Outcome.failure(str(exc), retriable=False)
    executor = EXECUTORS.get(ctx.task.type)
    if executor is None:
        return Outcome.failure(f"type: {ctx.task.type!r} cannot run on this engine",
                               retriable=False)
    try:
        dsl.registry.get(ctx.task.type).validate_with(params, rendered=True)
    except Exception as exc:  # a template rendered to a value its type refuses
        return Outcome.failure(f"with: {exc}", retriable=False)
    # A task without a timeout of its own gets TASK_DEFAULT_TIMEOUT: an attempt that a job
    # went on with (run_attempt, follow-up) has no RQ alarm left to stop it.
    limit = ctx.timeout or settings.task_default_timeout
    try:
        # Only the task's own work can be stopped (cancel), never the engine's bookkeeping.
        with interrupt.interruptible(), UnixSignalDeathPenalty(
                int(max(1, limit)), JobTimeoutException):
            return executor(params, ctx, settings)
    except JobTimeoutException:
        return Outcome.failure(f"timed out after {limit:g}s (attempt {ctx.number})")
    except Exception as exc:  # the task failed; whether it is retried is the policy's call
        return Outcome.failure(f"{type(exc).__name__}: {exc}")


# -- the RQ entry points --------------------------------------------------------------

def run_attempt(attempt_id: str, instant: bool = False) -> None:
    """Run an attempt; then, while ``FOLLOW_BUDGET`` lasts, the next one it made ready.

    A task whose end makes the next task of its run ready (a chain: step after step)
    does not send that attempt through Redis when this worker serves its queue: the
    same job goes on with it. That saves the enqueue, the dequeue and RQ's bookkeeping
    of a job (about a third of a hop); the worker switches its identity to the
    attempt's job id first (``AppWorker.continue_as``), so cancel, the reaper and the
    watchdog see it as if it had been enqueued. Durability is unchanged: the attempt is
    committed ``queued`` before it runs, and if this process dies before it begins, the
    reaper sends it like any queued attempt whose job Redis does not have."""
    dispatcher = _dispatcher()
    onward = Onward(time.monotonic() + FOLLOW_BUDGET, dispatcher)
    followed = False
    while True:
        begun, onward.begun = onward.begun, None
        try:
            box = run_one(db.session, dispatcher, attempt_id, instant, _worker_name(),
                          begun=begun, onward=onward)
        except interrupt.JobStopped:
            if not followed:
                raise  # RQ records its own job as stopped
            return  # a followed attempt was cancelled: nothing of RQ's to record
        finally:
            db.session.remove()
        if box is None:
            return
        follow = onward.chosen if onward.decided else onward.choose(box.sends)
        box.deliver(keep=follow)
        if follow is None:
            return
        attempt_id, instant, followed = follow.attempt_id, follow.instant, True


class Onward:
    """Which attempt a job goes on with (``run_attempt``), chosen while the transaction
    that made it ready is still open, so that a task on the general path is begun in
    that very transaction: one commit between two tasks of a chain instead of two (the
    record of one, the begin of the next), and the same ``running`` seen by watchers.

    Chosen before the commit means the worker takes the attempt's identity first
    (``AppWorker.continue_as``); a commit that fails then leaves that attempt queued and
    unsent, as a job that died there would, and the reaper sends it."""

    def __init__(self, deadline: float, dispatcher: Dispatcher) -> None:
        self.deadline = deadline
        self.dispatcher = dispatcher
        self.reset()

    def reset(self) -> None:
        self.decided = False
        self.chosen: Send | None = None
        self.begun: AttemptContext | None = None

    def choose(self, sends: list[Send]) -> Send | None:
        self.decided = True
        self.chosen = _follow(sends, self.deadline, self.dispatcher)
        return self.chosen

    def take(self, session: DbSession, worker: str | None) -> None:
        """In the open transaction of a record: choose among its sends, and begin the
        chosen attempt when it runs on the general path (an instant one is its own
        transaction anyway). A begin that says no (``None``) or later (``Again``: a
        run's first begin) is left to ``run_one``, as when nothing was begun here."""
        chosen = self.choose(outbox.of(session).sends)
        if chosen is None or chosen.instant:
            return
        began = (runner.begin_made(session, chosen.attempt_id, worker)
                 or success.begin_held(session, chosen.attempt_id, worker)
                 or runner.begin_attempt(session, chosen.attempt_id, worker))
        if isinstance(began, AttemptContext):
            self.begun = began


def child_finished(child_run_id: str) -> None:
    """A sub-workflow run ended: its parent's `workflow` task gets its result."""
    _in_transaction(lambda session: subruns.child_finished(session, child_run_id))


def finish_delay(attempt_id: str) -> None:
    """A `delay` task's wait is over: it succeeds."""
    _, early = runner.seconds_early(db.session, attempt_id)
    db.session.rollback()  # no transaction held while waiting
    if early > 0:
        time.sleep(min(early, MAX_EARLY_WAIT))
    _in_transaction(lambda session: runner.complete_attempt(
        session, attempt_id, Outcome.success(None)))


def _in_transaction(step: Callable[[DbSession], bool]) -> None:
    """One engine step as one transaction: committed (and its outbox delivered) when it
    did something, rolled back when it did not."""
    session = db.session
    dispatcher = _dispatcher()

    def once() -> None:
        outbox.begin(session, dispatcher)
        if step(session):
            outbox.commit(session)
        else:
            outbox.rollback(session)

    try:
        retried(session, once, "a step")
    finally:
        db.session.remove()


def _transient(exc: DBAPIError) -> bool:
    """A failure of the connection or of this transaction only, which a fresh try on a
    new connection may not meet: a reset or terminated backend (SQLAlchemy says the
    connection was invalidated), a server that cannot be reached yet, a deadlock."""
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)


def retried(session: DbSession, transaction: Callable[[], T], what: str) -> T:
    """Run one bookkeeping ``transaction`` (it begins its unit of work and commits it),
    again on a fresh connection when its connection breaks, ``BOOKKEEPING_TRIES`` times
    in all. Safe to repeat: a try that failed was rolled back, and a commit that landed
    although its answer was lost is seen by the next try (a begin goes on with the
    attempt it began, ``begin_attempt(again=True)``; a record finds its attempt
    recorded and changes nothing, and what that commit made ready but did not send,
    the reaper sends)."""
    for tries in range(1, BOOKKEEPING_TRIES + 1):
        try:
            return transaction()
        except DBAPIError as exc:
            if tries == BOOKKEEPING_TRIES or not _transient(exc):
                raise
            outbox.rollback(session)  # the broken connection goes; the next is new
            pause = BOOKKEEPING_PAUSES[min(tries, len(BOOKKEEPING_PAUSES)) - 1]
            log.warning("engine: %s failed on its database connection (try %d of %d), "
                        "trying again in %gs: %s", what, tries, BOOKKEEPING_TRIES, pause,
                        str(exc.orig).strip().splitlines()[0] if exc.orig else exc)
            time.sleep(pause)
    raise AssertionError("unreachable")  # the last try returned or raised


# -- one attempt, for the entry points above and for in-process drivers ----------------

def run_one(session: DbSession, dispatcher: Dispatcher, attempt_id: str, instant: bool,
            worker: str | None,
            run: Callable[[AttemptContext], Outcome] | None = None, *,
            begun: AttemptContext | None = None,
            onward: Onward | None = None) -> outbox.Outbox | None:
    """Begin, execute and record one attempt: the outbox of its last transaction,
    committed but not yet delivered (the caller may go on with one of its sends), or
    None when nothing ran. An instant type (``state.INSTANT_TYPES``) is one transaction;
    any other commits its ``running`` first, so watchers see it while it runs. ``run``:
    what executes the attempt (default ``execute`` with the dispatcher's settings).
    ``begun``: the attempt was begun already, by the record before it (``Onward``);
    ``onward``: the job goes on, and chooses what with in the record's transaction."""
    if run is None:
        def run(ctx: AttemptContext) -> Outcome:
            return execute(ctx, dispatcher.settings, dispatcher.conn)
    execute_it = run
    if onward is not None:
        onward.reset()
    if begun is not None:
        ctx: AttemptContext | None = begun
    elif instant:
        # Database work only, and deterministic: the whole hop may run again.
        hop = retried(session, lambda: _instant(session, dispatcher, attempt_id, worker,
                                                execute_it), f"instant attempt {attempt_id}")
        if not isinstance(hop, AttemptContext):
            return hop
        ctx = hop  # begun and committed: it evaluates expressions
    else:
        tries: list[int] = []

        def begin() -> AttemptContext | None:
            tries.append(1)
            began = _begin(session, dispatcher, attempt_id, worker, exclusive=False,
                           again=len(tries) > 1)
            if began is not None:
                # `running`, for whoever watches the run; and the run's lock is let go
                # before any expression of the task is evaluated (its `when`, its `with`)
                outbox.commit(session)
            return began

        ctx = retried(session, begin, f"the begin of attempt {attempt_id}")
    if ctx is None:
        return None
    step: Callable[[], bool]
    if ctx.expands:  # a for_each task's `when` and list, then its elements
        made = foreach.evaluate(session, ctx, dispatcher.settings)
        step = partial(runner.record_expansion, session, attempt_id, made)
    else:
        gate = gates.when_outcome(session, ctx, dispatcher.settings)
        try:
            outcome = run(ctx) if gate is None else gate  # the task's own work: never repeated
        except interrupt.JobStopped:  # cancelled: what it wrote until then is kept
            _keep_log(session, dispatcher, ctx.log)
            raise
        outcome.log = tasklog.kept(ctx.log)
        step = (partial(success.record, session, ctx, outcome)
                if success.takes(session, ctx, outcome)
                else partial(_record, session, attempt_id, outcome, dispatcher.settings))
    written = ctx.log

    def record() -> outbox.Outbox | None:
        outbox.begin(session, dispatcher)
        if onward is not None:
            onward.reset()  # a try before this one may have chosen, then failed to commit
        if step():
            if onward is not None:
                onward.take(session, worker)
            return outbox.commit(session, deliver=False)
        outbox.rollback(session)  # a late or duplicate result: the first one counted
        return None

    box = retried(session, record, f"the record of attempt {attempt_id}")
    if box is None:
        _keep_log(session, dispatcher, written)  # its run went on without it: kept all the same
    else:
        tasklog.drop_live(dispatcher.conn, written)
    return box


def _keep_log(session: DbSession, dispatcher: Dispatcher, written: tasklog.Writer | None
              ) -> None:
    """Store an attempt's log in a transaction of its own, when no record of its outcome
    carried it (a cancel, a late result). A failure here loses the lines, never more."""
    if written is None or not (written.lines or written.truncated):
        return
    try:
        session.rollback()
        tasklog.store(session, written.attempt_id, tasklog.kept(written))
        session.commit()
        tasklog.drop_live(dispatcher.conn, written)
    except DBAPIError as exc:
        session.rollback()
        log.warning("engine: the log of attempt %s was not stored: %s", written.attempt_id, exc)


def _instant(session: DbSession, dispatcher: Dispatcher, attempt_id: str, worker: str | None,
             run: Callable[[AttemptContext], Outcome]
             ) -> outbox.Outbox | AttemptContext | None:
    """An instant type's hop in one transaction (``run_one``); or, for a task with
    expressions to evaluate (``state.evaluates``), its begin committed and its context,
    which ``run_one`` takes on outside any transaction."""
    outbox.begin(session, dispatcher)
    handled = instant_path.run_attempt(session, attempt_id, worker, run)
    if handled is not None and handled.ran:
        return outbox.commit(session, deliver=False)
    outbox.rollback(session)
    if handled is not None:
        return None  # stale or duplicate: nothing to do
    # What the instant path does not take (an element, an undo step, an early arrival):
    # the general path, begin to record, in one transaction still.
    ctx = _begin(session, dispatcher, attempt_id, worker, exclusive=True)
    if ctx is None:
        return None
    if ctx.expands or state.evaluates(ctx.task):
        outbox.commit(session)
        return ctx
    outcome = run(ctx)
    outcome.log = tasklog.kept(ctx.log)
    if _record(session, attempt_id, outcome, dispatcher.settings):
        return outbox.commit(session, deliver=False)
    outbox.rollback(session)  # a late or duplicate result: the first one counted
    return None


def _begin(session: DbSession, dispatcher: Dispatcher, attempt_id: str, worker: str | None,
           exclusive: bool, again: bool = False) -> AttemptContext | None:
    """``runner.begin_attempt`` in a unit of work, asked again as it says: once more with
    the run's lock exclusive, or after waiting out an early arrival (once). ``again``:
    an earlier try of this begin failed on its connection (``retried``)."""
    early = True
    while True:
        outbox.begin(session, dispatcher)
        step = runner.begin_attempt(session, attempt_id, worker, exclusive=exclusive,
                                    early=early, again=again)
        if step is None or isinstance(step, runner.Again):
            outbox.rollback(session)
        if not isinstance(step, runner.Again):
            return step
        exclusive = exclusive or step.exclusive
        if step.wait > 0:
            time.sleep(min(step.wait, MAX_EARLY_WAIT))  # no lock held while waiting
            early = False


def _record(session: DbSession, attempt_id: str, outcome: Outcome,
            settings: EngineSettings) -> bool:
    """What an attempt's outcome asks for: a child run, a wait for approval or for an
    agent's output, a delay's
    wait, or its result. False when the attempt no longer runs. Its log goes with it:
    in the attempt's UPDATE of ``complete_attempt``, else a statement of its own."""
    if (outcome.skipped is None and outcome.start_child is None
            and not outcome.await_approval and not outcome.await_input
            and outcome.defer is None):
        return runner.complete_attempt(session, attempt_id, outcome)
    tasklog.store(session, attempt_id, outcome.log)
    if outcome.skipped is not None:
        return advance.skip_gated(session, attempt_id, outcome.skipped)
    if outcome.start_child is not None:
        return subruns.start_child(session, attempt_id, outcome.start_child, settings.queues)
    if outcome.await_approval:
        return runner.await_approval(session, attempt_id, outcome.output or {})
    if outcome.await_input:
        return runner.await_input(session, attempt_id, outcome.output or {})
    runner.defer_attempt(session, attempt_id, float(outcome.defer or 0))  # a delay's wait
    return True


def _follow(sends: list[Send], deadline: float, dispatcher: Dispatcher) -> Send | None:
    """The attempt this job goes on with, if any (``Outbox.deliver`` then keeps it)."""
    worker = serving()
    if worker is None or time.monotonic() > deadline:
        return None
    names = set(worker.queue_names())
    for item in sends:
        if (item.delay <= 0 and not item.finish_delay and item.child_run is None
                and item.queue in names):
            if worker.continue_as(JOB_PREFIX + item.attempt_id, dispatcher.job_timeout(item)):
                return item
            return None
    return None
