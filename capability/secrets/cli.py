"""``flask --app app secrets rotate``: re-encrypt every secret under the first key of
``SECRETS_KEY`` (after a new key was put first; older keys may then be dropped)."""

from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from app.extensions import db


@click.group("secrets")
def secrets_group() -> None:
    """Workflow secrets (their values are stored encrypted under SECRETS_KEY)."""


@secrets_group.command("rotate")
@with_appcontext
def rotate_command() -> None:
    """Re-encrypt every secret under the first key of SECRETS_KEY.

    Exits 1, changing nothing, when a secret does not decrypt with any key listed.
    """
    from capability.secrets import service as secrets  # Fernet and the service: only when asked for

    try:
        count = secrets.rotate(db.session, current_app.config)
    except secrets.SecretsKeyError as exc:
        click.echo(f"secrets rotate failed: {exc}", err=True)
        sys.exit(1)
    click.echo(f"re-encrypted {count} secret(s) under the first key of SECRETS_KEY")
