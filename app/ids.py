"""Identifiers of our own rows: UUIDv7 strings (time-ordered, index friendly)."""

from __future__ import annotations

import uuid6


def new_id() -> str:
    return str(uuid6.uuid7())
