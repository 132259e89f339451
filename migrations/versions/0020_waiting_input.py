"""the partial index of unfinished tasks names waiting_input (agent steps)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-08 10:00:00

A query uses the partial index ``ix_apg_task_run_open`` only when it names the same
list of statuses (``capability.models.OPEN_TASKS``): the new status of an agent step
waiting for its output joins the list, so the index is made again with it.
"""
from alembic import op
import sqlalchemy as sa


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

# The statuses as they are when this revision was written (a migration never follows
# later code), in the order of ``UNFINISHED_TASK_STATUSES``.
BEFORE = "status IN ('pending', 'queued', 'retrying', 'running', 'waiting_approval')"
AFTER = ("status IN ('pending', 'queued', 'retrying', 'running', 'waiting_approval', "
         "'waiting_input')")


def _index(where: str) -> None:
    with op.batch_alter_table('apg_task_run', schema=None) as batch_op:
        batch_op.drop_index('ix_apg_task_run_open')
        batch_op.create_index('ix_apg_task_run_open', ['run_id', 'kind', 'task_id'],
                              unique=False, postgresql_where=sa.text(where),
                              sqlite_where=sa.text(where))


def upgrade():
    _index(AFTER)


def downgrade():
    _index(BEFORE)
