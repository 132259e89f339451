"""indexes for the per-team quotas on run starts

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 03:10:00

TEAM_MAX_ACTIVE_RUNS counts a team's unfinished runs and TEAM_RUN_RATE its starts of
the last minute at every start: two index probes instead of a read of every run the
team ever had.
"""
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('apg_run', schema=None) as batch_op:
        batch_op.create_index('ix_apg_run_team_status', ['team_id', 'status'], unique=False)
        batch_op.create_index('ix_apg_run_team_created', ['team_id', 'created_at'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('apg_run', schema=None) as batch_op:
        batch_op.drop_index('ix_apg_run_team_created')
        batch_op.drop_index('ix_apg_run_team_status')
