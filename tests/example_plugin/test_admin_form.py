"""The admin panel builds its server form from the installed example plugin's fields."""

from __future__ import annotations

import re

import pytest
from werkzeug.security import generate_password_hash

from smtpsite.extensions import db
from smtpsite.models import SmtpServer, User
from tests.admin.conftest import PASSWORD, post, sign_in, text

NEW = "/admin/server/new/?method=maildir"


@pytest.fixture
def root(entry_point_app):
    """A client signed in as a global administrator."""
    with entry_point_app.app_context():
        db.session.add(User(email="root@example.com", is_global_admin=True, active=True,
                            password_hash=generate_password_hash(PASSWORD, method="scrypt:1024:8:1")))
        db.session.commit()
    client = entry_point_app.test_client()
    assert sign_in(client, "root@example.com").status_code == 302
    return client


def form(**options) -> dict[str, str]:
    data = {"method": "maildir", "server_name": "mail-archive", "priority": "normal",
            "enabled": "y", "scope": "all", "max_connections": "1"}
    data.update({f"options-{k}": v for k, v in options.items()})
    return data


def test_the_method_choice_offers_it(root):
    page = text(root.get("/admin/server/new/"))
    assert 'id="method-maildir"' in page and 'value="maildir"' in page
    assert "<strong>Maildir</strong> <code>maildir</code>" in page


def test_the_create_form_shows_the_plugins_fields(root):
    page = text(root.get(NEW))
    assert "Delivery method: <strong>Maildir</strong> <code>maildir</code>" in page
    assert "Write each message into a Maildir folder" in page  # the plugin's description
    assert re.search(r'<input[^>]*name="options-path"[^>]*type="text"|'
                     r'<input[^>]*type="text"[^>]*name="options-path"', page)
    assert re.search(r'<input[^>]*type="checkbox"[^>]*name="options-create"|'
                     r'<input[^>]*name="options-create"[^>]*type="checkbox"', page)
    assert 'name="options-folder"' in page
    for label in ("Maildir path (required)", "Create if missing", "Folder"):
        assert label in page
    assert "under one of SMTPSITE_PICKUP_ROOTS" in page and "e.g. Archive or Lists.smtpsite" in page


def test_the_form_saves_a_server_and_shows_the_plugins_errors(root, entry_point_app, mail_root):
    missing = mail_root / "Mialdir"
    bad = post(root, NEW, form(path=str(missing)))
    assert bad.status_code == 200
    assert "does not exist; create the Maildir first or turn on &#39;create&#39;" in text(bad)
    wrong_folder = post(root, NEW, form(path=str(mail_root / "Maildir"), create="y", folder="../up"))
    assert "may hold only letters, digits" in text(wrong_folder)

    saved = post(root, NEW, form(path=str(mail_root / "Maildir"), create="y", folder="Archive"))
    assert saved.status_code == 302, text(saved)
    with entry_point_app.app_context():
        [server] = db.session.query(SmtpServer).all()
        assert server.method == "maildir"
        assert server.options == {"path": str(mail_root / "Maildir"), "create": True,
                                  "folder": "Archive"}
