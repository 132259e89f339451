"""``flask --app app secrets rotate``: re-encrypt every secret, and every connection's
secret fields, under the first key of ``SECRETS_KEY`` (after a new key was put first;
older keys may then be dropped)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from app.extensions import DbSession, db

# Other values under the same key ring, re-encrypted by the same command: (what, how
# many it re-encrypted). Filled by the packages that keep such values (connections),
# so that this one imports none of them.
ROTATE_ALSO: list[tuple[str, Callable[[DbSession, Mapping[str, Any]], int]]] = []


@click.group("secrets")
def secrets_group() -> None:
    """Workflow secrets (their values are stored encrypted under SECRETS_KEY)."""


@secrets_group.command("rotate")
@with_appcontext
def rotate_command() -> None:
    """Re-encrypt every secret and connection under the first key of SECRETS_KEY.

    Exits 1 when a value does not decrypt with any key listed: nothing of its kind
    (secrets, or connections) is re-encrypted then.
    """
    from capability.secrets import service as secrets  # Fernet and the service: when asked

    try:
        done = [f"{secrets.rotate(db.session, current_app.config)} secret(s)"]
        for what, rotate in ROTATE_ALSO:
            done.append(f"{rotate(db.session, current_app.config)} {what}")
    except secrets.SecretsKeyError as exc:
        click.echo(f"secrets rotate failed: {exc}", err=True)
        sys.exit(1)
    click.echo(f"re-encrypted {' and '.join(done)} under the first key of SECRETS_KEY")
