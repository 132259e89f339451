"""Fixtures of the integration tests: a team with its Author, and worker processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.app import Factory, api_token, auth
from tests.support.engine import child_env, spawned


def _team_author(client: FlaskClient, factory: Factory) -> dict[str, Any]:
    team = factory.team()
    author = factory.user("Author", teams=[team])
    return {"team": team, "h": auth(api_token(client, author["username"]))}


@pytest.fixture()
def op(client: FlaskClient, factory: Factory) -> dict[str, Any]:
    """A team and the API headers of its Author."""
    return _team_author(client, factory)


@pytest.fixture()
def author(client: FlaskClient, factory: Factory) -> dict[str, Any]:
    """``op``, with every attempt taking the general path (``tests.support.driver``); a
    module may parametrize its own ``op`` on top of this one."""
    return {**_team_author(client, factory), "path": "general"}


@pytest.fixture()
def processes(app: Flask, tmp_path: Any) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Starts `flask --app app <command>` processes; stops whatever is left at the end."""
    with spawned(tmp_path, [sys.executable, "-m", "flask", "--app", "app"],
                 child_env(app, APG_SYNC_SECURITY="0")) as spawn:
        yield spawn
