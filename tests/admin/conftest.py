"""Fixtures for the admin panel: an app served per request (no shared context), people, data."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.models import Site, SmtpServer, User
from smtpsite.servers import save_server
from smtpsite.sites import create_site
from tests.conftest import make_app

PASSWORD = "correct horse battery"
SERVER_SECRET = "Srv-Pa55word-never-shown"
GLOBAL_SECRET = "Glob-Pa55word-never-shown"
SITE_SECRET = "Site-Pa55word-never-shown"
_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|'
                    r'type="hidden" name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="session")
def password_hash() -> str:
    """A scrypt hash of PASSWORD with light parameters, so that sign-ins in tests are quick.

    The panel's own hashes use werkzeug's full-strength scrypt (see test_auth).
    """
    return generate_password_hash(PASSWORD, method="scrypt:1024:8:1")


@pytest.fixture
def panel(sqlite_template: Path, tmp_path: Path) -> Iterator[Flask]:
    """An app on its own SQLite copy with no app context left pushed.

    Each test-client request then gets its own context, as in production (a pushed
    context would share ``g``, and with it the signed-in user, between requests).
    """
    path = tmp_path / "smtpsite.db"
    shutil.copy(sqlite_template, path)
    application = make_app(f"sqlite:///{path}", tmp_path)
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@dataclass
class World:
    """Ids of the objects every permission test uses."""

    site_a: int
    site_b: int
    site_c: int
    global_server: int
    server_a: int
    server_b: int
    server_ab: int
    global_admin: str = "root@example.com"
    site_admin: str = "alice@example.com"


def add_user(email: str, password_hash: str, *, is_global: bool, sites=()) -> User:
    """A user with the shared test password."""
    user = User(email=email, password_hash=password_hash, is_global_admin=is_global,
                active=True, sites=list(sites))
    db.session.add(user)
    return user


@pytest.fixture
def world(panel: Flask, password_hash: str) -> World:
    """Sites A, B, C; a global admin; Alice managing A; servers global, A, B and A+B."""
    with panel.app_context():
        a = create_site("alpha", "Alpha shop", ["alpha.example.com"])
        b = create_site("bravo", "Bravo news", ["bravo.example.com"])
        c = create_site("charlie", "Charlie blog")
        db.session.flush()
        add_user("root@example.com", password_hash, is_global=True)
        add_user("alice@example.com", password_hash, is_global=False, sites=[a])
        options = {"security": "none", "username": "mailer", "password": SERVER_SECRET}
        glob = save_server(None, server_name="global-relay.example.net", method="network",
                           options=options, is_global=True)
        sa = save_server(None, server_name="alpha-relay.example.net:2525", method="network",
                         options=options, sites=[a])
        sb = save_server(None, server_name="bravo-relay.example.net", method="network",
                         options=options, sites=[b])
        sab = save_server(None, server_name="shared-relay.example.net", method="network",
                          options=options, sites=[a, b])
        settings.set_value("emails.smtp_password", GLOBAL_SECRET)
        settings.set_value("emails.smtp_server", "global-default.example.net")
        settings.set_value("emails.smtp_username", "globaluser")
        settings.set_value("emails.smtp_password", SITE_SECRET, b)
        settings.set_value("emails.smtp_server", "bravo-default.example.net", b)
        db.session.commit()
        return World(a.id, b.id, c.id, glob.id, sa.id, sb.id, sab.id)


def csrf_token(client: FlaskClient, url: str = "/admin/login/") -> str:
    """The CSRF token of the client's session, read from a form as a browser would."""
    page = client.get(url).get_data(as_text=True)
    match = _TOKEN.search(page)
    assert match, f"no CSRF token on {url}"
    return match.group(1) or match.group(2)


def sign_in(client: FlaskClient, email: str, password: str = PASSWORD):
    """Sign in through the form; return the response."""
    token = csrf_token(client)
    return client.post("/admin/login/", data={"email": email, "password": password,
                                              "csrf_token": token})


@pytest.fixture
def root(panel: Flask, world: World) -> FlaskClient:
    """A client signed in as the global administrator."""
    client = panel.test_client()
    assert sign_in(client, world.global_admin).status_code == 302
    return client


@pytest.fixture
def alice(panel: Flask, world: World) -> FlaskClient:
    """A client signed in as Alice, administrator of site A only."""
    client = panel.test_client()
    assert sign_in(client, world.site_admin).status_code == 302
    return client


def server_count(panel: Flask) -> int:
    """How many server records exist."""
    with panel.app_context():
        return db.session.query(SmtpServer).count()


def get_site(panel: Flask, site_id: int) -> Site | None:
    """A site read in a fresh context."""
    with panel.app_context():
        return db.session.get(Site, site_id)


def post(client: FlaskClient, url: str, data: dict, *, token_page: str = "/admin/account/"):
    """POST a form the way a browser does: with the session's CSRF token."""
    return client.post(url, data={**data, "csrf_token": csrf_token(client, token_page)})


def text(response) -> str:
    """The body of a response as text (streamed exports are read to the end)."""
    return response.get_data(as_text=True)
