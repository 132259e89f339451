"""credentials generation per user (revocation)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 03:00:00

``apg_user_credentials.generation``: sessions and JWTs carry the generation they were
issued under; a password, role or activity change and a logout raise it, which revokes
every session and token of that user (app/security/revocation.py). No row: generation 0.
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'apg_user_credentials',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('generation', sa.Integer(), server_default='0', nullable=False),
        sa.Column('changed_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'),
                  nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['ab_user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id'),
    )


def downgrade():
    op.drop_table('apg_user_credentials')
