"""A migrated smtpsite app for benchmarks, on SQLite or PostgreSQL."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path

from cryptography.fernet import Fernet
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import create_engine, make_url, text

from smtpsite import MIGRATIONS_DIR, create_app
from smtpsite.extensions import db
from smtpsite.pool import pool


def make_bench_app(database_url: str, folder: Path) -> Flask:
    """An app with the built-in plugins, migrated."""
    app = create_app({
        "SMTPSITE_DATABASE_URL": database_url,
        "SMTPSITE_SECRET_KEYS": Fernet.generate_key().decode(),
        "SMTPSITE_PICKUP_ROOTS": str(folder),
    })
    with app.app_context():
        upgrade(directory=MIGRATIONS_DIR)
    return app


@contextmanager
def sqlite_app(folder: Path):
    """An app on a fresh SQLite file under ``folder``."""
    app = make_bench_app(f"sqlite:///{folder / f'bench-{uuid.uuid4().hex[:8]}.db'}", folder)
    try:
        yield app
    finally:
        with app.app_context():
            pool().close_all()
            db.engine.dispose()


@contextmanager
def postgres_app(base_url: str, folder: Path):
    """An app on a PostgreSQL database of its own, dropped afterwards."""
    url = make_url(base_url)
    name = f"smtpsite_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    app = make_bench_app(url.set(database=name).render_as_string(hide_password=False), folder)
    try:
        yield app
    finally:
        with app.app_context():
            pool().close_all()
            db.engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
