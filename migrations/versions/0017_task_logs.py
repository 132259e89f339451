"""task logs: the lines an attempt's connector or python callable wrote, kept with it

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 12:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('apg_task_attempt', schema=None) as batch_op:
        batch_op.add_column(sa.Column('log', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('log_truncated', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('apg_task_attempt', schema=None) as batch_op:
        batch_op.drop_column('log_truncated')
        batch_op.drop_column('log')
