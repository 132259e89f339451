"""the permission epoch: permission checks answered per process until it moves

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 05:40:00

One row (id 1) whose value changes in the same transaction as any change of a role's
permissions; app.security.access keeps each process's answers under the value it read.
"""
import secrets

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table(
        'apg_permission_epoch',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('value', sa.BigInteger(), server_default='0', nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    # Random, as every later value (app.security.access.new_epoch).
    op.bulk_insert(table, [{'id': 1, 'value': secrets.randbits(62)}])


def downgrade():
    op.drop_table('apg_permission_epoch')
