"""workflow secrets

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 08:00:00

A team's named secrets, read by its workflows as ``{{ secrets.<name> }}``; the value is
kept only as a Fernet token (capability/secrets.py).
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'apg_secret',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('ciphertext', sa.Text(), nullable=False),
        sa.Column('created_by', sa.String(length=256), nullable=False),
        sa.Column('updated_by', sa.String(length=256), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'),
                  nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'),
                  nullable=False),
        sa.Column('team_id', sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(['team_id'], ['apg_team.id'], ondelete='RESTRICT'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('team_id', 'name', name='uq_apg_secret_team_name'),
    )
    with op.batch_alter_table('apg_secret', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apg_secret_team_id'), ['team_id'], unique=False)


def downgrade():
    with op.batch_alter_table('apg_secret', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apg_secret_team_id'))
    op.drop_table('apg_secret')
