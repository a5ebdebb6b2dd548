"""Fixtures: apps on a real SQLite file or a real PostgreSQL database, and real SMTP servers."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import create_engine, make_url, text

from plugins.network import NetworkDelivery
from plugins.pickup import PickupDelivery
from plugins.sendmail import SendmailDelivery
from smtpsite import MIGRATIONS_DIR, create_app
from smtpsite.extensions import db
from tests.smtpd import Certificate, SilentServer, TestServer, make_certificate

BUILTIN_PLUGINS = [NetworkDelivery, PickupDelivery, SendmailDelivery]
PG_ENV = "SMTPSITE_TEST_DATABASE_URL"


def make_app(database_url: str, tmp_path: Path, **overrides) -> Flask:
    """An app for tests: explicit plugins, a fresh key, short waits."""
    config = {
        "TESTING": True,
        "SMTPSITE_DATABASE_URL": database_url,
        "SMTPSITE_SECRET_KEYS": Fernet.generate_key().decode(),
        "SMTPSITE_PICKUP_ROOTS": str(tmp_path / "pickup"),
        "SMTPSITE_PLUGINS": BUILTIN_PLUGINS,
        "SMTPSITE_BUSY_WAIT": 2.0,
        "SMTPSITE_SEND_TIMEOUT": 20.0,
    }
    config.update(overrides)
    return create_app(config)


def _migrate(app: Flask) -> None:
    from flask_migrate import upgrade

    with app.app_context():
        upgrade(directory=MIGRATIONS_DIR)
        db.engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A SQLite file migrated once; each test gets a copy."""
    folder = tmp_path_factory.mktemp("template")
    path = folder / "template.db"
    _migrate(make_app(f"sqlite:///{path}", folder))
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this test run's own, migrated once, dropped at the end."""
    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} must be set on CI: the PostgreSQL tests may not be skipped")
        pytest.skip(f"{PG_ENV} is not set")
    base_url = make_url(base)
    name = f"smtpsite_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base_url.set(database=name).render_as_string(hide_password=False)
    _migrate(make_app(url, Path("/nonexistent")))
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_all(app: Flask) -> None:
    with app.app_context():
        tables = ", ".join(t.name for t in db.metadata.sorted_tables)
        with db.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def app(sqlite_template: Path, tmp_path: Path) -> Iterator[Flask]:
    """An app on its own migrated SQLite file, inside an app context."""
    path = tmp_path / "smtpsite.db"
    shutil.copy(sqlite_template, path)
    application = make_app(f"sqlite:///{path}", tmp_path)
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def pg_app(postgres_url: str, tmp_path: Path) -> Iterator[Flask]:
    """An app on the PostgreSQL test database, emptied after the test."""
    application = make_app(postgres_url, tmp_path)
    with application.app_context():
        yield application
        db.session.remove()
    _truncate_all(application)
    with application.app_context():
        db.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_app(request) -> Flask:
    """The same test on SQLite and on PostgreSQL."""
    return request.getfixturevalue("app" if request.param == "sqlite" else "pg_app")


@pytest.fixture
def runner(app: Flask):
    """A CLI runner for ``app``."""
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made once."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp_server() -> Iterator[TestServer]:
    """A plain SMTP server that accepts everything."""
    server = TestServer().start()
    yield server
    server.stop()


@pytest.fixture
def start_server(certificate: Certificate) -> Iterator:
    """Start extra servers in a test: ``start_server(tls="ssl", users={...}, behaviour=...)``."""
    started: list = []

    def start(**kwargs) -> TestServer:
        if kwargs.get("tls", "none") != "none":
            kwargs.setdefault("certificate", certificate)
        server = TestServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    """A server that accepts connections and never answers."""
    server = SilentServer()
    yield server
    server.stop()


CHROMIUM = "/usr/bin/chromium"


# One Chromium for the whole run: playwright's sync API allows a single instance at a time,
# so every browser test (panel, catcher, security headers) shares this fixture.
@pytest.fixture(scope="session")
def browser() -> Iterator:
    """Debian's Chromium, headless; playwright never downloads a browser here."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"])
        yield chromium
        chromium.close()
