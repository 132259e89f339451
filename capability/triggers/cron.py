"""When a schedule fires: cron over wall-clock time in an IANA zone, with a DST policy.

Cron expressions are matched against the zone's *wall clock* (croniter over naive
datetimes), and each wall time is then placed on the real timeline (zoneinfo):

* a wall time that **does not exist** (spring forward, e.g. 02:30 in Europe/Berlin on
  the last Sunday of March) fires at the first valid instant after it, the moment the
  clocks jump (``dst.missing: shift``, the default), or not at all (``skip``: a
  ``skipped_dst`` tick in the ledger);
* a wall time that **occurs twice** (fall back) fires at its first occurrence
  (``dst.repeated: first``, the default), its second (``last``) or both.

So ``30 2 * * *`` fires exactly once on both DST days. A schedule whose *hour* field is a
wildcard or a step (``0 * * * *``, ``*/15 * * * *``, ``0 */2 * * *``) runs by the
clock's ticking rather than at a time of day, as Vixie cron treats it: in the repeated
hour both occurrences fire (an hourly schedule runs 25 times on a 25-hour day) and a
wall time inside the skipped hour is not a tick (23 runs on a 23-hour day); the DST
policy applies to schedules at fixed hours. Two ticks that land on the same instant
(a shifted 02:00 and a real 03:00) are one tick.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.UTC
MISSING = ("shift", "skip")
REPEATED = ("first", "last", "both")
ALIASES = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight")
# How far before a window's start wall times are generated: a shifted or repeated wall
# time is at most a DST offset (at most 2 hours anywhere) away from its instant.
_LOOKBACK = dt.timedelta(hours=3)
# Ticks are generated a window at a time; a window without an offset change (checked
# at both ends: changes are months apart) maps wall times at one fixed offset.
_WINDOW = dt.timedelta(days=2)
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

Kind = Literal["fire", "skipped_dst"]


class CronError(ValueError):
    """A cron expression, zone or duration that cannot be used; the message says why."""


@dataclass(frozen=True)
class Tick:
    """One instant a schedule decides: ``fire`` it, or record that DST skipped it."""

    at: dt.datetime  # aware, UTC
    kind: Kind
    wall: dt.datetime  # the cron's wall time (naive, in the schedule's zone)
    note: str = ""


def zone(name: str) -> ZoneInfo:
    try:
        if not name or name != name.strip() or ".." in name or name.startswith("/"):
            raise ZoneInfoNotFoundError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise CronError(f"unknown time zone {name!r} (an IANA name such as "
                        "'Europe/Berlin' or 'UTC')") from exc


@functools.lru_cache(maxsize=1024)
def check(expr: str) -> str:
    """The expression, normalised (single spaces); CronError saying what is wrong."""
    text = " ".join(str(expr or "").split())
    if not text:
        raise CronError("a cron expression is required (5 fields, or 6 with seconds first, "
                        "or @hourly/@daily/@weekly/@monthly/@yearly)")
    if text.startswith("@"):
        if text.lower() not in ALIASES:
            raise CronError(f"unknown alias {text!r}: one of {', '.join(ALIASES[:5])}")
        return text.lower()
    fields = text.split(" ")
    if len(fields) not in (5, 6):
        raise CronError(f"{len(fields)} fields: a cron expression has 5 (minute hour "
                        "day month weekday) or 6 (seconds first)")
    from croniter import croniter  # here, not at import: a scheduler without schedules
    # never loads it (3 MB)

    if not croniter.is_valid(text, second_at_beginning=len(fields) == 6):
        raise CronError(f"{text!r} is not a valid cron expression")
    return text


def _frequent(expr: str) -> bool:
    """Whether the hour field is a wildcard or a step (the clock's ticking, not a time
    of day): then the DST policy does not apply (module docstring)."""
    if expr.startswith("@"):
        return expr == "@hourly"
    fields = expr.split(" ")
    hour = fields[2] if len(fields) == 6 else fields[1]
    return hour.startswith("*")


def duration(text: str, what: str) -> dt.timedelta:
    """``"90s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"1w"`` (``"0s"`` for none)."""
    match = _DURATION.match(str(text or "").strip().lower())
    if not match:
        raise CronError(f"{what} must be a number and a unit s, m, h, d or w "
                        f"(e.g. '30s', '1d'), not {text!r}")
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _transition(wall: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The instant the clocks jumped over ``wall`` (a wall time in a gap), UTC."""
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)  # under the offset after: earlier
    high = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    before = low.astimezone(tz).utcoffset()
    lo, hi = int(low.timestamp()), int(high.timestamp())
    while hi - lo > 1:  # the first second whose offset is the new one
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return dt.datetime.fromtimestamp(hi, UTC)


def _place(wall: dt.datetime, tz: ZoneInfo, frequent: bool, missing: str,
           repeated: str) -> list[Tick]:
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    at_first, at_second = first.astimezone(UTC), second.astimezone(UTC)
    exists = at_first.astimezone(tz).replace(tzinfo=None) == wall
    if not exists:
        if frequent:
            return []
        at = _transition(wall, tz)
        note = (f"{wall:%H:%M} does not exist on {wall:%Y-%m-%d} in {tz.key} "
                "(the clocks go forward)")
        return [Tick(at, "fire" if missing == "shift" else "skipped_dst", wall, note)]
    if at_first == at_second:
        return [Tick(at_first, "fire", wall)]
    note = f"{wall:%H:%M} occurs twice on {wall:%Y-%m-%d} in {tz.key} (the clocks go back)"
    if frequent or repeated == "both":
        return [Tick(at_first, "fire", wall, note), Tick(at_second, "fire", wall, note)]
    if repeated == "last":
        return [Tick(at_first, "skipped_dst", wall, note), Tick(at_second, "fire", wall, note)]
    return [Tick(at_first, "fire", wall, note), Tick(at_second, "skipped_dst", wall, note)]


def ticks(expr: str, timezone: str, after: dt.datetime, missing: str = "shift",
          repeated: str = "first") -> Iterator[Tick]:
    """Every tick strictly after ``after`` (aware), in order of instant, without end.

    When two land on one instant, a ``fire`` wins over a ``skipped_dst``. Most of the
    time the zone's offset is the same over the next days (DST changes are months
    apart): then each wall time is one instant at that offset, yielded as croniter gives
    it. Only a window holding a change goes the careful way (``_around_change``)."""
    from croniter import CroniterBadDateError

    text = check(expr)
    tz = zone(timezone)
    six = not text.startswith("@") and len(text.split(" ")) == 6
    while True:
        until = after + _WINDOW
        offset = (after - _LOOKBACK).astimezone(tz).utcoffset()
        if offset != until.astimezone(tz).utcoffset() or offset is None:
            careful = _around_change(text, tz, after, six, missing, repeated)
        else:
            careful = None
            walls = _walls(text, after.astimezone(tz).replace(tzinfo=None), six)
        while True:
            try:
                if careful is not None:
                    tick = next(careful)
                else:
                    wall = walls.get_next(dt.datetime)
                    tick = Tick((wall - offset).replace(tzinfo=UTC), "fire", wall)
            except (CroniterBadDateError, StopIteration):
                return  # no more matches (e.g. "0 0 30 2 *": February 30)
            if tick.at > until:
                # No wall time matches before this one, whose instant is within hours
                # of ``tick.at`` whatever the offset: the next window starts a day
                # before it (a yearly cron does not walk the year two days at a time).
                after = max(until, tick.at - dt.timedelta(days=1))
                break
            if tick.at > after:
                yield tick


@functools.lru_cache(maxsize=1024)
def _parsed(text: str, six: bool) -> Any:
    from croniter import croniter

    return croniter(text, dt.datetime(2000, 1, 1), second_at_beginning=six)


def _walls(text: str, start: dt.datetime, six: bool) -> Any:
    """A croniter over ``text`` from the wall time ``start``: a copy of one parsed once
    (parsing is most of a tick's cost when a thousand schedules fall due at once)."""
    walls = copy.copy(_parsed(text, six))
    walls.set_current(start, force=True)
    return walls


def _around_change(text: str, tz: ZoneInfo, after: dt.datetime, six: bool, missing: str,
                   repeated: str) -> Iterator[Tick]:
    """The ticks after ``after`` near a DST change: wall times from a little before, each
    placed by ``_place`` and held until no later wall time can land before it."""
    from croniter import CroniterBadDateError

    frequent = _frequent(text)
    start = (after.astimezone(tz) - _LOOKBACK).replace(tzinfo=None)
    walls = _walls(text, start, six)
    pending: list[Tick] = []
    last: dt.datetime | None = None
    while True:
        try:
            wall = walls.get_next(dt.datetime)
        except CroniterBadDateError:
            yield from pending  # kept in order already
            return
        pending.extend(t for t in _place(wall, tz, frequent, missing, repeated)
                       if t.at > after)
        pending.sort(key=lambda t: (t.at, t.kind != "fire"))
        # A tick is final once wall times have moved past it by more than any offset.
        horizon = wall.replace(tzinfo=UTC) - _LOOKBACK - dt.timedelta(hours=14)
        while pending and (pending[0].at <= horizon or len(pending) > 64):
            tick = pending.pop(0)
            if last is not None and tick.at == last:
                continue
            last = tick.at
            yield tick


def fire_times(expr: str, timezone: str, after: dt.datetime, count: int,
               missing: str = "shift", repeated: str = "first",
               end: dt.datetime | None = None) -> list[dt.datetime]:
    """The next ``count`` instants that fire (UTC), stopping at ``end``."""
    out: list[dt.datetime] = []
    for tick in ticks(expr, timezone, after, missing, repeated):
        if end is not None and tick.at > end:
            break
        if tick.kind == "fire":
            out.append(tick.at)
            if len(out) >= count:
                break
    return out
