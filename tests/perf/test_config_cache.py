"""The settings and chain caches: a change by anyone is seen by the next lookup."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import event, text

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.routing import chain_for
from smtpsite.servers import save_server
from smtpsite.sites import create_site


def _site_with_servers():
    site = create_site("shop", "Shop")
    first = save_server(None, server_name="one.example.com", method="network",
                        options={"security": "none"}, sites=[site])
    second = save_server(None, server_name="two.example.com", method="network",
                         options={"security": "none"}, sites=[site])
    db.session.commit()
    return site, first, second


def _other_process(database: str, sql: str) -> None:
    """Run ``sql`` from another process, straight through sqlite3 (no smtpsite code)."""
    code = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); "
            "c.commit()")
    subprocess.run([sys.executable, "-c", code, database, sql], check=True, timeout=30)


def test_a_server_disabled_by_another_process_leaves_the_next_chain(app):
    site, first, second = _site_with_servers()
    assert [e.name for e in chain_for(site)] == ["one.example.com", "two.example.com"]
    _other_process(db.engine.url.database, f"UPDATE smtp_servers SET enabled = 0 WHERE id = {first.id}")
    assert [e.name for e in chain_for(site)] == ["two.example.com"]


def test_a_server_assigned_by_another_process_joins_the_next_chain(app):
    site, first, _ = _site_with_servers()
    chain_for(site)
    other = create_site("other", "Other")
    third = save_server(None, server_name="three.example.com", method="network",
                        options={"security": "none"}, sites=[other])
    db.session.commit()
    chain_for(site)
    _other_process(db.engine.url.database,
                   f"INSERT INTO server_sites (server_id, site_id) VALUES ({third.id}, {site.id})")
    assert "three.example.com" in [e.name for e in chain_for(site)]


def test_a_setting_changed_by_another_process_is_read_next(app):
    assert settings.get("emails.server_cooldown") == 60
    _other_process(db.engine.url.database,
                   "INSERT INTO settings (key, site_id, value, updated_at) VALUES "
                   "('emails.server_cooldown', NULL, '5', CURRENT_TIMESTAMP)")
    assert settings.get("emails.server_cooldown") == 5


def test_a_change_in_this_session_counts_before_commit_and_a_rollback_undoes_it(app):
    assert settings.get("emails.batch_size") == 100
    settings.set_value("emails.batch_size", 7)
    assert settings.get("emails.batch_size") == 7
    db.session.rollback()
    assert settings.get("emails.batch_size") == 100
    # A later committed change is not mistaken for the rolled-back one.
    settings.set_value("emails.batch_size", 9)
    db.session.commit()
    assert settings.get("emails.batch_size") == 9


def test_the_sender_filter_still_applies_per_sender(app):
    site = create_site("shop", "Shop")
    save_server(None, server_name="billing.example.com", method="network",
                options={"security": "none"}, sites=[site], sender_filter="billing@example.com")
    save_server(None, server_name="any.example.com", method="network",
                options={"security": "none"}, sites=[site])
    db.session.commit()
    assert [e.name for e in chain_for(site, "billing@example.com")] == [
        "billing.example.com", "any.example.com"]
    assert [e.name for e in chain_for(site, "news@example.com")] == ["any.example.com"]


def test_every_config_table_renews_the_token(app):
    database = db.engine.url.database

    def token() -> int:
        return sqlite3.connect(database).execute("SELECT token FROM config_version").fetchone()[0]

    site, first, _ = _site_with_servers()
    for sql in (f"UPDATE sites SET display_name = 'X' WHERE id = {site.id}",
                f"UPDATE smtp_servers SET priority = 'low' WHERE id = {first.id}",
                f"DELETE FROM server_sites WHERE server_id = {first.id}",
                "INSERT INTO settings (key, site_id, value, updated_at) "
                "VALUES ('emails.batch_size', NULL, '3', CURRENT_TIMESTAMP)"):
        before = token()
        db.session.execute(text(sql))
        db.session.commit()
        assert token() != before, sql


def test_the_postgresql_triggers_renew_the_token(pg_app):
    site, first, _ = _site_with_servers()
    assert [e.name for e in chain_for(site)] == ["one.example.com", "two.example.com"]
    with db.engine.begin() as conn:  # another connection, as another process would
        conn.execute(text(f"UPDATE smtp_servers SET enabled = false WHERE id = {first.id}"))
    assert [e.name for e in chain_for(site)] == ["two.example.com"]


# -- cool-downs: cached per process under the health token (migration 0005) ---------------

@contextmanager
def _statements():
    """The statements run through SQLAlchemy inside the block (the token read is not one)."""
    seen: list[str] = []

    def count(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def test_a_cooldown_recorded_by_another_process_is_seen_by_the_next_check(app):
    from smtpsite.availability import cooling_down

    database = db.engine.url.database
    assert cooling_down({"a", "b"}) == set()
    with _statements() as seen:
        assert cooling_down({"a", "b"}) == set()
    assert seen == []  # served from the cache
    _other_process(database, "INSERT INTO server_health (server_key, cooldown_until) "
                             "VALUES ('a', '2999-01-01 00:00:00')")
    assert cooling_down({"a", "b"}) == {"a"}
    _other_process(database, "UPDATE server_health SET cooldown_until = '2000-01-01 00:00:00'")
    assert cooling_down({"a", "b"}) == set()
    _other_process(database, "UPDATE server_health SET cooldown_until = '2999-01-01 00:00:00'")
    assert cooling_down({"a", "b"}) == {"a"}
    _other_process(database, "DELETE FROM server_health")
    assert cooling_down({"a", "b"}) == set()


def test_a_cooldown_ends_with_the_clock_without_a_change(app):
    from smtpsite.availability import cooling_down, record_failure

    record_failure("a", "421 try later", cooldown_seconds=0.3)
    assert cooling_down({"a"}) == {"a"}
    time.sleep(0.4)
    assert cooling_down({"a"}) == set()
    record_failure("a", "421 again", cooldown_seconds=timedelta(minutes=5).total_seconds())
    assert cooling_down({"a"}) == {"a"}


def test_the_two_tokens_change_independently(app):
    from smtpsite.availability import record_failure

    database = db.engine.url.database

    def tokens() -> tuple[int, int]:
        return sqlite3.connect(database).execute(
            "SELECT token, health_token FROM config_version").fetchone()

    config, health = tokens()
    record_failure("a", "421 try later", cooldown_seconds=60)
    after_failure = tokens()
    assert after_failure[0] == config and after_failure[1] != health
    create_site("shop", "Shop")
    db.session.commit()
    after_change = tokens()
    # A configuration change keeps the health token (it must never go back to a value
    # a process may have cached cool-downs under).
    assert after_change[0] != config and after_change[1] == after_failure[1]
    # A check that leaves the cool-down alone renews nothing.
    db.session.execute(text("UPDATE server_health SET last_check_ok = 1"))
    db.session.commit()
    assert tokens() == after_change


def test_the_postgresql_triggers_renew_the_health_token(pg_app):
    from smtpsite.availability import cooling_down, record_failure

    assert cooling_down({"a", "b"}) == set()
    with db.engine.begin() as conn:  # another connection, as another process would
        conn.execute(text("INSERT INTO server_health (server_key, cooldown_until) "
                          "VALUES ('b', '2999-01-01')"))
    assert cooling_down({"a", "b"}) == {"b"}
    record_failure("a", "421 try later", cooldown_seconds=60)
    assert cooling_down({"a", "b"}) == {"a", "b"}
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE server_health SET cooldown_until = NULL"))
    assert cooling_down({"a", "b"}) == set()
