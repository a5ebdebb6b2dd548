"""Secrets are encrypted at rest, never shown, and a wrong key is detected."""

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.secrets import Secret, SecretBox, SecretKeyError
from smtpsite.servers import save_server
from smtpsite.sites import create_site
from tests.conftest import make_app

PASSWORD = "s3cret-Pa55word!"


def test_secret_never_shows_itself():
    secret = Secret(PASSWORD)
    assert PASSWORD not in repr(secret)
    assert PASSWORD not in str(secret)
    assert PASSWORD not in f"{secret}"
    assert PASSWORD not in repr({"password": secret})
    assert secret.reveal() == PASSWORD


def test_round_trip_and_rotation():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = SecretBox(old).encrypt(PASSWORD)
    assert PASSWORD not in token
    both = SecretBox(f"{new},{old}")
    assert both.decrypt(token) == PASSWORD
    rotated = both.rotate(token)
    assert SecretBox(new).decrypt(rotated) == PASSWORD


def test_wrong_key_is_reported_not_used():
    token = SecretBox(Fernet.generate_key().decode()).encrypt(PASSWORD)
    with pytest.raises(SecretKeyError, match="cannot be decrypted"):
        SecretBox(Fernet.generate_key().decode()).decrypt(token)


def test_invalid_key_message_does_not_echo_the_key():
    with pytest.raises(SecretKeyError) as info:
        SecretBox("not-a-valid-key-material")
    assert "not-a-valid-key-material" not in str(info.value)
    with pytest.raises(SecretKeyError, match="no encryption key"):
        SecretBox("")


def test_server_and_setting_secrets_are_encrypted_in_the_database(app, smtp_server):
    site = create_site("shop", "Shop")
    server = save_server(None, server_name=smtp_server.server_name, method="network",
                         options={"security": "none", "username": "u", "password": PASSWORD},
                         sites=[site])
    settings.set_value("emails.smtp_password", PASSWORD, site)
    db.session.commit()
    dump = "\n".join(
        str(row) for table in ("smtp_servers", "settings")
        for row in db.session.execute(text(f"SELECT * FROM {table}"))
    )
    assert PASSWORD not in dump
    assert PASSWORD not in repr(server)
    assert settings.get("emails.smtp_password", site).reveal() == PASSWORD


def test_another_key_cannot_read_stored_secrets(app, tmp_path):
    settings.set_value("emails.smtp_password", PASSWORD)
    db.session.commit()
    url = app.config["SMTPSITE_DATABASE_URL"]
    other = make_app(url, tmp_path)
    with other.app_context():
        with pytest.raises(SecretKeyError, match="cannot be decrypted"):
            settings.get("emails.smtp_password")
        db.engine.dispose()
