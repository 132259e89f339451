"""app.ids.new_ids: UUIDv7 strings made by the thousand, as new_id makes them one by one."""

from __future__ import annotations

import uuid

from app.ids import new_id, new_ids


def test_new_ids_are_distinct_version_7_uuids_of_this_millisecond():
    before = uuid.UUID(new_id())
    ids = new_ids(2000)
    after = uuid.UUID(new_id())
    assert len(set(ids)) == 2000
    parsed = [uuid.UUID(i) for i in ids]
    assert all(str(p) == i for p, i in zip(parsed, ids, strict=True))  # canonical form
    assert all(p.version == 7 and p.variant == uuid.RFC_4122 for p in parsed)
    # The first 48 bits are the Unix time in ms: between the ids made around them.
    assert all(before.int >> 80 <= p.int >> 80 <= after.int >> 80 for p in parsed)
    assert new_ids(0) == []
