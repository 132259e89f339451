"""Checkpoints of the audit chain, kept outside the database.

A checkpoint is the chain's head at some time, its sequence number and MAC, appended
as one JSON line to a file of ``AUDIT_CHECKPOINT_DIR`` (one file per month). Files are
opened with ``O_APPEND`` and never rewritten, so a copy shipped elsewhere as it grows
(a WORM bucket, syslog, another host) only ever gains lines. ``audit verify`` compares
the chain with every checkpoint: an event rewritten, or the chain cut back below a
checkpoint, is reported even when the database was changed by someone who holds the
key and recomputed the MACs.

The scheduler writes one every ``AUDIT_CHECKPOINT_INTERVAL`` seconds when the head has
moved (a maintenance hook, see ``install``); ``flask --app app audit checkpoint`` writes
one on demand.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from app.audit import chain, keys
from app.extensions import DbSession

log = logging.getLogger(__name__)

SUBDIR = "audit-checkpoints"
PATTERN = "checkpoints-*.jsonl"


class CheckpointError(RuntimeError):
    """A checkpoint file holds a line that is not a checkpoint (damaged or edited)."""


def directory(config: Mapping[str, Any]) -> Path:
    configured = str(config.get("AUDIT_CHECKPOINT_DIR") or "")
    return Path(configured) if configured else Path(config["INSTANCE_DIR"]) / SUBDIR


def write(session: DbSession, config: Mapping[str, Any]) -> chain.Checkpoint:
    """Append the current head of the chain to this month's file; the checkpoint.
    Ends the session's transaction."""
    # A chain begun before AUDIT_KEY existed is keyed first, so what is pinned is a MAC.
    chain.ensure_keyed(session.connection(), keys.audit_key(config))
    session.commit()
    seq, mac = chain.head(session.connection())
    session.rollback()
    now = dt.datetime.now(dt.UTC)
    folder = directory(config)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"checkpoints-{now:%Y-%m}.jsonl"
    line = json.dumps({"seq": seq, "mac": mac, "at": now.isoformat(timespec="seconds"),
                       "host": socket.gethostname()}, sort_keys=True) + "\n"
    # One write() of one short line with O_APPEND: writers on the same machine never
    # interleave, and nothing already written is touched.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return chain.Checkpoint(seq, mac, str(path))


def read(folder: Path) -> Iterator[chain.Checkpoint]:
    """Every checkpoint of the files in ``folder`` (none when it does not exist)."""
    if not folder.is_dir():
        return
    for path in sorted(folder.glob(PATTERN)):
        with path.open(encoding="utf-8") as lines:
            for number, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                where = f"{path.name}:{number}"
                try:
                    data = json.loads(raw)
                    seq, mac = data["seq"], data["mac"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise CheckpointError(f"{where} is not a checkpoint line") from exc
                if not isinstance(seq, int) or not isinstance(mac, str):
                    raise CheckpointError(f"{where} is not a checkpoint line")
                yield chain.Checkpoint(seq, mac, where)


class _Periodic:
    """The scheduler's maintenance hook: a checkpoint when the interval has passed and
    the head has moved since this process's last one."""

    def __init__(self) -> None:
        self.last_time = float("-inf")
        self.last_seq: int | None = None

    def __call__(self, app: Flask) -> None:
        from app.extensions import db

        interval = float(app.config.get("AUDIT_CHECKPOINT_INTERVAL", 300))
        if interval <= 0 or time.monotonic() - self.last_time < interval:
            return
        if chain.head(db.session.connection())[0] == self.last_seq:
            return
        written = write(db.session, app.config)
        self.last_time = time.monotonic()
        self.last_seq = written.seq
        log.debug("audit checkpoint at #%s written to %s", written.seq, directory(app.config))


def install(app: Flask) -> None:
    """Hook the periodic checkpoint into the scheduler (``reg.on_ready``)."""
    from app.runtime.worker import runtime_hooks

    hooks = runtime_hooks(app)
    if not any(isinstance(hook, _Periodic) for hook in hooks.maintenance):
        hooks.maintenance.append(_Periodic())
