"""Fixtures of the integration tests: a team with its Author."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.support.app import Factory, api_token, auth


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

