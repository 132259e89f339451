"""Stopping the job a worker runs in its own process, and the worker's watchdog.

Workers run jobs in their own process (no fork per job: see ``AppWorker``). RQ's
stop-job command arrives on the worker's pub/sub thread, but only the main thread can
be interrupted: it is sent ``STOP_SIGNAL`` and the handler raises ``JobStopped`` there,
and only while the job is inside an ``interruptible()`` section, i.e. the task's own
work. The engine's bookkeeping around it is never cut in half (a cancelled attempt's
late completion is ignored by the engine anyway). A signal interrupts blocking calls
too (sleep, socket reads: PEP 475 retries them only when the handler returns), but not
a blocking C call that keeps the interpreter out until it returns (a database statement
in its driver): such a call registers an ``on_stop`` hook that asks its server to end it.

Some code cannot be interrupted (a C extension that never returns to the interpreter).
The watchdog is the backstop: a job still running ``STOP_GRACE`` seconds after its stop,
or 60 s past its RQ job timeout (as RQ's monitor does with a work horse), takes the
worker down with SIGKILL. Its supervisor (``flask up``, systemd, Kubernetes) starts a
new one, whose start-up reaper records the lost attempt.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNAL = signal.SIGUSR1

# Seconds a stopped job may take to leave its task before the worker is killed.
STOP_GRACE = 10.0

# RQ kills a work horse this long past its job timeout; the watchdog does the same.
OVERDUE_GRACE = 60.0


class JobStopped(BaseException):
    """Raised inside the task of a job that was stopped. A BaseException, so that task
    code and executors catching ``Exception`` do not swallow it."""


class _State:
    job_id: str | None = None  # the job this process runs now
    inside = False  # inside an interruptible() section of that job
    stop: str | None = None  # the job a stop was asked for
    # Called by the thread asking for the stop, after the signal: what the signal cannot
    # reach (a blocking C call, e.g. a database statement, which returns only when the
    # server ends it) is asked to stop from outside (``on_stop``).
    hook: Callable[[], None] | None = None


_state = _State()
_lock = threading.Lock()  # between the pub/sub thread and the watchdog (never the main one)


def job_started(job_id: str) -> None:
    with _lock:
        _state.job_id, _state.stop, _state.inside, _state.hook = job_id, None, False, None


def job_ended() -> None:
    with _lock:
        _state.job_id, _state.stop, _state.inside, _state.hook = None, None, False, None


def current_job() -> str | None:
    return _state.job_id


def stop_pending() -> bool:
    return _state.stop is not None and _state.stop == _state.job_id


def request_stop(job_id: str) -> bool:
    """Ask the running job ``job_id`` to stop (from any thread). False when this process
    is not running it."""
    with _lock:
        if _state.job_id != job_id:
            return False
        _state.stop = job_id
        hook = _state.hook if _state.inside else None
        if _state.inside:
            os.kill(os.getpid(), STOP_SIGNAL)
    if hook is not None:
        # Outside the lock: the hook talks to a server and may be slow; it must be safe to
        # call once its section is over (``on_stop``).
        try:
            hook()
        except Exception:
            log.warning("job %s: stopping its blocking call failed", job_id, exc_info=True)
    return True


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    if _state.inside and _state.stop is not None and _state.stop == _state.job_id:
        _state.inside = False
        raise JobStopped(f"job {_state.stop} was stopped")


def install() -> None:
    """In the worker's main thread, before it takes jobs."""
    signal.signal(STOP_SIGNAL, _on_stop_signal)


def reset_in_child() -> None:
    """In a process forked from the worker: the stop belongs to the parent."""
    signal.signal(STOP_SIGNAL, signal.SIG_DFL)
    _state.job_id, _state.stop, _state.inside, _state.hook = None, None, False, None


@contextmanager
def interruptible() -> Iterator[None]:
    """A section of a job that a stop may cut short with ``JobStopped``. Outside a
    worker (tests draining runs in-process, the web process) it does nothing."""
    if _state.job_id is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.inside = True
    try:
        # A stop that came before the section started (during the engine's begin).
        if _state.stop is not None and _state.stop == _state.job_id:
            _state.inside = False
            raise JobStopped(f"job {_state.stop} was stopped")
        yield
    finally:
        _state.inside = False


@contextmanager
def on_stop(hook: Callable[[], None]) -> Iterator[None]:
    """Within an ``interruptible()`` section of a worker's job, call ``hook`` (from the
    stopping thread) when the job is stopped: for a blocking call in this thread that the
    stop signal reaches only once it returns. The hook may run just after the section
    ended, so it must check that what it stops is still the same call. Elsewhere it
    does nothing."""
    if _state.job_id is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    with _lock:
        _state.hook = hook
    try:
        yield
    finally:
        with _lock:
            _state.hook = None


class Watchdog:
    """One thread per worker: kills the process when a job overstays (see module doc)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._job: str | None = None
        self._deadline = 0.0
        self._why = ""
        self._thread: threading.Thread | None = None
        # When the thread wakes up by itself (math.inf: only when notified; 0: unknown).
        self._wakes_at = 0.0

    def arm(self, job_id: str, timeout: float | None) -> None:
        with self._cond:
            self._job = job_id
            if timeout and timeout > 0:
                self._deadline = time.monotonic() + timeout + OVERDUE_GRACE
                self._why = f"ran {timeout + OVERDUE_GRACE:.0f}s, past its job timeout"
            else:
                self._deadline = 0.0
            self._ensure_thread()
            # Jobs of similar timeouts follow each other: each new deadline is later than
            # the one the thread sleeps towards, and it is not woken (a thread switch per
            # job); it finds the new deadline when it wakes up at the old one.
            if self._deadline and self._deadline < self._wakes_at:
                self._cond.notify()

    def stopping(self, job_id: str) -> None:
        with self._cond:
            if self._job != job_id:
                return
            due = time.monotonic() + STOP_GRACE
            if not self._deadline or due < self._deadline:
                self._deadline = due
                self._why = f"did not stop within {STOP_GRACE:.0f}s of its stop command"
            if due < self._wakes_at:
                self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._job, self._deadline = None, 0.0

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._watch, name="apg-watchdog",
                                            daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        with self._cond:
            while True:
                if self._job is None or not self._deadline:
                    self._wakes_at = math.inf
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._wakes_at = self._deadline
                    self._cond.wait(left)
                    continue
                log.critical("worker %s: job %s %s; killing the worker (its supervisor "
                             "starts a new one, which records the attempt lost)",
                             self.name, self._job, self._why)
                logging.shutdown()
                os.kill(os.getpid(), signal.SIGKILL)
