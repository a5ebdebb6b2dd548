"""Email settings per scope, Send test email and the Routing preview."""

from __future__ import annotations

import io

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.models import SmtpServer
from tests.admin.conftest import GLOBAL_SECRET, SITE_SECRET, post, text


def resolved(panel, key, site_id=None):
    """A setting's value and source, read fresh."""
    with panel.app_context():
        result = settings.resolve(key, site_id)
        return result.value, result.source


def test_global_settings_show_every_key_and_save_changes(panel, root, world):
    page = text(root.get("/admin/settings/"))
    for key in settings.KEYS.values():
        assert key.label in page
    assert "A value is set." in page and GLOBAL_SECRET not in page
    response = post(root, "/admin/settings/", {"emails__format": "both", "emails__batch_size": "20",
                                               "emails__enabled": "true",
                                               "emails__queue_enabled": "true",
                                               "emails__smtp_security": "none",
                                               "emails__smtp_server": "global-default.example.net",
                                               "emails__smtp_username": "globaluser"})
    assert response.status_code == 302
    assert resolved(panel, "emails.format") == ("both", "global")
    assert resolved(panel, "emails.batch_size") == (20, "global")
    # Untouched keys keep their default; the password left empty is kept.
    assert resolved(panel, "emails.archive_days") == (0, "default")
    assert resolved(panel, "emails.smtp_password")[0].reveal() == GLOBAL_SECRET


def test_bad_values_show_next_to_their_fields_and_nothing_is_saved(panel, root, world):
    response = post(root, "/admin/settings/", {"emails__format": "both",
                                               "emails__batch_size": "lots",
                                               "emails__default_sender": "not an address",
                                               "emails__smtp_server": "bad host!"})
    page = text(response)
    assert response.status_code == 200
    assert "must be a whole number" in page and "not a valid email address" in page
    assert "Nothing was saved" in page
    assert page.count("invalid-feedback d-block") == 3
    assert 'value="lots"' in page  # what was typed is kept for correcting
    assert resolved(panel, "emails.format") == ("html", "default")


def test_site_override_and_back_to_inheriting(panel, root, world):
    url = f"/admin/settings/?site={world.site_a}"
    page = text(root.get(url))
    assert "inherited from global" in page and "global only" in page
    assert "emails__batch_size" not in page  # global-only keys cannot be set per site
    post(root, url, {"emails__format": "plaintext", "emails__smtp_server": "global-default.example.net",
                     "emails__smtp_username": "globaluser", "emails__smtp_password": "site-a-pw-1",
                     "emails__enabled": "true", "emails__queue_enabled": "true",
                     "emails__smtp_security": "none"})
    assert resolved(panel, "emails.format", world.site_a) == ("plaintext", "site")
    assert resolved(panel, "emails.smtp_server", world.site_a)[1] == "global"  # unchanged: inherits
    assert resolved(panel, "emails.smtp_password", world.site_a)[0].reveal() == "site-a-pw-1"
    page = text(root.get(url))
    assert "overridden for this site" in page and "Back to inheriting" in page
    assert "site-a-pw-1" not in page
    post(root, url, {"inherit": "emails.format"})
    assert resolved(panel, "emails.format", world.site_a) == ("html", "default")
    post(root, url, {"inherit": "emails.smtp_password"})
    assert resolved(panel, "emails.smtp_password", world.site_a)[0].reveal() == GLOBAL_SECRET
    assert post(root, url, {"inherit": "emails.batch_size"}).status_code == 400


def test_routing_preview_shows_the_chain_and_why(panel, root, world):
    page = text(root.get(f"/admin/routing/?site={world.site_b}"))
    assert page.index("bravo-default.example.net") < page.index("bravo-relay.example.net")
    assert "default server from the site bravo email settings" in page
    assert "assigned to bravo" in page and "global server (all sites)" in page
    with panel.app_context():
        db.session.get(SmtpServer, world.server_b).sender_filter = "news@bravo.example.com"
        db.session.commit()
    filtered = text(root.get(f"/admin/routing/?site={world.site_b}&sender=x@example.com"))
    assert "sender filter does not match" in filtered
    assert "is not a valid email address" in text(root.get("/admin/routing/?sender=nope"))
    assert "global-default.example.net" in text(root.get("/admin/routing/"))


def test_send_test_email_arrives_with_its_attachment(panel, root, world, smtp_server):
    page = text(root.get(f"/admin/testmail/?site={world.site_b}"))
    assert 'value="bravo-default.example.net"' in page and SITE_SECRET not in page
    response = root.post("/admin/testmail/", data={
        "csrf_token": _token(root), "server": smtp_server.server_name, "username": "",
        "security": "none", "sender": "admin@example.com", "to": "someone@example.com",
        "subject": "Panel test", "html": "<p>Hello from the panel</p>",
        "attachment": (io.BytesIO(b"report body"), "report.txt", "text/plain"),
    }, content_type="multipart/form-data")
    page = text(response)
    assert "The test email was sent." in page, page
    assert "&gt; MAIL FROM:&lt;admin@example.com&gt;" in page and "&lt; 250" in page
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["someone@example.com"]
    assert b"Subject: Panel test" in received.data and b"report.txt" in received.data
    assert b"Hello from the panel" in received.data


def test_send_test_email_uses_the_stored_password_and_never_shows_it(panel, root, world,
                                                                      start_server):
    server = start_server(users={"globaluser": GLOBAL_SECRET})
    response = post(root, "/admin/testmail/", {
        "server": server.server_name, "username": "globaluser", "password": "",
        "security": "none", "sender": "admin@example.com", "to": "x@example.com",
        "subject": "Auth test", "html": "<p>hi</p>"}, token_page="/admin/testmail/")
    page = text(response)
    assert "The test email was sent." in page and "credentials hidden" in page
    assert GLOBAL_SECRET not in page
    assert server.messages[0].auth_login == "globaluser"
    wrong = text(post(root, "/admin/testmail/", {
        "server": server.server_name, "username": "globaluser", "password": "wrong-password-1",
        "security": "none", "sender": "admin@example.com", "to": "x@example.com",
        "subject": "Auth test", "html": "<p>hi</p>"}, token_page="/admin/testmail/"))
    assert "refused the sign-in: 535" in wrong and "wrong-password-1" not in wrong
    assert len(server.messages) == 1


def test_send_test_email_errors(panel, root, world):
    from tests.smtpd import free_port

    page = text(post(root, "/admin/testmail/", {
        "server": f"127.0.0.1:{free_port()}", "security": "none", "sender": "admin@example.com",
        "to": "x@example.com", "subject": "S", "html": "h"}, token_page="/admin/testmail/"))
    assert "FAILED" in page and "connection to 127.0.0.1" in page
    page = text(post(root, "/admin/testmail/", {
        "server": "bad host!", "security": "none", "sender": "nope", "to": "x@example.com",
        "subject": "S"}, token_page="/admin/testmail/"))
    assert "not a valid email address" in page and page.count("invalid-feedback") >= 2


def _token(client) -> str:
    from tests.admin.conftest import csrf_token

    return csrf_token(client, "/admin/testmail/")
