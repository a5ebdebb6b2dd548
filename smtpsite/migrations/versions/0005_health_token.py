"""health token: renewed whenever a server's cool-down changes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 10:00:00

Every send asks which servers of its chain are cooling down after a failure. Instead of a
query per send, each process caches the cool-downs it read under this token, and triggers
renew the token on every change of a cool-down, by any process or writer. It is a column of
its own (not the configuration token) so that a failing server does not also empty the
caches of server chains and settings.
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# SQLite triggers fire per row and per event; PostgreSQL's once per statement.
SQLITE_EVENTS = {"insert": "INSERT", "update": "UPDATE OF cooldown_until", "delete": "DELETE"}
# The configuration triggers of 0004 on SQLite replace the whole row, which would set the
# health token back to its default: they now change the configuration token alone.
CONFIG_TABLES = ("sites", "smtp_servers", "server_sites", "settings")


def _sqlite_config_triggers(renew: str) -> None:
    for table in CONFIG_TABLES:
        for event in ("INSERT", "UPDATE", "DELETE"):
            name = f"{table}_config_version_{event.lower()}"
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} BEGIN {renew}; END")


def upgrade():
    with op.batch_alter_table('config_version') as batch:
        batch.add_column(sa.Column('health_token', sa.BigInteger(), nullable=False,
                                   server_default='0'))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION smtpsite_renew_health_token() RETURNS trigger AS $$ BEGIN "
            "UPDATE config_version SET health_token = (random() * 9e18)::bigint WHERE id = 1; "
            "RETURN NULL; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER server_health_token AFTER INSERT OR DELETE OR TRUNCATE OR "
            "UPDATE OF cooldown_until ON server_health FOR EACH STATEMENT "
            "EXECUTE FUNCTION smtpsite_renew_health_token()"
        )
    else:
        _sqlite_config_triggers(
            "INSERT INTO config_version (id, token) VALUES (1, random()) "
            "ON CONFLICT (id) DO UPDATE SET token = excluded.token"
        )
        for name, event in SQLITE_EVENTS.items():
            op.execute(
                f"CREATE TRIGGER server_health_token_{name} AFTER {event} ON server_health "
                "BEGIN UPDATE config_version SET health_token = random() WHERE id = 1; END"
            )


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS server_health_token ON server_health")
        op.execute("DROP FUNCTION IF EXISTS smtpsite_renew_health_token()")
    else:
        for name in SQLITE_EVENTS:
            op.execute(f"DROP TRIGGER IF EXISTS server_health_token_{name}")
        _sqlite_config_triggers(
            "INSERT OR REPLACE INTO config_version (id, token) VALUES (1, random())"
        )
    with op.batch_alter_table('config_version') as batch:
        batch.drop_column('health_token')
