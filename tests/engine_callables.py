"""Callables that `python` tasks in the tests may name (the allowed prefix is `tests`)."""

from __future__ import annotations

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
