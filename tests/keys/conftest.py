"""Fixtures for the key tests: apps started with chosen keys on one database."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from flask import Flask

from smtpsite.extensions import db
from tests.conftest import make_app

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
KEY_C = Fernet.generate_key().decode()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    """An empty migrated database (SQLite copy, or the PostgreSQL test database, emptied after)."""
    if request.param == "sqlite":
        path = tmp_path / "keys.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    from tests.conftest import _truncate_all

    app = make_app(url, tmp_path)
    _truncate_all(app)
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def started(database_url: str, tmp_path: Path) -> Callable:
    """``with started(keys) as app:`` starts an app on the database with ``keys``, as at start-up."""

    @contextmanager
    def start(keys: str) -> Iterator[Flask]:
        app = make_app(database_url, tmp_path, SMTPSITE_SECRET_KEYS=keys)
        with app.app_context():
            try:
                yield app
            finally:
                db.session.remove()
                db.engine.dispose()

    return start
