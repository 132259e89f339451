"""index of the unfinished tasks of each run

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 14:00:00

A partial index: whether a join still waits for one of its upstreams is one probe of
it, instead of a read of every upstream row (a 1,000-task fan-out read ~500 rows per
completion).
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# The statuses as they were when this revision was written (a migration never follows
# later code).
OPEN_TASKS = "status IN ('pending', 'queued', 'retrying', 'running', 'waiting_approval')"


def upgrade():
    with op.batch_alter_table('apg_task_run', schema=None) as batch_op:
        batch_op.create_index('ix_apg_task_run_open', ['run_id', 'kind', 'task_id'],
                              unique=False, postgresql_where=sa.text(OPEN_TASKS),
                              sqlite_where=sa.text(OPEN_TASKS))


def downgrade():
    with op.batch_alter_table('apg_task_run', schema=None) as batch_op:
        batch_op.drop_index('ix_apg_task_run_open')
