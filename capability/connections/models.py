"""A team's saved connection to an outside system (CONNECTORS.md, "Connections")."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask_appbuilder.models.sqla import Model
from sqlalchemy import JSON, String, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.ids import new_id
from app.models import Team
from app.security.scope import TeamScoped
from app.times import UtcDateTime, utcnow


class Connection(TeamScoped, Model):
    """``config`` is shown to whoever may see the connection; the secret fields are one
    Fernet token of their JSON (``secrets.vault``: the secrets' key ring and rotation),
    never shown again."""

    __tablename__ = "apg_connection"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_apg_connection_team_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    type: Mapped[str] = mapped_column(String(63), nullable=False)
    description: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    # The secret fields' names, in clear (what reads back as "***"); their values are in
    # the ciphertext only.
    secret_fields: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    ciphertext: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    updated_by: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False)

    team: Mapped[Team] = relationship(lazy="joined")
