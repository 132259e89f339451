"""An attempt's log while it runs (CONNECTORS.md, "Task logs").

What a connector writes through ``context.log`` and what a ``python`` callable writes
with ``logging`` goes to the attempt's ``Writer``: each line masked (the team's secrets
the task could read, the connection's), cut at ``MESSAGE_MAX`` characters, and kept up
to ``TASK_LOG_MAX_LINES``; past that, lines are only counted (``truncated``). Each line
is also pushed to a Redis list while the attempt runs, so the run page can follow it
live; when the attempt ends its lines are stored with it (``TaskAttempt.log``, in the
UPDATE that records its outcome: ``Outcome.log``; ``store`` where no such UPDATE is
made) and the list is dropped.

A task that writes nothing costs nothing: no Redis call, no column written. The engine's own lines
(start, retry decision, timeout, cancel) are not written here: they are read from the
attempt's row when the log is shown (``capability.runs.logs``), so they can never
disagree with what the engine recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, cast

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import update

from app.extensions import DbSession
from capability import dsl
from capability.models import TaskAttempt

LIVE_PREFIX = "apg:tasklog:"
# A list outlives an attempt whose worker died before storing it, but not for ever.
LIVE_TTL = 24 * 3600
MESSAGE_MAX = 8000
LEVELS = ("debug", "info", "warning", "error")

log = logging.getLogger(__name__)


def level_of(value: Any) -> str:
    """A line's level: one of ``LEVELS`` (Python's names and numbers are understood)."""
    if isinstance(value, int):
        return ("debug" if value < logging.INFO else "info" if value < logging.WARNING
                else "warning" if value < logging.ERROR else "error")
    name = str(value).lower()
    name = {"warn": "warning", "critical": "error", "fatal": "error"}.get(name, name)
    return name if name in LEVELS else "info"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Writer:
    """The log of one attempt, as it is written. ``mask``: what makes a message safe to
    keep (the engine's masking of the task's secrets); ``masks``: more values to mask,
    added by whoever learns them (a connection's secret fields)."""

    def __init__(self, attempt_id: str, limit: int, mask: Callable[[str], str],
                 live: Redis | None = None) -> None:
        self.attempt_id = attempt_id
        self.limit = max(0, limit)
        self.lines: list[dict[str, str]] = []
        self.truncated = 0
        self._mask = mask
        self._extra: list[list[str]] = []
        self._live = live

    def add_masks(self, values: list[str]) -> None:
        """Mask ``values`` too: the list itself is kept, so a value added to it later (a
        token a connector obtains while it runs) is masked from then on."""
        self._extra.append(values)

    def masked(self, message: str) -> str:
        text = self._mask(message)
        extra = [v for values in self._extra for v in values if v]
        return (dsl.mask_text(text, extra) or "") if extra else text

    def write(self, level: Any, message: Any, at: str | None = None) -> None:
        if len(self.lines) >= self.limit:
            self.truncated += 1
            return
        line = {"at": at or now_iso(), "level": level_of(level),
                "message": self.masked(str(message))[:MESSAGE_MAX]}
        self.lines.append(line)
        if self._live is not None:
            _sender().put(self._live, self.attempt_id, json.dumps(line))

    def __call__(self, level: Any, message: Any) -> None:
        self.write(level, message)


def kept(writer: Writer | None) -> tuple[list[dict[str, str]], int] | None:
    """What ``writer`` holds, to store with its attempt; None when it wrote nothing."""
    if writer is None or not (writer.lines or writer.truncated):
        return None
    return writer.lines, writer.truncated


def store(session: DbSession, attempt_id: str,
          log: tuple[list[dict[str, str]], int] | None) -> None:
    """Keep ``log`` with its attempt in the caller's transaction: where no record of
    the attempt's outcome carries it (a wait, a child run, a skip; a cancelled attempt
    or a late result, in a transaction of their own)."""
    if log is None:
        return
    session.execute(update(TaskAttempt).where(TaskAttempt.id == attempt_id)
                    .values(log=log[0], log_truncated=log[1]))


def drop_live(redis: Redis | None, writer: Writer | None) -> None:
    """After ``store`` committed: the lines are in the database now."""
    if redis is None or writer is None or not writer.lines:
        return
    _sender().put(redis, writer.attempt_id, None)


class _Sender:
    """Sends live lines to Redis, and drops a list once its lines are stored, off the
    attempt's thread and in the order they came: following a log live is a convenience,
    and a round trip per line (and one more at the end) was a good part of what a short
    task that logs one line cost the engine (``bench/connectors.py``). What is queued
    together goes in one pipeline. A process that dies with lines queued loses only
    their live copy: what an attempt wrote is stored with its record."""

    def __init__(self) -> None:
        # (Redis, attempt id, a line or None: drop the list) or an Event: ``idle``
        self.items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._loop, name="apg-tasklog", daemon=True)
        self.thread.start()

    def usable(self) -> bool:
        return self.pid == os.getpid() and self.thread.is_alive()  # a fork has no thread

    def put(self, redis: Redis, attempt_id: str, line: str | None) -> None:
        self.items.put((redis, attempt_id, line))

    def idle(self, timeout: float) -> bool:
        done = threading.Event()
        self.items.put(done)
        return done.wait(timeout)

    def _loop(self) -> None:
        while True:
            batch = [self.items.get()]
            while True:
                try:
                    batch.append(self.items.get_nowait())
                except queue.Empty:
                    break
            by_redis: dict[int, list[tuple[Redis, str, str | None]]] = {}
            for item in batch:
                if not isinstance(item, threading.Event):
                    by_redis.setdefault(id(item[0]), []).append(item)
            for items in by_redis.values():
                self._send(items)
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()

    @staticmethod
    def _send(items: list[tuple[Redis, str, str | None]]) -> None:
        try:
            pipe = items[0][0].pipeline(transaction=False)
            for _, attempt_id, line in items:
                key = LIVE_PREFIX + attempt_id
                if line is None:
                    pipe.delete(key)
                else:
                    pipe.rpush(key, line)
                    pipe.expire(key, LIVE_TTL)
            pipe.execute()
        except RedisError as exc:  # following live is a convenience; the log is kept
            log.debug("task log lines not sent live: %s", exc)


_current: _Sender | None = None
_current_lock = threading.Lock()


def _sender() -> _Sender:
    global _current
    with _current_lock:
        if _current is None or not _current.usable():
            _current = _Sender()
        return _current


def sent(timeout: float = 5.0) -> bool:
    """Whether every live line queued so far in this process was sent (or failed to be)
    within ``timeout`` seconds."""
    return _sender().idle(timeout)


def live_lines(redis: Redis, attempt_id: str) -> list[dict[str, Any]]:
    """The lines a running attempt has written so far."""
    found = cast(list[bytes], redis.lrange(LIVE_PREFIX + attempt_id, 0, -1))
    return [json.loads(raw) for raw in found]
