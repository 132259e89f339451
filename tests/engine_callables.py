"""Callables that `python` tasks in the tests may name (the allowed prefix is `tests`)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any


def _count(key: str) -> int:
    """Calls so far, kept in a file: forked work horses share no memory."""
    path = Path(tempfile.gettempdir()) / f"apg-flaky-{key}"
    with path.open("a+") as fh:
        fh.write("x")
    return len(path.read_text())


def add(a: int, b: int) -> int:
    return a + b


def flaky(key: str, fail_times: int) -> dict[str, Any]:
    """Fails the first ``fail_times`` calls for ``key``, then succeeds."""
    calls = _count(key)
    if calls <= fail_times:
        raise RuntimeError(f"flaky failure {calls}")
    return {"calls": calls}


def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def pid_file(key: str) -> Path:
    return Path(tempfile.gettempdir()) / f"apg-pid-{key}"


def sleep_first(key: str, seconds: float) -> dict[str, Any]:
    """Sleeps ``seconds`` on the first call for ``key`` only, after writing its pid to
    ``pid_file(key)`` (so a test can kill the process running it); later calls return
    at once."""
    calls = _count(key)
    if calls == 1:
        pid_file(key).write_text(str(os.getpid()))
        time.sleep(seconds)
    return {"calls": calls}
