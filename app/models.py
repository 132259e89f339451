"""Platform tables: tenants, teams and who is a member of which team.

Every row a capability scopes (workflows, runs, connections...) carries a ``team_id``;
the team carries its tenant. ``app.security.scope`` turns that into query filters.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from flask_appbuilder.models.sqla import Model
from flask_appbuilder.security.sqla.models import User
from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql import ColumnElement

from app.ids import new_id
from app.times import UtcDateTime, utcnow

if TYPE_CHECKING:
    from app.security.actor import Actor


class Tenant(Model):
    __tablename__ = "apg_tenant"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False
    )

    teams: Mapped[list[Team]] = relationship(back_populates="tenant")

    @classmethod
    def scope_clause(cls, actor: Actor) -> ColumnElement[bool] | None:
        if actor.is_admin:
            return None
        return cls.id.in_(sorted(actor.tenant_ids)) if actor.tenant_ids else false()

    def __repr__(self) -> str:
        return self.name


class Team(Model):
    __tablename__ = "apg_team"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_apg_team_tenant_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    tenant_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_tenant.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False
    )

    tenant: Mapped[Tenant] = relationship(back_populates="teams", lazy="joined")
    memberships: Mapped[list[TeamMembership]] = relationship(
        back_populates="team", cascade="all, delete-orphan", passive_deletes=True
    )

    @classmethod
    def scope_clause(cls, actor: Actor) -> ColumnElement[bool] | None:
        if actor.is_admin:
            return None
        return cls.id.in_(sorted(actor.team_ids)) if actor.team_ids else false()

    def __repr__(self) -> str:
        return f"{self.tenant.name}/{self.name}" if self.tenant else self.name


class TeamMembership(Model):
    __tablename__ = "apg_team_membership"
    __table_args__ = (UniqueConstraint("team_id", "user_id", name="uq_apg_team_member"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    team_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("apg_team.id", ondelete="CASCADE"), nullable=False, index=True
    )
    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False, index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False
    )

    team: Mapped[Team] = relationship(back_populates="memberships")
    user: Mapped[User] = relationship(User, lazy="joined")

    @classmethod
    def scope_clause(cls, actor: Actor) -> ColumnElement[bool] | None:
        if actor.is_admin:
            return None
        return cls.team_id.in_(sorted(actor.team_ids)) if actor.team_ids else false()

    def __repr__(self) -> str:
        return f"{self.user.username}@{self.team.name}" if self.user and self.team else self.id


class PermissionEpoch(Model):
    """One value, replaced in the same transaction as any change of a role's
    permissions (``app.security.access``): a process answers permission checks from
    what it read under the current value, and reads again once it has moved on."""

    __tablename__ = "apg_permission_epoch"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0,
                                       server_default="0")


class UserCredentials(Model):
    """A user's credentials generation: every session and JWT carries the generation it
    was issued under, and raising it revokes all of them at once, on every process
    (``app.security.revocation``). No row means generation 0."""

    __tablename__ = "apg_user_credentials"

    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("ab_user.id", ondelete="CASCADE"), primary_key=True
    )
    generation: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                            server_default="0")
    changed_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False
    )


class ApiKey(Model):
    """A key a user made for a machine or an AI agent (``app.security.api_keys``): it
    acts as its user, narrowed to its scopes and teams. Only a keyed hash of the secret
    is kept; ``prefix`` names the key in lists and in the audit trail."""

    __tablename__ = "apg_api_key"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False, unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    scopes: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    # Team ids; empty: every team of the user, as they are at each use.
    teams: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    allowed_ips: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=utcnow, server_default=func.now(), nullable=False
    )
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_used_ip: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    user: Mapped[User] = relationship(User)
