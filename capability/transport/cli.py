"""``flask --app app reap`` (and ``python -m app reap``): one reaper pass by hand."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from capability.engine.reaper import GRACE_SECONDS, reap_locked


@click.command("reap")
@click.option("--grace", type=float, default=GRACE_SECONDS, show_default=True,
              help="seconds an attempt must exist before its missing job counts")
@with_appcontext
def reap_command(grace: float) -> None:
    """One reaper pass: re-send work Redis lost, record attempts of dead workers lost."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    click.echo(str(reap_locked(app, grace=grace)))
