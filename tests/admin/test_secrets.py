"""No admin page, list, export, details or error ever contains a stored or typed secret."""

from __future__ import annotations

import logging

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.models import Site, SmtpServer, User
from tests.admin.conftest import (
    GLOBAL_SECRET,
    SERVER_SECRET,
    SITE_SECRET,
    csrf_token,
    text,
)
from tests.admin.test_servers import network_form

SECRETS = (SERVER_SECRET, GLOBAL_SECRET, SITE_SECRET, "Typed-Secret-On-Error-1")


def every_page(panel) -> list[str]:
    """Every GET page of the panel, for every object."""
    with panel.app_context():
        servers = [s.id for s in db.session.query(SmtpServer)]
        sites = [s.id for s in db.session.query(Site)]
        users = [u.id for u in db.session.query(User)]
    pages = ["/admin/", "/admin/account/", "/admin/site/", "/admin/site/new/", "/admin/server/",
             "/admin/server/new/", "/admin/server/new/?method=network", "/admin/settings/",
             "/admin/routing/", "/admin/testmail/", "/admin/user/", "/admin/user/new/",
             "/admin/site/export/csv/", "/admin/server/export/csv/", "/admin/user/export/csv/",
             "/admin/server/?search=relay"]
    for i in servers:
        pages += [f"/admin/server/{v}/?id={i}" for v in ("edit", "details", "test")]
    for i in sites:
        pages += [f"/admin/site/edit/?id={i}", f"/admin/site/details/?id={i}",
                  f"/admin/settings/?site={i}", f"/admin/routing/?site={i}",
                  f"/admin/testmail/?site={i}"]
    for i in users:
        pages += [f"/admin/user/edit/?id={i}", f"/admin/user/details/?id={i}"]
    return pages


def test_no_page_contains_a_secret(panel, root, alice, world, caplog):
    caplog.set_level(logging.DEBUG)
    with panel.app_context():  # the secrets really are stored (and readable)
        assert settings.get("emails.smtp_password", world.site_b).reveal() == SITE_SECRET
    token = csrf_token(root, "/admin/account/")
    typed = "Typed-Secret-On-Error-1"
    # Forms re-shown after an error must not echo a password typed into them.
    error_pages = [
        root.post("/admin/server/new/?method=network", data={
            **network_form("bad host!", **{"options-username": "u",
                                           "options-password": typed}), "csrf_token": token}),
        root.post("/admin/settings/", data={"csrf_token": token, "emails__smtp_password": typed,
                                            "emails__batch_size": "x"}),
        root.post("/admin/testmail/", data={"csrf_token": token, "server": "bad host!",
                                            "password": typed, "sender": "x", "to": "y",
                                            "subject": "s"}),
        root.post("/admin/user/new/", data={"csrf_token": token, "email": "bad",
                                            "password": typed}),
        root.post(f"/admin/server/test/?id={world.server_a}", data={
            "csrf_token": token, "sender": "a@example.com", "recipient": "b@example.com"}),
    ]
    checked = 0
    for client in (root, alice):
        for url in every_page(panel):
            response = client.get(url)
            body = text(response)
            checked += response.status_code == 200
            for secret in SECRETS:
                assert secret not in body, (url, secret)
    for response in error_pages:
        body = text(response)
        assert response.status_code == 200
        for secret in SECRETS:
            assert secret not in body
    assert checked > 60
    for secret in SECRETS:
        assert secret not in caplog.text
