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
anyway, as the run stores it. What the callable writes with ``logging`` comes through
the same pipe as it is written, one JSON line per record, to the attempt's log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from app.runtime import interrupt
from app.runtime.redis_conn import pdeathsig_preexec


@dataclass(frozen=True)
class Result:
    ok: bool
    output: Any = None
    error: str | None = None
    retriable: bool = True


class _PipeHandler(logging.Handler):
    """In the child: each record as a JSON line on the pipe, ``limit`` of them; the rest
    only counted (``dropped``), so a callable logging in a loop cannot flood the worker."""

    def __init__(self, pipe: IO[str], limit: int) -> None:
        super().__init__(logging.DEBUG)
        self.pipe, self.limit, self.sent, self.dropped = pipe, limit, 0, 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.sent >= self.limit:
            self.dropped += 1
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            at = dt.datetime.fromtimestamp(record.created, dt.UTC)
            self.pipe.write(json.dumps({"log": {
                "at": at.isoformat(timespec="milliseconds"),
                "level": record.levelname, "message": message}}) + "\n")
            self.pipe.flush()
            self.sent += 1
        except Exception:  # a record that cannot be written is lost, not the task
            self.handleError(record)


def _capture(pipe: IO[str], limit: int) -> _PipeHandler:
    """The callable's ``logging`` goes to the task's log, not to the worker's: the root
    logger's handlers are replaced in the child, at INFO (as an attempt's log is read)."""
    handler = _PipeHandler(pipe, limit)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _child(func: Callable[..., Any], kwargs: dict[str, Any], write_fd: int,
           parent: int, log_limit: int) -> None:
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
        pipe = os.fdopen(write_fd, "w", encoding="utf-8")
        captured = _capture(pipe, log_limit)
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
        message["log_dropped"] = captured.dropped
        with pipe:
            pipe.write(json.dumps(message) + "\n")
    except BaseException:  # a child must reach os._exit, whatever happened
        code = 1
    finally:
        os._exit(code)


def _line(line: str, log: _Log | None) -> str:
    """One line from the child: a log record (handed to ``log``; "" returned) or the
    result (returned; a line cut short by a death is no result)."""
    if not line.endswith("\n"):
        return ""
    if line.startswith('{"log": '):
        if log is not None:
            record = json.loads(line)["log"]
            log.write(record["level"], record["message"], record["at"])
        return ""
    return line


def _death(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"the task's process was killed by {name}"
    return f"the task's process exited with status {os.waitstatus_to_exitcode(status)}"


class _Log(Protocol):
    """Where the child's log lines go: ``write(level, message, at)`` and ``truncated``
    (an ``engine.tasklog.Writer``)."""

    truncated: int

    def write(self, level: Any, message: Any, at: str | None = None) -> None: ...


def call(func: Callable[..., Any], kwargs: dict[str, Any], log: _Log | None = None,
         log_limit: int = 2000) -> Result:
    """``func(**kwargs)`` in a child process; exceptions raised in this process while
    waiting (``JobStopped``, the timeout's ``JobTimeoutException``) kill the child and
    propagate. What it logs goes to ``log`` as it comes (``log_limit`` lines at most)."""
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(func, kwargs, write_fd, parent, log_limit)
    os.close(write_fd)
    try:
        os.setpgid(pid, pid)  # as the child does: whichever runs first, kill reaches both
    except OSError:
        pass
    data = ""
    try:
        with os.fdopen(read_fd, "r", encoding="utf-8") as pipe:
            for line in pipe:  # until the child closes its end (exits or dies)
                data = _line(line, log)
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
    if log is not None:
        log.truncated += int(message.get("log_dropped") or 0)
    return Result(bool(message["ok"]), message.get("output"), message.get("error"),
                  bool(message.get("retriable", True)))
