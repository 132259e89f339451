"""Pure functions: no database, no Redis."""

from __future__ import annotations

import datetime as dt

import pytest

from app.audit import chain
from app.audit.registry import json_safe
from app.errors import ValidationFailed, error_path, parse
from app.tenancy.service import TeamIn


def _event(**over):
    base = {"id": "e1", "seq": 1, "at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "tenant": "t",
            "actor": "a", "action": "create", "target_type": "team", "target_id": "x",
            "team": None, "outcome": "success", "ip": None, "request_id": None,
            "before": None, "after": {"name": "n"}, "prev_hash": chain.GENESIS_HASH}
    base.update(over)
    return base


def test_hash_covers_every_field_and_ignores_timezone_form():
    reference = chain.compute_hash(_event())
    naive = chain.compute_hash(_event(at=dt.datetime(2026, 1, 1)))
    assert naive == reference  # SQLite gives naive UTC datetimes back
    for field, value in [("actor", "b"), ("after", {"name": "m"}), ("prev_hash", "1" * 64),
                         ("seq", 2), ("outcome", "denied")]:
        assert chain.compute_hash(_event(**{field: value})) != reference, field


def test_verify_walks_a_chain_and_names_the_break():
    first = _event()
    first["hash"] = chain.compute_hash(first)
    second = _event(id="e2", seq=2, prev_hash=first["hash"], actor="b")
    second["hash"] = chain.compute_hash(second)

    class NoHead:
        def execute(self, *_a, **_k):
            class R:
                def first(self):
                    return None
            return R()

    assert chain.verify(NoHead(), [first, second]).ok  # type: ignore[arg-type]
    tampered = {**second, "actor": "mallory"}
    result = chain.verify(NoHead(), [first, tampered])  # type: ignore[arg-type]
    assert not result.ok and result.broken_seq == 2 and result.broken_id == "e2"
    gap = chain.verify(NoHead(), [second])  # type: ignore[arg-type]
    assert not gap.ok and "gap" in gap.reason


def test_error_paths_read_like_the_dsl():
    assert error_path(("tasks", 2, "depends_on", 0)) == "tasks[2].depends_on[0]"
    assert error_path(()) == "$"


def test_parse_collects_every_error_with_its_path():
    with pytest.raises(ValidationFailed) as info:
        parse(TeamIn, {"name": "", "extra": 1, "tenant": 5})
    paths = {e["path"] for e in info.value.errors}
    assert paths == {"name", "extra", "tenant"}
    assert "unknown field" in str(info.value)


def test_json_safe_keeps_hashable_values_stable():
    assert json_safe({"a": {1, 3, 2}, "b": dt.date(2026, 1, 2), "c": b"secret"}) == {
        "a": [1, 2, 3], "b": "2026-01-02", "c": "***"}
