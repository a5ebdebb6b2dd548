"""Fixtures for the mail catcher: a catcher on a free port, and the panel's people and data."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest
from flask import Flask

from smtpsite.catcher import Catcher
from tests.admin.conftest import alice, panel, password_hash, root, world  # noqa: F401
from tests.smtpd import HOST, free_port


@pytest.fixture
def start_catcher(any_app: Flask) -> Iterator:
    """Start catchers for ``any_app`` in a test: ``start_catcher(max_size=N)``."""
    started: list[Catcher] = []

    def start(**kwargs) -> Catcher:
        catcher = Catcher(any_app, port=free_port(), **kwargs).start()
        started.append(catcher)
        return catcher

    yield start
    for catcher in started:
        catcher.stop()


def client(catcher: Catcher) -> smtplib.SMTP:
    """An SMTP client connected to ``catcher`` (short timeout)."""
    return smtplib.SMTP(HOST, catcher.port, timeout=10)
