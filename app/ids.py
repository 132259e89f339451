"""Identifiers of our own rows: UUIDv7 strings (time-ordered, index friendly)."""

from __future__ import annotations

import uuid6

SHORT_ID_CHARS = 8


def new_id() -> str:
    return str(uuid6.uuid7())


def short_id(value: object) -> str:
    """The short form people see: the last 8 hex digits. A UUIDv7 starts with its
    timestamp, so runs of the same minute share their first 8 characters; the tail is
    random. The full id stays on the run's page and in every link."""
    text = "" if value is None else str(value)
    return text[-SHORT_ID_CHARS:]
