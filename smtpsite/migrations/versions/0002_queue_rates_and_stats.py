"""queue: shared per-server rate limits and per-minute send counts

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('server_rates',
    sa.Column('server_key', sa.String(length=100), nullable=False),
    sa.Column('next_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('server_key')
    )
    op.create_table('server_stats',
    sa.Column('server_key', sa.String(length=100), nullable=False),
    sa.Column('minute', sa.DateTime(), nullable=False),
    sa.Column('server_name', sa.String(length=300), nullable=False),
    sa.Column('sent', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('server_key', 'minute')
    )


def downgrade():
    op.drop_table('server_stats')
    op.drop_table('server_rates')
