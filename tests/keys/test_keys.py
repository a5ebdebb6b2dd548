"""Key checks at start-up, rotate-secrets and check-keys, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from smtpsite import send_mail, settings
from smtpsite.dkim import generate_private_key
from smtpsite.extensions import db
from smtpsite.keys import RotationError, check_keys, rotate_secrets
from smtpsite.models import Setting, SmtpServer
from smtpsite.routing import server_options
from smtpsite.secrets import SecretBox, SecretKeyError
from smtpsite.servers import save_server
from smtpsite.sites import create_site
from tests.keys.conftest import KEY_A, KEY_B, KEY_C

PASSWORD = "pw-8f2e1c-Ünïcode"
SITE_PASSWORD = "site-pw-7a3d9b"


def write_secrets(server_name: str = "smtp.example.com") -> int:
    """A site, a server with a password, a site password and a global DKIM key; the server id."""
    site = create_site("shop", "Shop")
    server = save_server(None, server_name=server_name, method="network",
                         options={"security": "none", "username": "u", "password": PASSWORD},
                         sites=[site])
    settings.set_value("emails.smtp_password", SITE_PASSWORD, site)
    settings.set_value("emails.smtp_username", "u", site)
    db.session.commit()
    return server.id


def tokens() -> dict[str, str]:
    rows = {f"server {s.id}": s.secrets for s in db.session.execute(select(SmtpServer)).scalars()}
    rows.update({f"setting {s.id}": s.value for s in db.session.execute(select(Setting)).scalars()
                 if settings.KEYS[s.key].secret})
    return rows


def test_wrong_key_is_reported_exactly_at_start_up(started, caplog):
    with started(KEY_A):
        server_id = write_secrets()
    caplog.set_level(logging.ERROR)
    with started(KEY_B) as app:
        expected = (
            f"SMTPSITE_SECRET_KEYS cannot decrypt 2 stored secrets (server {server_id} "
            "'smtp.example.com', setting emails.smtp_password for site shop): the key is wrong "
            "or the key they were encrypted with was removed"
        )
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [expected]
        assert app.extensions["smtpsite.keys"].message == expected
        assert not check_keys().ok
        # init says it too, on standard error, and still upgrades the schema.
        result = app.test_cli_runner().invoke(args=["smtpsite", "init"])
        assert result.exit_code == 0
        assert "database schema is up to date" in result.stdout
        assert expected in result.stderr
        # check-keys is the script-friendly form: exit 1.
        result = app.test_cli_runner().invoke(args=["smtpsite", "check-keys"])
        assert result.exit_code == 1 and expected in result.stderr


def test_one_unreadable_secret_is_named_in_the_singular(started):
    with started(KEY_A):
        write_secrets()
    with started(f"{KEY_B},{KEY_A}"):
        settings.set_value("emails.dkim_private_key", generate_private_key())
        db.session.commit()
    with started(KEY_B) as app:
        state = app.extensions["smtpsite.keys"]
        assert state.total == 3
        assert [s.label for s in state.unreadable] == [
            "server 1 'smtp.example.com'", "setting emails.smtp_password for site shop"]
    with started(KEY_A) as app:
        assert app.extensions["smtpsite.keys"].message == (
            "SMTPSITE_SECRET_KEYS cannot decrypt 1 stored secret (setting "
            "emails.dkim_private_key (global)): the key is wrong or the key it was encrypted "
            "with was removed"
        )


def test_new_key_first_reads_everything_then_rotation_lets_the_old_key_go(started, caplog):
    with started(KEY_A):
        server_id = write_secrets()
        before = {s.id: s.updated_at for s in db.session.execute(select(SmtpServer)).scalars()}
    caplog.set_level(logging.WARNING)
    with started(f"{KEY_B},{KEY_A}") as app:
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        state = app.extensions["smtpsite.keys"]
        assert state.ok and state.total == 2 and state.old_key == 2
        assert "2 stored secrets are encrypted with an older key" in caplog.text
        old_tokens = tokens()
        result = app.test_cli_runner().invoke(args=["smtpsite", "rotate-secrets"])
        assert result.exit_code == 0, result.output
        assert "re-encrypted 2 stored secrets with the newest key (1 of servers, 1 settings)" in (
            result.stdout)
        new_tokens = tokens()
        assert new_tokens.keys() == old_tokens.keys()
        assert all(new_tokens[k] != old_tokens[k] for k in new_tokens)
        # Only the encryption changed: "last changed" stays as it was.
        assert {s.id: s.updated_at for s in db.session.execute(select(SmtpServer)).scalars()} == (
            before)
    caplog.clear()
    with started(KEY_B) as app:
        assert app.extensions["smtpsite.keys"].ok
        assert app.extensions["smtpsite.keys"].old_key == 0
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        server = db.session.get(SmtpServer, server_id)
        assert server_options(server)["password"].reveal() == PASSWORD
        assert settings.get("emails.smtp_password", server.sites[0]).reveal() == (
            SITE_PASSWORD)
        result = app.test_cli_runner().invoke(args=["smtpsite", "check-keys"])
        assert result.exit_code == 0 and "all 2 stored secrets can be decrypted" in result.stdout
    with started(KEY_A), pytest.raises(SecretKeyError):
        settings.get("emails.smtp_password", db.session.get(SmtpServer, server_id).sites[0])


def test_rotation_stops_on_a_secret_no_key_can_read_and_changes_nothing(started):
    with started(KEY_A):
        write_secrets()
    with started(KEY_C):
        other = save_server(None, server_name="[::1]:2525", method="network",
                            options={"security": "none", "username": "x", "password": "y"},
                            is_global=True)
        db.session.commit()
        other_id = other.id
    with started(f"{KEY_B},{KEY_A}") as app:
        before = tokens()
        with pytest.raises(RotationError) as info:
            rotate_secrets()
        message = str(info.value)
        assert f"server {other_id} '[::1]:2525'" in message
        assert "nothing was changed" in message and "shop" not in message
        db.session.expire_all()
        assert tokens() == before
        result = app.test_cli_runner().invoke(args=["smtpsite", "rotate-secrets"])
        assert result.exit_code == 1
        assert f"server {other_id} '[::1]:2525'" in result.output
        assert tokens() == before
    # With the missing key added, the same rotation goes through and names nothing.
    with started(f"{KEY_B},{KEY_A},{KEY_C}"):
        assert rotate_secrets().total == 3
        assert check_keys(KEY_B).ok


def test_rotation_with_nothing_stored_reports_zero(started):
    with started(KEY_A) as app:
        result = app.test_cli_runner().invoke(args=["smtpsite", "rotate-secrets"])
        assert result.exit_code == 0
        assert "re-encrypted 0 stored secrets" in result.stdout
        assert check_keys().total == 0


def test_a_fresh_database_starts_without_a_check(tmp_path, caplog):
    from tests.conftest import make_app

    caplog.set_level(logging.WARNING)
    app = make_app(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path)
    assert app.extensions["smtpsite.keys"] is None
    assert not caplog.records
    result = app.test_cli_runner().invoke(args=["smtpsite", "init"])
    assert result.exit_code == 0 and "SMTPSITE_SECRET_KEYS" not in result.stderr
    with app.app_context():
        assert check_keys().ok
        db.engine.dispose()


def test_an_unreachable_database_does_not_stop_start_up(tmp_path, caplog):
    from tests.conftest import make_app

    missing = tmp_path / "no-such-dir" / "x" / "db.sqlite"
    # A directory where the database file should be: SQLite cannot open it.
    missing.mkdir(parents=True)
    app = make_app(f"sqlite:///{missing}", tmp_path)
    assert app.extensions["smtpsite.keys"] is None
    assert "stored secrets not checked" in caplog.text


def test_after_rotation_mail_goes_out_with_the_new_key_alone(started, start_server):
    server = start_server(users={"u": PASSWORD})
    with started(KEY_A):
        site = create_site("shop", "Shop")
        save_server(None, server_name=server.server_name, method="network",
                    options={"security": "none", "username": "u", "password": PASSWORD,
                             "timeout": 5}, sites=[site])
        settings.set_value("emails.queue_enabled", False)
        db.session.commit()
    with started(f"{KEY_B},{KEY_A}"):
        rotate_secrets()
    with started(KEY_B):
        result = send_mail("shop", sender="a@example.com", to=["b@example.com"], subject="s",
                           text="t")
        assert result.status == "sent", result.error
        assert server.messages[0].auth_login == "u"
        assert SecretBox(KEY_B).decrypt_mapping(
            db.session.execute(select(SmtpServer.secrets)).scalar_one())["password"].reveal() == (
            PASSWORD)
