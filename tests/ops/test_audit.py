"""The audit log: panel and CLI changes recorded with their actor, secrets masked, scoped views."""

from __future__ import annotations

import getpass
import json

from sqlalchemy import select

from smtpsite import audit, send_mail, settings
from smtpsite.extensions import db
from smtpsite.models import AuditEntry, Email
from smtpsite.worker import Worker
from tests.admin.conftest import GLOBAL_SECRET, SERVER_SECRET, SITE_SECRET, post, text
from tests.admin.test_servers import network_form
from tests.ops.conftest import add_server

NEW_SERVER_SECRET = "Nw-Srv-secret-0042"
NEW_SETTING_SECRET = "Nw-Set-secret-0043"
CLI_SECRET = "Cli-secret-0044-never"
SECRETS = (SERVER_SECRET, GLOBAL_SECRET, SITE_SECRET, NEW_SERVER_SECRET, NEW_SETTING_SECRET,
           CLI_SECRET, "scrypt:")


def _entries(app=None) -> list[AuditEntry]:
    if app is not None:
        with app.app_context():
            return _entries()
    db.session.remove()
    rows = db.session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars().all()
    db.session.expunge_all()
    return rows


def _dump(entries: list[AuditEntry]) -> str:
    return json.dumps([[e.summary, e.before, e.after, e.object_id] for e in entries])


def test_panel_changes_are_audited_with_secrets_masked(panel, root, world):
    response = post(root, f"/admin/server/edit/?id={world.server_a}",
                    network_form("alpha-relay.example.net:2526", scope="sites",
                                 sites=[world.site_a],
                                 **{"options-auth": "password", "options-username": "mailer",
                                    "options-password": NEW_SERVER_SECRET}))
    assert response.status_code == 302, text(response)
    response = post(root, "/admin/settings/", {"emails__format": "both",
                                               "emails__smtp_password": NEW_SETTING_SECRET})
    assert response.status_code == 302
    response = post(root, "/admin/site/new/", {"code_name": "delta", "display_name": "Delta"})
    assert response.status_code == 302
    entries = _entries(panel)
    assert {(e.actor, e.channel) for e in entries} == {("root@example.com", "panel")}
    [server] = [e for e in entries if e.object_type == "server"]
    assert (server.action, server.object_id, server.site_id) == ("update", str(world.server_a),
                                                                 world.site_a)
    assert server.before["server_name"] == "alpha-relay.example.net:2525"
    assert server.after["server_name"] == "alpha-relay.example.net:2526"
    assert server.before["secrets"] == server.after["secrets"] == {"password": audit.MASK}
    by_key = {e.object_id: e for e in entries if e.object_type == "setting"}
    assert by_key["emails.format"].action == "create"
    assert by_key["emails.format"].after["value"] == "both"
    assert by_key["emails.smtp_password"].before["value"] == audit.MASK
    assert by_key["emails.smtp_password"].after["value"] == audit.MASK
    [site] = [e for e in entries if e.object_type == "site"]
    assert site.action == "create" and site.after["code_name"] == "delta"
    dump = _dump(entries)
    assert not any(secret in dump for secret in SECRETS)
    # The screen lists them; the details show before and after, still masked.
    page = text(root.get("/admin/audit/"))
    assert "alpha-relay.example.net:2526" in page and "site delta created" in page
    details = text(root.get(f"/admin/audit/details/?id={server.id}"))
    assert "alpha-relay.example.net:2525" in details and audit.MASK in details
    assert not any(secret in page + details for secret in SECRETS)


def test_saving_a_server_without_changing_its_secret_does_not_report_one(panel, root, world):
    post(root, f"/admin/server/edit/?id={world.server_a}",
         network_form("alpha-relay.example.net:2525", scope="sites", sites=[world.site_a],
                      priority="low", **{"options-auth": "password", "options-username": "mailer"}))
    [entry] = _entries(panel)
    assert entry.before["priority"] == "normal" and entry.after["priority"] == "low"
    assert "secrets" not in entry.after  # re-encrypted, but the same password


