"""Cron over wall-clock time with the DST policy of TRIGGERS.md (``triggers.cron``)."""

from __future__ import annotations

import datetime as dt

import pytest

from capability.triggers import cron

UTC = dt.UTC
BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
# 2027: Berlin springs forward 28 March (02:00 -> 03:00), falls back 31 October
# (03:00 -> 02:00); New York 14 March (02:00 -> 03:00) and 7 November (02:00 -> 01:00).
DAYS = {BERLIN: (dt.date(2027, 3, 28), dt.date(2027, 10, 31)),
        NEW_YORK: (dt.date(2027, 3, 14), dt.date(2027, 11, 7))}


def _day(expr: str, zone: str, day: dt.date, **policy: str) -> list[cron.Tick]:
    tz = cron.zone(zone)
    start = dt.datetime.combine(day, dt.time(0), tz).astimezone(UTC)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tz).astimezone(UTC)
    out = []
    for tick in cron.ticks(expr, zone, start - dt.timedelta(seconds=1), **policy):
        if tick.at >= end:
            break
        out.append(tick)
    return out


def _fired(ticks: list[cron.Tick], zone: str) -> list[str]:
    tz = cron.zone(zone)
    return [t.at.astimezone(tz).isoformat() for t in ticks if t.kind == "fire"]


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
def test_a_daily_0230_fires_exactly_once_on_both_dst_days_by_default(zone: str) -> None:
    spring, fall = DAYS[zone]
    # Spring: 02:30 does not exist; it fires when the clocks jump (03:00 summer time).
    assert _fired(_day("30 2 * * *", zone, spring), zone) == [
        f"{spring}T03:00:00{'+02:00' if zone == BERLIN else '-04:00'}"]
    assert len(_fired(_day("30 2 * * *", zone, fall), zone)) == 1
    # New York repeats 01:xx, not 02:xx: there 01:30 is the ambiguous time.
    repeated = "30 2 * * *" if zone == BERLIN else "30 1 * * *"
    ticks = _day(repeated, zone, fall)
    assert [t.kind for t in ticks] == ["fire", "skipped_dst"]  # first occurrence fires
    assert ticks[0].at < ticks[1].at


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
def test_skip_and_both_do_what_they_say(zone: str) -> None:
    spring, fall = DAYS[zone]
    skipped = _day("30 2 * * *", zone, spring, missing="skip")
    assert [t.kind for t in skipped] == ["skipped_dst"]
    assert "does not exist" in skipped[0].note
    repeated = "30 2 * * *" if zone == BERLIN else "30 1 * * *"
    both = _day(repeated, zone, fall, repeated="both")
    assert [t.kind for t in both] == ["fire", "fire"]
    assert both[1].at - both[0].at == dt.timedelta(hours=1)
    last = _day(repeated, zone, fall, repeated="last")
    assert [t.kind for t in last] == ["skipped_dst", "fire"]


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
def test_an_hourly_schedule_runs_every_real_hour_across_both_transitions(zone: str) -> None:
    spring, fall = DAYS[zone]
    assert len(_fired(_day("0 * * * *", zone, spring), zone)) == 23
    assert len(_fired(_day("0 * * * *", zone, fall), zone)) == 25
    assert len(_fired(_day("@hourly", zone, fall), zone)) == 25
    assert len(_fired(_day("*/15 * * * *", zone, spring), zone)) == 92
    assert len(_fired(_day("0 * * * *", zone, dt.date(2027, 6, 1)), zone)) == 24
    # Every instant is distinct and in order.
    instants = [t.at for t in _day("0 * * * *", zone, fall)]
    assert instants == sorted(set(instants))


def test_a_shifted_tick_and_a_real_one_on_the_same_instant_are_one() -> None:
    """``0 2,3 * * *`` on the spring day: 02:00 shifts to 03:00, which is a tick too."""
    ticks = _day("0 2,3 * * *", BERLIN, DAYS[BERLIN][0])
    assert _fired(ticks, BERLIN) == ["2027-03-28T03:00:00+02:00"]
    skip = _day("0 2,3 * * *", BERLIN, DAYS[BERLIN][0], missing="skip")
    assert [t.kind for t in skip] == ["fire"]  # the real 03:00 wins over the skipped 02:00


def test_six_fields_have_seconds_first_and_aliases_work() -> None:
    start = dt.datetime(2027, 1, 1, tzinfo=UTC)
    assert cron.fire_times("5 * * * * *", "UTC", start, 2) == [
        dt.datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC), dt.datetime(2027, 1, 1, 0, 1, 5, tzinfo=UTC)]
    assert cron.fire_times("@daily", "Asia/Kolkata", start, 1) == [
        dt.datetime(2027, 1, 1, 18, 30, tzinfo=UTC)]
    assert cron.fire_times("0 9 * * 1", "UTC", start, 1)[0].weekday() == 0


@pytest.mark.parametrize(("expr", "says"), [
    ("", "required"), ("61 * * * *", "not a valid"), ("* * *", "3 fields"),
    ("* * * * * * *", "7 fields"), ("@fortnightly", "unknown alias"),
])
def test_bad_cron_says_why(expr: str, says: str) -> None:
    with pytest.raises(cron.CronError, match=says):
        cron.check(expr)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "", " UTC", "/UTC"])
def test_an_unknown_zone_is_refused(name: str) -> None:
    with pytest.raises(cron.CronError, match="unknown time zone"):
        cron.zone(name)


def test_a_cron_that_never_matches_has_no_fire_times() -> None:
    assert cron.fire_times("0 0 30 2 *", "UTC", dt.datetime(2027, 1, 1, tzinfo=UTC), 3) == []


@pytest.mark.parametrize(("text", "seconds"), [("0s", 0), ("90s", 90), ("5m", 300),
                                                ("2h", 7200), ("1d", 86400), ("1w", 604800)])
def test_durations(text: str, seconds: int) -> None:
    assert cron.duration(text, "jitter").total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "5", "-1s", "1y", "1.5h", "h"])
def test_bad_durations_name_the_field(text: str) -> None:
    with pytest.raises(cron.CronError, match="catchup_window must be"):
        cron.duration(text, "catchup_window")
