"""connections: a team's saved connections to outside systems, secret fields encrypted

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 10:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'apg_connection',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('type', sa.String(length=63), nullable=False),
        sa.Column('description', sa.String(length=1024), nullable=False),
        sa.Column('config', sa.JSON(), nullable=False),
        sa.Column('secret_fields', sa.JSON(), nullable=False),
        sa.Column('ciphertext', sa.Text(), nullable=True),
        sa.Column('created_by', sa.String(length=256), nullable=False),
        sa.Column('updated_by', sa.String(length=256), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('team_id', sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(['team_id'], ['apg_team.id'], ondelete='RESTRICT'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('team_id', 'name', name='uq_apg_connection_team_name'),
    )
    with op.batch_alter_table('apg_connection', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apg_connection_team_id'), ['team_id'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('apg_connection', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apg_connection_team_id'))
    op.drop_table('apg_connection')
