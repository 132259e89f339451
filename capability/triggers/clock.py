"""The one place triggers read the time from.

In production it is the system clock. ``TRIGGERS_CLOCK_FILE`` (a testing aid, never
set in production) names a file holding an ISO 8601 instant, read at every call: tests
move it to drive scheduler *processes* through DST days, downtime and thousands of
ticks without waiting. In one process, tests may also ``set_override``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

ENV = "TRIGGERS_CLOCK_FILE"
_override: dt.datetime | None = None


def set_override(value: dt.datetime | None) -> None:
    global _override
    _override = value


def now() -> dt.datetime:
    if _override is not None:
        return _override
    path = os.environ.get(ENV)
    if path:
        text = Path(path).read_text(encoding="utf-8").strip()
        value = dt.datetime.fromisoformat(text)
        if value.tzinfo is None:
            raise ValueError(f"{ENV} {path}: {text!r} needs a UTC offset")
        return value.astimezone(dt.UTC)
    return dt.datetime.now(dt.UTC)
