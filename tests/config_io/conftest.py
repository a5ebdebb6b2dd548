"""Fixtures for configuration export/import: a populated app, a second empty app, table dumps."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import text

from smtpsite import dkim, settings
from smtpsite.extensions import db
from smtpsite.servers import save_server
from smtpsite.sites import create_site
from tests.conftest import make_app

# Plain-text secrets of the populated configuration; none may appear in an export.
SECRETS = {
    "global_password": "gl0bal-Pass-7f3a",
    "shop_password": "sh0p-Pass-91c2",
    "relay_password": "re1ay-Pass-0d9e",
    "relay2_password": "re1ay-Two-55aa",
}
TABLES = ("sites", "smtp_servers", "server_sites", "settings")


@pytest.fixture
def second_app(sqlite_template: Path, tmp_path: Path) -> Iterator[Flask]:
    """Another app on its own empty, migrated SQLite file (not pushed: use its app_context)."""
    folder = tmp_path / "second"
    folder.mkdir()
    shutil.copy(sqlite_template, folder / "smtpsite.db")
    application = make_app(f"sqlite:///{folder / 'smtpsite.db'}", folder)
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def populated(app) -> dict[str, str]:
    """``populate()`` on the SQLite ``app``."""
    return populate()


def populate() -> dict[str, str]:
    """Sites, servers and settings of every kind, secrets included; returns the DKIM PEM too."""
    shop = create_site("Shop", "The Shop", ["shop.example.com", "münchen.example"])
    blog = create_site("blog", "Blog")
    create_site("empty", "Nothing set")
    db.session.flush()
    settings.set_value("emails.queue_enabled", False)
    settings.set_value("emails.batch_size", 20)
    settings.set_value("emails.smtp_server", "mail.example.com:2525")
    settings.set_value("emails.smtp_username", "global-user")
    settings.set_value("emails.smtp_password", SECRETS["global_password"])
    settings.set_value("emails.format", "both", shop)
    settings.set_value("emails.default_sender", "no-reply@shop.example.com", shop)
    settings.set_value("emails.smtp_password", SECRETS["shop_password"], shop)
    key = dkim.generate_private_key()
    settings.set_value("emails.dkim_domain", "shop.example.com", shop)
    settings.set_value("emails.dkim_selector", "s1", shop)
    settings.set_value("emails.dkim_private_key", key, shop)
    settings.set_value("emails.enabled", False, blog)
    save_server(None, server_name="relay.example.com:587", method="network", is_global=True,
                priority="high", max_connections=3, rate_limit=100, display_name="Main relay",
                sender_filter="@shop.example.com\nalerts@example.com",
                options={"security": "starttls", "username": "relay",
                         "password": SECRETS["relay_password"], "timeout": 12.5})
    save_server(None, server_name="relay.example.com:587", method="network", is_global=True,
                priority="low", options={"security": "ssl", "username": "second",
                                         "password": SECRETS["relay2_password"]})
    save_server(None, server_name="[::1]:25", method="network", sites=[shop, blog],
                enabled=False, options={"security": "none", "verify_certificate": False})
    save_server(None, server_name="localhost", method="network", sites=[blog],
                options={"security": "none"})
    db.session.commit()
    return {"dkim_key": key.reveal()}


def empty_tables() -> None:
    """Delete every site, server and setting (the queue is empty in these tests)."""
    with db.engine.begin() as conn:
        for table in ("server_sites", "smtp_servers", "settings", "sites"):
            conn.execute(text(f"DELETE FROM {table}"))


def dump_tables() -> dict[str, list[tuple]]:
    """Every row of the configuration tables, as stored (tokens and timestamps included)."""
    with db.engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT * FROM {t} ORDER BY 1, 2")).all() for t in TABLES}
