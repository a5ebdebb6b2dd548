"""Fixtures for the performance mechanisms: a site with one network server, sent at once."""

from __future__ import annotations

import pytest

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.pool import pool
from smtpsite.servers import save_server
from smtpsite.sites import create_site


@pytest.fixture
def at_once(app):
    """Emails are sent at once (no queue) through the pool, emptied after the test."""
    app.config["SMTPSITE_POOL_IDLE_SECONDS"] = 10.0
    settings.set_value("emails.queue_enabled", False)
    db.session.commit()
    yield app
    pool().close_all()


def add_network_server(server, site_code: str = "shop", **kwargs):
    """Site ``site_code`` (created if needed) with a plain network server for ``server``."""
    from smtpsite.sites import find_site

    site = find_site(site_code) or create_site(site_code, site_code.title())
    saved = save_server(None, server_name=server.server_name, method="network",
                        options={"security": "none", "timeout": 5}, sites=[site], **kwargs)
    db.session.commit()
    return saved
