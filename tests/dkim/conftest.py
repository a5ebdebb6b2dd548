"""Fixtures for the DKIM tests: an app with the network and pickup plugins, keys, a DNS stub."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from plugins.network import NetworkDelivery
from plugins.pickup import PickupDelivery
from smtpsite import dkim
from smtpsite.extensions import db
from smtpsite.sites import create_site
from tests.conftest import make_app


@pytest.fixture
def app(sqlite_template: Path, tmp_path: Path) -> Iterator[Flask]:
    """As the shared ``app``, with the pickup plugin too and an allowed pickup root."""
    path = tmp_path / "smtpsite.db"
    shutil.copy(sqlite_template, path)
    (tmp_path / "pickup").mkdir()
    application = make_app(
        f"sqlite:///{path}", tmp_path, SMTPSITE_PLUGINS=[NetworkDelivery, PickupDelivery]
    )
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


def dns_for(*records: dkim.DnsRecord) -> Callable[..., bytes | None]:
    """A dkimpy ``dnsfunc`` that answers with the given TXT records and nothing else."""
    table = {f"{r.name}.".encode(): r.value.encode() for r in records}

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return table.get(name)

    return lookup


@pytest.fixture
def shop(app):
    """A site with a fresh DKIM key; gives (site, record)."""
    site = create_site("shop", "Shop", ["shop.example.com"])
    db.session.commit()
    record = dkim.generate_for_site(site, "s2025")
    return site, record
