"""`python` tasks run user code, so each call runs in a child process of its own.

Workers run jobs in their own process (``app.runtime.worker.AppWorker``); the engine's
own task types (noop, transform, http, ...) are our code, but a callable may crash the
interpreter (a C extension, ``os._exit``, the OOM killer). In the child, such a crash
fails only that attempt (retriable, with what killed it) and the worker lives on. A stop
(cancel) or the attempt's timeout interrupts the worker's wait for the child, which is
then killed with its whole process group; the child also dies with the worker
(``PR_SET_PDEATHSIG``), so a killed worker leaves nothing behind.

The child gets a copy of the worker (fork: no start-up cost beyond the fork itself) and
hands back the callable's result as JSON through a pipe: the output must be JSON
anyway, as the run stores it.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.runtime import interrupt
from app.runtime.redis_conn import pdeathsig_preexec


@dataclass(frozen=True)
class Result:
    ok: bool
    output: Any = None
    error: str | None = None
    retriable: bool = True


def _child(func: Callable[..., Any], kwargs: dict[str, Any], write_fd: int,
           parent: int) -> None:
    """In the child: never returns (``os._exit``), whatever happens."""
    code = 0
    try:
        os.setpgid(0, 0)
        die_with_parent = pdeathsig_preexec(signal.SIGKILL)
        if die_with_parent is not None:
            die_with_parent()
        if os.getppid() != parent:  # the worker died before the line above took effect
            os._exit(1)
        interrupt.reset_in_child()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        try:
            output = func(**kwargs)
        except Exception as exc:  # the task failed; the policy decides about a retry
            message = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        else:
            try:
                json.dumps(output)
                message = {"ok": True, "output": output}
            except (TypeError, ValueError) as exc:
                message = {"ok": False, "retriable": False,
                           "error": f"with.callable: returned a value that is not JSON: {exc}"}
        with os.fdopen(write_fd, "w", encoding="utf-8") as pipe:
            json.dump(message, pipe)
    except BaseException:  # a child must reach os._exit, whatever happened
        code = 1
    finally:
        os._exit(code)


def _death(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"the task's process was killed by {name}"
    return f"the task's process exited with status {os.waitstatus_to_exitcode(status)}"


def call(func: Callable[..., Any], kwargs: dict[str, Any]) -> Result:
    """``func(**kwargs)`` in a child process; exceptions raised in this process while
    waiting (``JobStopped``, the timeout's ``JobTimeoutException``) kill the child and
    propagate."""
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(func, kwargs, write_fd, parent)
    os.close(write_fd)
    try:
        os.setpgid(pid, pid)  # as the child does: whichever runs first, kill reaches both
    except OSError:
        pass
    try:
        with os.fdopen(read_fd, "r", encoding="utf-8") as pipe:
            data = pipe.read()  # until the child closes its end (exits or dies)
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.waitpid(pid, 0)
    if not data:
        return Result(False, error=_death(status))
    message = json.loads(data)
    return Result(bool(message["ok"]), message.get("output"), message.get("error"),
                  bool(message.get("retriable", True)))
