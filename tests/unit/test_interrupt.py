"""Stopping a job that runs in the worker's own process, and the watchdog."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from app.runtime import interrupt


@pytest.fixture()
def worker_state() -> Iterator[None]:
    previous = signal.getsignal(interrupt.STOP_SIGNAL)
    interrupt.install()
    try:
        yield
    finally:
        interrupt.job_ended()
        signal.signal(interrupt.STOP_SIGNAL, previous)


def stop_later(job_id: str, after: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(after), interrupt.request_stop(job_id)))
    thread.start()
    return thread


def test_a_stop_interrupts_a_blocking_call_inside_the_task(worker_state):
    interrupt.job_started("job-1")
    thread = stop_later("job-1", 0.2)
    t0 = time.monotonic()
    with pytest.raises(interrupt.JobStopped), interrupt.interruptible():
        time.sleep(10)
    assert time.monotonic() - t0 < 2
    thread.join()


def test_a_stop_before_the_task_starts_stops_it_at_its_start(worker_state):
    interrupt.job_started("job-2")
    assert interrupt.request_stop("job-2")
    ran = []
    with pytest.raises(interrupt.JobStopped), interrupt.interruptible():
        ran.append(1)
    assert ran == []


def test_the_engine_s_bookkeeping_is_never_interrupted(worker_state):
    interrupt.job_started("job-3")
    thread = stop_later("job-3", 0.1)
    time.sleep(0.4)  # outside interruptible(): the stop waits
    thread.join()
    with pytest.raises(interrupt.JobStopped), interrupt.interruptible():
        pass


def test_a_stop_for_another_job_or_outside_a_worker_does_nothing(worker_state):
    interrupt.job_started("job-4")
    assert not interrupt.request_stop("job-other")
    with interrupt.interruptible():
        time.sleep(0.05)
    interrupt.job_ended()
    assert not interrupt.request_stop("job-4")
    with interrupt.interruptible():  # not in a worker's job: a plain block
        pass


def test_a_stop_calls_the_hook_of_the_blocking_call_it_cannot_reach(worker_state):
    interrupt.job_started("job-5")
    called: list[str] = []
    thread = stop_later("job-5", 0.2)
    with pytest.raises(interrupt.JobStopped), interrupt.interruptible(), \
            interrupt.on_stop(lambda: called.append(threading.current_thread().name)):
        time.sleep(10)
    thread.join()
    assert called == [thread.name]  # from the stopping thread, once


def test_a_hook_is_forgotten_once_its_call_is_over(worker_state):
    interrupt.job_started("job-6")
    called: list[int] = []
    with interrupt.interruptible():
        with interrupt.on_stop(lambda: called.append(1)):
            pass
        thread = stop_later("job-6", 0)
        with pytest.raises(interrupt.JobStopped):
            time.sleep(10)
    thread.join()
    assert called == []
    interrupt.job_ended()
    with interrupt.on_stop(lambda: called.append(2)):  # not in a worker's job
        assert not interrupt.request_stop("job-6")
    assert called == []


WATCHDOG = textwrap.dedent("""
    import time
    from app.runtime import interrupt
    interrupt.OVERDUE_GRACE = 0.2
    interrupt.STOP_GRACE = 0.2
    dog = interrupt.Watchdog("test")
    dog.arm("job", {timeout})
    if {stop}:
        dog.stopping("job")
    time.sleep(0.1 if {disarm} else 0)
    if {disarm}:
        dog.disarm()
    time.sleep(3)
    print("survived")
""")


@pytest.mark.parametrize(("timeout", "stop", "disarm", "killed"), [
    (0.3, False, False, True),   # overdue: 60 s (here 0.2 s) past the job timeout
    (None, True, False, True),   # a stop not obeyed within the grace
    (0.3, False, True, False),   # the job ended in time
    (None, False, False, False),  # no timeout, no stop: never
])
def test_the_watchdog_kills_a_worker_whose_job_overstays(timeout, stop, disarm, killed):
    code = WATCHDOG.format(timeout=timeout, stop=stop, disarm=disarm)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    if killed:
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert time.monotonic() - t0 < 3
        assert "survived" not in proc.stdout
    else:
        assert proc.returncode == 0, proc.stderr
        assert "survived" in proc.stdout


SEQUENCE = textwrap.dedent("""
    import time
    from app.runtime import interrupt
    interrupt.OVERDUE_GRACE = 0.2
    dog = interrupt.Watchdog("test")
    for job, timeout, runs in {jobs}:
        dog.arm(job, timeout)
        time.sleep(runs)
        dog.disarm()
    print("survived", flush=True)
""")


@pytest.mark.parametrize(("jobs", "killed_after"), [
    # The thread sleeps towards a far deadline; a job with a nearer one must wake it.
    ([("a", 100, 0.05), ("b", 0.3, 3)], (0.5, 1.5)),
    # A later deadline does not wake it: it finds b's when a's comes, and waits on.
    ([("a", 0.3, 0.05), ("b", 1.0, 3)], (1.2, 2.5)),
    # Many jobs that end in time (a worker's day): never.
    ([(f"j{i}", 0.3, 0.01) for i in range(100)], None),
])
def test_the_watchdog_follows_one_job_after_another(jobs, killed_after):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SEQUENCE.format(jobs=jobs)],
                          capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - t0
    if killed_after is None:
        assert proc.returncode == 0, proc.stderr
        assert "survived" in proc.stdout
    else:
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        # The interpreter's start is part of the time measured here.
        assert killed_after[0] <= elapsed <= killed_after[1] + 1.0, elapsed
