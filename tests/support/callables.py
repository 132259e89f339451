"""Callables that `python` tasks in the tests may name (PYTHON_TASK_PREFIXES is this
module: `tests.support.callables`)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

ANSWER = 42  # not callable: a `python` task naming it is refused


def _count(key: str) -> int:
    """Calls so far, kept in a file: each call runs in a process of its own."""
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


def crash_first(key: str) -> dict[str, Any]:
    """The first call for ``key`` kills its own process (as a segfault or the OOM killer
    would); later calls succeed."""
    calls = _count(key)
    if calls == 1:
        os.kill(os.getpid(), 9)
        time.sleep(10)
    return {"calls": calls, "pid": os.getpid()}


def not_json() -> object:
    return object()


def my_pid() -> int:
    return os.getpid()


def encodings(value: str, prefix: str = "user:") -> dict[str, str]:
    """``value`` in the transforms a secret is masked in (issue 11, item 5)."""
    import base64
    from urllib.parse import quote, quote_plus

    raw = value.encode()
    return {
        "base64": base64.b64encode(raw).decode(),
        "base64_nopad": base64.b64encode(raw).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(raw).decode(),
        "base64url_nopad": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "basic": "Basic " + base64.b64encode(prefix.encode() + raw).decode(),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "url": quote(value, safe=""),
        "url_plus": quote_plus(value),
        "upper": value.upper(),
        "lower": value.lower(),
        "reversed": value[::-1],
        "reversed_upper": value[::-1].upper(),
    }


def blob(size: int) -> str:
    """An output of ``size`` characters."""
    return "x" * size


def chatty(lines: int, secret: str = "", fail: bool = False) -> dict[str, Any]:
    """Writes ``lines`` log lines with Python's ``logging`` (the attempt's log); the
    first names ``secret``, the second is a warning; then fails when ``fail``."""
    import logging

    log = logging.getLogger("chatty")
    for n in range(lines):
        if n == 0:
            log.info("connecting with %s", secret)
        elif n == 1:
            log.warning("line %d: slow answer", n)
        else:
            log.info("line %d", n)
    log.debug("not kept: below INFO")
    if fail:
        raise RuntimeError("chatty failed on purpose")
    return {"lines": lines}


def chatty_then_sleep(key: str, seconds: float) -> str:
    """Logs a line, then sleeps (a test follows the log live, or cancels)."""
    import logging

    logging.getLogger("chatty").info("working on %s", key)
    time.sleep(seconds)
    logging.getLogger("chatty").info("done with %s", key)
    return "woke"
