"""Fixtures for the installed example plugin: an app that reads the real entry points."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from smtpsite.extensions import db
from tests.conftest import make_app


@pytest.fixture
def mail_root(tmp_path: Path) -> Path:
    """The pickup root the Maildirs of a test live under."""
    root = tmp_path / "mail-root"
    root.mkdir()
    return root


@pytest.fixture
def entry_point_app(sqlite_template: Path, tmp_path: Path, mail_root: Path) -> Iterator[Flask]:
    """An app on its own SQLite copy whose plugins come from the installed entry points.

    No app context is left pushed: test-client requests each get their own, as in production.
    """
    path = tmp_path / "smtpsite.db"
    shutil.copy(sqlite_template, path)
    application = make_app(f"sqlite:///{path}", tmp_path, SMTPSITE_PLUGINS=None,
                           SMTPSITE_PICKUP_ROOTS=str(mail_root))
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()
