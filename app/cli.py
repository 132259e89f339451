"""Flask CLI commands of API.md: up, worker, scheduler, audit verify and checkpoint,
ensure-admin.

A web-role app has them all; a worker-role app (``APG_PROCESS=worker``) has worker,
scheduler and audit verify (plus what capabilities add, e.g. ``reap``); ``python -m
app`` (``app/__main__.py``) runs the worker-role ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from app.extensions import db
from app.process import WEB


@click.command("up")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="default: PORT or 8080")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="RQ workers to start (default: WORKERS or 2)")
@click.option("--scheduler/--no-scheduler", default=True, show_default=True,
              help="start a scheduler process")
@with_appcontext
def up_command(host: str, port: int | None, workers: int | None, scheduler: bool) -> None:
    """Migrate, ensure the admin, start web + RQ workers + scheduler."""
    from app.runtime.up import run_up

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    run_up(
        app, host, port or app.config["PORT"],
        workers if workers is not None else app.config["WORKERS"],
        scheduler=scheduler,
    )


@click.command("worker")
@click.option("--queues", default=None, help="comma-separated, e.g. high,default,low")
@click.option("--burst", is_flag=True, help="exit when the queues are empty")
@with_appcontext
def worker_command(queues: str | None, burst: bool) -> None:
    """Run one RQ worker inside the app context (SIGTERM: finish the job, then exit)."""
    from app.runtime.worker import run_worker

    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    run_worker(current_app._get_current_object(), names, burst=burst)  # type: ignore[attr-defined]


@click.command("scheduler")
@with_appcontext
def scheduler_command() -> None:
    """Enqueue delayed and retried work when it is due (safe to run more than once)."""
    from app.runtime.worker import run_scheduler

    run_scheduler(current_app._get_current_object())  # type: ignore[attr-defined]


@click.group("audit")
def audit_group() -> None:
    """The audit trail."""


@audit_group.command("verify")
@click.option("--checkpoints", "checkpoint_dir", default=None,
              type=click.Path(file_okay=False, path_type=Path),
              help="directory of checkpoint files (default: AUDIT_CHECKPOINT_DIR)")
@with_appcontext
def audit_verify(checkpoint_dir: Path | None) -> None:
    """Exit 0 when the keyed chain holds and matches every checkpoint; 1 naming the
    first broken event (or the checkpoint the chain no longer reaches)."""
    from app.audit.checkpoints import CheckpointError, directory
    from app.audit.service import verify

    folder = checkpoint_dir or directory(current_app.config)
    if checkpoint_dir is not None and not folder.is_dir():
        click.echo(f"audit checkpoints: {folder} is not a directory", err=True)
        sys.exit(1)
    try:
        result = verify(db.session(), current_app.config, folder)
    except CheckpointError as exc:
        click.echo(f"audit checkpoints DAMAGED: {exc}", err=True)
        sys.exit(1)
    if result.ok:
        click.echo(f"audit chain intact: {result.checked} event(s), "
                   f"{result.checkpoints} checkpoint(s) of {folder} matched")
        return
    target = (f"event #{result.broken_seq}" if result.broken_seq is not None else "the chain") + (
        f" ({result.broken_id})" if result.broken_id else "")
    click.echo(f"audit chain BROKEN at {target}: {result.reason}", err=True)
    sys.exit(1)


@audit_group.command("checkpoint")
@with_appcontext
def audit_checkpoint() -> None:
    """Append the chain's head (sequence number and MAC) to AUDIT_CHECKPOINT_DIR."""
    from app.audit.checkpoints import write

    written = write(db.session(), current_app.config)
    click.echo(f"audit checkpoint: event #{written.seq} written to {written.where}")


@click.command("ensure-admin")
@with_appcontext
def ensure_admin_command() -> None:
    """Create the admin from ADMIN_USERNAME / ADMIN_PASSWORD if missing."""
    from app.runtime.up import prepare

    prepare(current_app._get_current_object())  # type: ignore[attr-defined]


WEB_COMMANDS = (up_command, worker_command, scheduler_command, audit_group, ensure_admin_command)
# `up` serves the web and `ensure-admin` syncs permissions: both need the web role.
WORKER_COMMANDS = (worker_command, scheduler_command, audit_group)


def register_cli(app: Flask, role: str = WEB) -> None:
    for command in WEB_COMMANDS if role == WEB else WORKER_COMMANDS:
        app.cli.add_command(command)
