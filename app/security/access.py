"""FAB's permission checks in fewer statements, with the same answers.

FAB checks every protected request against the Public role first (``is_item_public``:
the role, then its permissions, as ORM objects: two statements, twice a request), then
against the user's roles (one ``EXISTS`` per check: a page's menu makes about twenty).

Here the ``(permission, view)`` pairs of a set of roles are read in one statement and
kept **per process under the permission epoch**: a value (``apg_permission_epoch``)
replaced by a fresh random one in the same transaction as any change of roles,
permissions, views or their links, whichever path made it (FAB's forms and API,
``flask fab`` commands, the composition engine's own DML: ``install`` below sees ORM
flushes and DML statements).
Every request reads the epoch once (with its credentials' generation in
``app.security.revocation``, or alone when FAB asks about the Public role first), so a
grant or a revocation applies to the next request on every process, as when nothing was
kept. Issue 11, item 19: this took
two of the eight statements of a run's ``GET``.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

from flask import g, has_request_context
from flask_appbuilder.security.sqla.models import (
    Permission,
    PermissionView,
    Role,
    ViewMenu,
    assoc_permissionview_role,
)
from sqlalchemy import event, select, update
from sqlalchemy.orm import ORMExecuteState, Session, scoped_session

from app.models import PermissionEpoch

Pairs = frozenset[tuple[str, str]]

_PAIRS = (
    select(Permission.name, ViewMenu.name)
    .select_from(PermissionView)
    .join(assoc_permissionview_role,
          assoc_permissionview_role.c.permission_view_id == PermissionView.id)
    .join(Permission, Permission.id == PermissionView.permission_id)
    .join(ViewMenu, ViewMenu.id == PermissionView.view_menu_id)
)
_epoch = PermissionEpoch.__table__
# The epoch as a column, for the credentials statement to read with the generation.
EPOCH = select(_epoch.c.value).where(_epoch.c.id == 1).scalar_subquery()
_EPOCH_SEEN = "_apg_permission_epoch"
_WATCHED = (Role, Permission, ViewMenu, PermissionView)
_WATCHED_TABLES = frozenset({m.__table__.name for m in _WATCHED}
                            | {assoc_permissionview_role.name})
_BUMPED = "apg_permission_epoch_bumped"
MAX_ROLE_SETS = 512  # distinct role sets kept per process before starting over


class _Shared:
    """This process's pairs, valid while the epoch is the one they were read under."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.epoch: Any = None
        self.pairs: dict[Any, Pairs] = {}

    def get(self, epoch: Any, key: Any) -> Pairs | None:
        with self.lock:
            return self.pairs.get(key) if self.epoch == epoch else None

    def put(self, epoch: Any, key: Any, pairs: Pairs) -> None:
        with self.lock:
            if epoch != self.epoch or len(self.pairs) >= MAX_ROLE_SETS:
                self.epoch, self.pairs = epoch, {}
            self.pairs[key] = pairs


_shared = _Shared()


def new_epoch() -> int:
    """A fresh value, not the old one plus one: two databases (or one restored from a
    backup) never reach the same value with different permissions."""
    return secrets.randbits(62)


def observed(epoch: Any) -> None:
    """Record the epoch this request read with its credentials (None: no row, so
    nothing is kept across requests)."""
    if has_request_context():
        g.setdefault(_EPOCH_SEEN, None if epoch is None else int(epoch))


def epoch_seen() -> bool:
    """Whether this request has read the permission epoch yet."""
    return _EPOCH_SEEN in g


def _memo() -> dict[Any, Any] | None:
    """This request's answers (none outside a request: not kept)."""
    if not has_request_context():
        return None
    memo: dict[Any, Any] | None = g.get("_apg_access")
    if memo is None:
        memo = g._apg_access = {}
    return memo


def _pairs(session: Session, key: Any, read: Any) -> Pairs:
    memo = _memo()
    if memo is not None and key in memo:
        kept: Pairs = memo[key]
        return kept
    epoch = None
    if memo is not None:
        if _EPOCH_SEEN not in g:  # FAB checks the Public role before the credentials
            observed(session.execute(select(EPOCH)).scalar())
        if g.get(_EPOCH_SEEN) is not None:
            # Per database too: a process may talk to several (tests, a restore).
            epoch = (str(session.get_bind().engine.url), g.get(_EPOCH_SEEN))
    found = _shared.get(epoch, key) if epoch is not None else None
    if found is None:
        found = frozenset((p, v) for p, v in session.execute(read))
        if epoch is not None:
            _shared.put(epoch, key, found)
    if memo is not None:
        memo[key] = found
    return found


def public_pairs(session: Session, public_role: str) -> Pairs:
    """The ``(permission, view)`` pairs of the Public role."""
    return _pairs(session, ("public", public_role),
                  _PAIRS.join(Role, Role.id == assoc_permissionview_role.c.role_id)
                  .where(Role.name == public_role))


def roles_pairs(session: Session, role_ids: list[int]) -> Pairs:
    """The pairs of these roles together."""
    ids = tuple(sorted(set(role_ids)))
    return _pairs(session, ("roles", ids),
                  _PAIRS.where(assoc_permissionview_role.c.role_id.in_(ids)))


def _bump(session: Session) -> None:
    if session.info.get(_BUMPED):
        return
    session.info[_BUMPED] = True
    session.connection().execute(
        update(_epoch).where(_epoch.c.id == 1).values(value=new_epoch()))


def _after_flush(session: Session, _context: Any) -> None:
    for objects in (session.new, session.dirty, session.deleted):
        if any(isinstance(obj, _WATCHED) for obj in objects):
            _bump(session)
            return


def _on_execute(state: ORMExecuteState) -> None:
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) in _WATCHED_TABLES:
        _bump(state.session)


def _transaction_over(session: Session, *_args: Any) -> None:
    session.info.pop(_BUMPED, None)


def install(session: scoped_session[Any]) -> None:
    """Attach the hooks that raise the epoch to the application's session (idempotent)."""
    for name, fn in (("after_flush", _after_flush), ("do_orm_execute", _on_execute),
                     ("after_commit", _transaction_over),
                     ("after_rollback", _transaction_over)):
        if not event.contains(session, name, fn):
            event.listen(session, name, fn)
