"""config version: a token that every change to sites, servers or settings renews

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 10:00:00

Caches of server chains and settings (smtpsite.chain_cache) are filled under the token and
read again as soon as it differs. Triggers renew it, so every writer (the panel, the CLI,
another process, plain SQL) is seen. A random token rather than a counter: a rolled-back
change brings the old token back, and a later change must never reuse the token of the
rolled-back one.
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

TABLES = ("sites", "smtp_servers", "server_sites", "settings")


def upgrade():
    op.create_table('config_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION smtpsite_renew_config_version() RETURNS trigger AS $$ BEGIN "
            "INSERT INTO config_version (id, token) VALUES (1, (random() * 9e18)::bigint) "
            "ON CONFLICT (id) DO UPDATE SET token = EXCLUDED.token; RETURN NULL; END $$ "
            "LANGUAGE plpgsql"
        )
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_config_version AFTER INSERT OR UPDATE OR DELETE OR "
                f"TRUNCATE ON {table} FOR EACH STATEMENT "
                "EXECUTE FUNCTION smtpsite_renew_config_version()"
            )
        op.execute("INSERT INTO config_version (id, token) VALUES (1, (random() * 9e18)::bigint)")
    else:
        for table in TABLES:
            for event in ("INSERT", "UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_config_version_{event.lower()} AFTER {event} ON "
                    f"{table} BEGIN INSERT OR REPLACE INTO config_version (id, token) "
                    "VALUES (1, random()); END"
                )
        op.execute("INSERT INTO config_version (id, token) VALUES (1, random())")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_config_version ON {table}")
        op.execute("DROP FUNCTION IF EXISTS smtpsite_renew_config_version()")
    else:
        for table in TABLES:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_config_version_{event}")
    op.drop_table('config_version')
