"""Settings: typed keys, global values, site overrides and where a value came from."""

import pytest

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.secrets import Secret
from smtpsite.sites import create_site


def test_site_then_global_then_default(any_app):
    site = create_site("shop", "Shop")
    other = create_site("blog", "Blog")
    db.session.commit()
    assert settings.resolve("emails.format", site) == settings.Resolved("html", "default")
    settings.set_value("emails.format", "both")
    db.session.commit()
    assert settings.resolve("emails.format", site) == settings.Resolved("both", "global")
    settings.set_value("emails.format", "plaintext", site)
    db.session.commit()
    assert settings.resolve("emails.format", site) == settings.Resolved("plaintext", "site")
    assert settings.resolve("emails.format", other) == settings.Resolved("both", "global")
    assert settings.resolve("emails.format") == settings.Resolved("both", "global")
    assert settings.clear("emails.format", site)
    db.session.commit()
    assert settings.resolve("emails.format", site).source == "global"
    assert not settings.clear("emails.format", site)


def test_values_are_typed_and_checked(app):
    assert settings.set_value("emails.enabled", "off") is False
    assert settings.set_value("emails.batch_size", "20") == 20
    db.session.commit()
    assert settings.get("emails.enabled") is False
    assert settings.get("emails.batch_size") == 20
    bad = [
        ("emails.enabled", "maybe", "true or false"),
        ("emails.batch_size", "0", "at least 1"),
        ("emails.batch_size", "ten", "whole number"),
        ("emails.format", "rtf", "one of"),
        ("emails.smtp_security", "tls", "one of"),
        ("emails.default_sender", "not an address", "not a valid email address"),
        ("emails.smtp_server", "host:99999", "outside 1-65535"),
        ("emails.default_sender", "a@example.com\r\nBcc: x@y.z", "single line"),
        ("emails.nope", "1", "unknown setting"),
    ]
    for key, value, fragment in bad:
        with pytest.raises(settings.SettingError, match=fragment):
            settings.set_value(key, value)


def test_global_only_keys_refuse_a_site(app):
    site = create_site("shop", "Shop")
    db.session.commit()
    with pytest.raises(settings.SettingError, match="global only"):
        settings.set_value("emails.batch_size", 10, site)


def test_one_global_row_per_key(any_app):
    settings.set_value("emails.archive_days", 3)
    db.session.commit()
    settings.set_value("emails.archive_days", 5)
    db.session.commit()
    assert settings.get("emails.archive_days") == 5


def test_secret_settings_come_back_as_secret(app):
    settings.set_value("emails.smtp_password", "pw-123")
    db.session.commit()
    value = settings.get("emails.smtp_password")
    assert isinstance(value, Secret) and value.reveal() == "pw-123"
    empty = settings.get("emails.smtp_password", None)
    assert isinstance(empty, Secret)


def test_resolve_all_matches_resolve(any_app):
    site = create_site("shop", "Shop")
    settings.set_value("emails.archive_days", 7)
    settings.set_value("emails.default_sender", "shop@example.com", site)
    db.session.commit()
    every = settings.resolve_all(site)
    assert set(every) == set(settings.KEYS)
    for key in settings.KEYS:
        if not settings.KEYS[key].secret:
            assert every[key] == settings.resolve(key, site), key
