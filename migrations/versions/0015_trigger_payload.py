"""runs keep what their trigger carried (a webhook's body, an event's payload)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 06:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('apg_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trigger_payload', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('apg_run', schema=None) as batch_op:
        batch_op.drop_column('trigger_payload')
