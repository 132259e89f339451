"""An attempt's log as it is written (``engine.tasklog.Writer``): levels, masks, the
bound on lines and on a line's length."""

from __future__ import annotations

import logging

from capability.engine import tasklog


def writer(limit: int = 3) -> tasklog.Writer:
    return tasklog.Writer("att-1", limit, lambda m: m.replace("hunter2", "***"))


def test_levels_are_named_as_python_and_connectors_name_them() -> None:
    assert [tasklog.level_of(v) for v in ("INFO", "warn", "CRITICAL", "nonsense")] == [
        "info", "warning", "error", "info"]
    assert [tasklog.level_of(v) for v in (logging.DEBUG, logging.INFO, logging.WARNING,
                                          logging.ERROR, logging.CRITICAL)] == [
        "debug", "info", "warning", "error", "error"]


def test_lines_are_masked_by_the_engine_and_by_what_the_connector_adds() -> None:
    log = writer()
    log("info", "password hunter2")
    log.add_masks(["conn-secret", ""])
    log("error", "dsn with conn-secret and hunter2")
    assert [line["message"] for line in log.lines] == ["password ***",
                                                       "dsn with *** and ***"]
    assert [line["level"] for line in log.lines] == ["info", "error"]


def test_past_the_limit_lines_are_counted_not_kept_and_a_line_is_cut() -> None:
    log = writer(limit=2)
    log.write("info", "x" * (tasklog.MESSAGE_MAX + 500))
    for n in range(5):
        log.write("info", f"line {n}")
    assert len(log.lines) == 2 and log.truncated == 4
    assert len(log.lines[0]["message"]) == tasklog.MESSAGE_MAX
