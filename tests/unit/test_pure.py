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


KEY = b"k" * 32


class NoHead:
    def execute(self, *_a, **_k):
        class R:
            def first(self):
                return None
        return R()


def _chain(*events, keyed_from=1):
    """Hash ``events`` as a chain: plain SHA-256 before ``keyed_from``, HMAC after."""
    prev = chain.GENESIS_HASH
    out = []
    for seq, event in enumerate(events, start=1):
        row = {**event, "seq": seq, "prev_hash": prev}
        row["hash"] = prev = chain.compute_hash(row, KEY if seq >= keyed_from else None)
        out.append(row)
    return out


MARKER = {"action": chain.KEYED_ACTION, "target_type": chain.KEYED_TARGET}


def test_the_mac_depends_on_the_key():
    assert chain.compute_hash(_event(), KEY) != chain.compute_hash(_event())
    assert chain.compute_hash(_event(), KEY) != chain.compute_hash(_event(), b"j" * 32)


def test_verify_walks_a_chain_and_names_the_break():
    first, second = _chain(_event(**MARKER), _event(id="e2", actor="b"))
    assert chain.verify(NoHead(), KEY, [first, second]).ok  # type: ignore[arg-type]
    tampered = {**second, "actor": "mallory"}
    result = chain.verify(NoHead(), KEY, [first, tampered])  # type: ignore[arg-type]
    assert not result.ok and result.broken_seq == 2 and result.broken_id == "e2"
    gap = chain.verify(NoHead(), KEY, [second])  # type: ignore[arg-type]
    assert not gap.ok and "gap" in gap.reason


def test_events_before_the_marker_are_plain_sha256_and_after_it_keyed():
    rows = _chain(_event(), _event(id="m", **MARKER), _event(id="e3"), keyed_from=2)
    assert chain.verify(NoHead(), KEY, rows).ok  # type: ignore[arg-type]
    # Recomputed as plain SHA-256 from the marker on (no key): refused.
    unkeyed = _chain(_event(), _event(id="m", **MARKER), _event(id="e3"), keyed_from=99)
    result = chain.verify(NoHead(), KEY, unkeyed)  # type: ignore[arg-type]
    assert not result.ok and result.broken_seq == 2 and "MAC" in result.reason
    # Without the marker nothing is keyed: refused too.
    plain = _chain(_event(), _event(id="e2"), keyed_from=99)
    result = chain.verify(NoHead(), KEY, plain)  # type: ignore[arg-type]
    assert not result.ok and "marker missing" in result.reason


def test_verify_compares_every_checkpoint():
    rows = _chain(_event(**MARKER), _event(id="e2"))
    pin = chain.Checkpoint(2, rows[1]["hash"], "f:1")
    assert chain.verify(NoHead(), KEY, rows, [pin]).checkpoints == 1  # type: ignore[arg-type]
    other = chain.Checkpoint(2, "0" * 64, "f:2")
    result = chain.verify(NoHead(), KEY, rows, [other])  # type: ignore[arg-type]
    assert not result.ok and "f:2" in result.reason and result.broken_seq == 2
    ahead = chain.Checkpoint(3, "0" * 64, "f:3")
    result = chain.verify(NoHead(), KEY, rows, [ahead])  # type: ignore[arg-type]
    assert not result.ok and "events were removed" in result.reason


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


def test_the_derived_audit_key_is_hkdf_sha256() -> None:
    """The development AUDIT_KEY, spelled with the standard library (a scheduler never
    loads cryptography for it), is exactly cryptography's HKDF-SHA256."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from app.audit import keys

    for secret in ("a" * 32, "ünïcode secret key of some length", "x"):
        expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                        info=b"apg audit chain v1").derive(secret.encode("utf-8"))
        assert keys.audit_key({"AUDIT_KEY": "", "SECRET_KEY": secret}) == expected
    assert keys.audit_key({"AUDIT_KEY": "k" * 32, "SECRET_KEY": "s"}) == b"k" * 32
