"""Times: stored in UTC, read back aware, shown one way.

``UtcDateTime`` is the column type of every timestamp: PostgreSQL keeps the zone, SQLite
drops it, and code that had to tell the two apart fixed naive values by hand in a dozen
places. With this type every value read back is an aware UTC datetime on both, so
nothing downstream looks at ``tzinfo`` again. ``when`` and ``duration`` are how pages show
times (one format everywhere); ``iso`` is how APIs and live updates send them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

_ZERO = dt.timedelta(0)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """``DateTime(timezone=True)`` that always hands back aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store aware UTC times (app.times)")
        value = value.astimezone(dt.UTC)
        # SQLite has no zone to store: the UTC wall time goes in, and comes back out
        # as UTC below.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        if value.utcoffset() == _ZERO:
            # PostgreSQL in UTC already: no new object (a reaper pass reads thousands).
            return value  # type: ignore[no-any-return]
        return value.astimezone(dt.UTC)  # type: ignore[no-any-return]


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601, as APIs and live updates send times."""
    return value.isoformat() if value is not None else None


def parse_iso(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def when(value: dt.datetime | str | None) -> str:
    """How a page shows a time (or an ISO string of one): ``2025-01-31 14:05:09 UTC``;
    empty for none."""
    moment = parse_iso(value) if isinstance(value, str) else value
    if moment is None:
        return ""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds_text(seconds: float) -> str:
    """``840 ms``, ``4.2 s``, ``3 min 5 s``, ``2 h 4 min``."""
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def duration(started: dt.datetime | str | None, finished: dt.datetime | str | None,
             now: dt.datetime | None = None) -> str:
    """How long something took (times or ISO strings); still going: so far, with a
    trailing ellipsis; empty when it has not started."""
    start = parse_iso(started) if isinstance(started, str) else started
    end = parse_iso(finished) if isinstance(finished, str) else finished
    if start is None:
        return ""
    if end is not None:
        return seconds_text((end - start).total_seconds())
    return seconds_text(((now or utcnow()) - start).total_seconds()) + "\u2026"


def install_template_helpers(env: Any) -> None:
    """``when`` and ``duration`` for every template, as functions and filters."""
    for name, helper in (("when", when), ("duration", duration)):
        env.globals[name] = helper
        env.filters[name] = helper
