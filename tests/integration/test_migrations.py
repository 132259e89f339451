"""The migrated schema is the models' schema; migrations run from empty."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.extensions import db


def test_migrated_schema_matches_models(app):
    with app.app_context():
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, db.metadata)
    assert diff == []


def test_upgrade_from_empty_then_downgrade(app, service_urls, tmp_path):
    """On a second, empty database: upgrade builds every table, downgrade removes them."""
    from flask_migrate import downgrade, upgrade

    from app import create_app
    from tests.support.app import make_config

    url = service_urls["database"]
    if url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        url = _fresh_postgres_database(url)
    fresh = create_app(make_config(service_urls, SQLALCHEMY_DATABASE_URI=url))
    with fresh.app_context():
        upgrade()
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {"apg_audit_event", "apg_audit_head", "apg_team", "apg_tenant", "ab_user"} <= tables
        head = db.session.execute(sa.text("SELECT seq, hash FROM apg_audit_head")).one()
        assert head == (0, "0" * 64)
        db.session.remove()
        downgrade(revision="base")
        assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
        db.engine.dispose()


def _fresh_postgres_database(url: str) -> str:
    from config import database_url

    parsed = sa.engine.make_url(database_url(url))
    name = f"{parsed.database}_fresh"
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return parsed.set(database=name).render_as_string(hide_password=False)