def test_a_site_admin_sees_only_the_entries_of_their_sites(panel, root, alice, world):
    for site in (world.site_a, world.site_b):
        response = post(root, f"/admin/settings/?site={site}", {"emails__format": "plaintext"})
        assert response.status_code == 302
    post(alice, f"/admin/site/edit/?id={world.site_a}",
         {"code_name": "alpha", "display_name": "Alpha shop (new)", "domains": "alpha.example.com"})
    entries = _entries(panel)
    mine = {e.id for e in entries if e.site_id == world.site_a}
    other = {e.id for e in entries if e.site_id == world.site_b}
    assert len(mine) == 2 and len(other) == 1
    assert any(e.actor == "alice@example.com" for e in entries if e.id in mine)
    page = text(alice.get("/admin/audit/"))
    assert f"(site {world.site_b})" not in page and f"(site {world.site_a})" in page
    assert "site alpha changed" in page
    [hidden] = other
    assert alice.get(f"/admin/audit/details/?id={hidden}").status_code == 404
    assert f"(site {world.site_b})" in text(root.get("/admin/audit/"))


def test_cli_changes_are_audited_as_the_os_user(app, runner):
    commands = [
        ["site", "add", "shop", "--name", "Shop", "--domain", "shop.example.com"],
        ["server", "add", "relay.example.net", "--site", "shop", "--option", "username=u",
         "--option", f"password={CLI_SECRET}"],
        ["settings", "set", "emails.smtp_password", CLI_SECRET],
        ["settings", "set", "emails.archive_days", "3", "--site", "shop"],
        ["server", "disable", "relay.example.net"],
    ]
    for args in commands:
        result = runner.invoke(args=["smtpsite", *args])
        assert result.exit_code == 0, result.output
    result = runner.invoke(args=["smtpsite", "user", "add", "ops@example.com", "--site", "shop",
                                 "--password-stdin"], input="a long enough password\n")
    assert result.exit_code == 0, result.output
    entries = _entries()
    assert {(e.actor, e.channel) for e in entries} == {(f"cli:{getpass.getuser()}", "cli")}
    summary = [(e.object_type, e.action) for e in entries]
    assert summary == [("site", "create"), ("server", "create"), ("setting", "create"),
                       ("setting", "create"), ("server", "update"), ("user", "create")]
    server_created, disabled, user = entries[1], entries[4], entries[5]
    assert server_created.after["secrets"] == {"password": audit.MASK}
    assert server_created.after["sites"] == ["shop"] and server_created.site_id == entries[0].site_id
    assert disabled.before == {"enabled": True} and disabled.after == {"enabled": False}
    assert user.after["password_hash"] == audit.MASK and user.after["sites"] == ["shop"]
    assert not any(secret in _dump(entries) for secret in SECRETS)
    # After the command, this thread is no longer the CLI user: nothing more is audited.
    assert audit.current_actor() is None


def test_queue_actions_are_audited(panel, root, world):
    with panel.app_context():
        ids = [send_mail(None, to=["a@example.com"], subject=f"n{n}", text="x",
                         queue=True).email_id for n in range(3)]
        assert _entries() == []  # site code's sends are not audited
    response = post(root, "/admin/email_queue/action/", {"action": "resend", "rowid": ids[:2]},
                    token_page="/admin/email_queue/")
    assert response.status_code == 302
    cli = panel.test_cli_runner()
    result = cli.invoke(args=["smtpsite", "queue", "delete", "--id", str(ids[2]), "--yes"])
    assert result.exit_code == 0, result.output
    resend, delete = _entries(panel)
    assert (resend.actor, resend.action, resend.object_type) == ("root@example.com", "resend",
                                                                 "email")
    assert resend.summary.startswith("resend: 2 email(s) where")
    assert (delete.channel, delete.action) == ("cli", "delete")
    assert delete.summary.startswith("delete: 1 email(s) where") and str(ids[2]) in delete.summary


def test_an_email_queued_by_an_operator_is_audited_without_its_body(app):
    with audit.acting_as("cli:someone", "cli"):
        result = send_mail(None, to=["a@example.com"], subject="Operator test", text="Body 42",
                           queue=True)
    [entry] = _entries()
    assert (entry.actor, entry.action, entry.object_type, entry.object_id) == (
        "cli:someone", "queue", "email", str(result.email_id))
    assert entry.after["subject"] == "Operator test" and entry.after["to"] == ["a@example.com"]
    assert "Body 42" not in _dump([entry])


def test_worker_writes_and_rolled_back_changes_leave_no_entry(app, smtp_server):
    add_server(smtp_server)
    send_mail(None, to=["a@example.com"], subject="x", text="x", queue=True)
    assert Worker(once=True).run().sent == 1
    with audit.acting_as("cli:someone", "cli"):
        settings.set_value("emails.format", "plaintext")
        db.session.flush()
        db.session.rollback()
    assert _entries() == []
    assert db.session.execute(select(Email)).first() is None
