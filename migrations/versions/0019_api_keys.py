"""api keys: keys that act as their user, narrowed; audit events say what acted (via)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 15:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'apg_api_key',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('prefix', sa.String(length=16), nullable=False),
        sa.Column('secret_hash', sa.String(length=64), nullable=False),
        sa.Column('scopes', sa.JSON(), nullable=False),
        sa.Column('teams', sa.JSON(), nullable=False),
        sa.Column('allowed_ips', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_used_ip', sa.String(length=64), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['ab_user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('prefix'),
    )
    op.create_index('ix_apg_api_key_user_id', 'apg_api_key', ['user_id'])
    with op.batch_alter_table('apg_audit_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('via', sa.String(length=128), nullable=True))


def downgrade():
    with op.batch_alter_table('apg_audit_event', schema=None) as batch_op:
        batch_op.drop_column('via')
    op.drop_index('ix_apg_api_key_user_id', table_name='apg_api_key')
    op.drop_table('apg_api_key')
