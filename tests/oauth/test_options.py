"""The network plugin's sign-in options: old records, OAuth validation, filled-in defaults."""

from __future__ import annotations

import json

import pytest

from plugins.network import NetworkDelivery
from plugins.oauth_tokens import config_from_options
from smtpsite.delivery import OptionsError, Secret
from tests.oauth.conftest import CLIENT_ID, CLIENT_SECRET, MAILBOX, SA_EMAIL, TENANT
from tests.oauth.helpers import CONTEXT

MICROSOFT = {"auth": "oauth2", "provider": "microsoft", "tenant": TENANT, "client_id": CLIENT_ID,
             "client_secret": CLIENT_SECRET, "mailbox": MAILBOX}


def plain(value) -> str | None:
    """A secret option's value as text (cleaning may keep it wrapped in a Secret)."""
    return value.reveal() if isinstance(value, Secret) else value


def clean(options: dict) -> dict:
    return NetworkDelivery.clean_options(options, CONTEXT)


def errors(options: dict) -> dict[str, str]:
    with pytest.raises(OptionsError) as info:
        clean(options)
    return info.value.errors


def test_records_from_before_the_auth_option_keep_their_meaning():
    # A stored record with a user name and password and no "auth": password sign-in.
    old = clean({"security": "starttls", "username": "mailer", "password": "s3cret-Passw0rd"})
    assert old["auth"] == "password" and old["username"] == "mailer"
    assert plain(old["password"]) == "s3cret-Passw0rd"
    # Secrets come back from the database as Secret values.
    assert clean({"username": "mailer", "password": Secret("from-the-database")})["auth"] == "password"
    # No credentials: no sign-in, as before.
    assert clean({"security": "ssl"})["auth"] == "none"
    for options in (old, clean({})):
        assert clean(options) == options  # stable when cleaned again


@pytest.fixture
def pem(service_account) -> str:
    return service_account.pem


def test_options_of_other_sign_in_kinds_are_dropped(pem):
    # E.g. a server switched from password to OAuth in the panel: the old password is not kept.
    cleaned = clean({**MICROSOFT, "username": "mailer", "password": "old-Passw0rd-1"})
    assert cleaned["username"] is None and cleaned["password"] is None
    assert plain(cleaned["client_secret"]) == CLIENT_SECRET and cleaned["tenant"] == TENANT
    cleaned = clean({"auth": "none", "username": "mailer", "password": "old-Passw0rd-1",
                     "client_secret": CLIENT_SECRET})
    assert all(cleaned[k] is None for k in ("username", "password", "client_secret", "provider"))
    # Google uses a key, not a client secret or a tenant.
    google = clean({"auth": "oauth2", "provider": "google", "client_id": SA_EMAIL,
                    "private_key": pem, "mailbox": MAILBOX, "client_secret": "unused-secret-1",
                    "tenant": TENANT})
    assert google["client_secret"] is None and google["tenant"] is None
    assert clean(google) == google


def test_password_sign_in_needs_a_user_name():
    assert errors({"auth": "password"}) == {"username": "is required for password sign-in"}
    assert errors({"password": "s3cret-Passw0rd"}) == {"username": "is required when a password is set"}


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"tenant": None}, "tenant", "is required for Microsoft 365 (or give the token endpoint)"),
    ({"tenant": "common"}, "tenant", "must be your own tenant"),
    ({"tenant": "not a tenant"}, "tenant", "must be a tenant ID (a GUID) or a domain"),
    ({"client_secret": None}, "client_secret", "is required"),
    ({"client_id": None}, "client_id", "is required"),
    ({"mailbox": None}, "mailbox", "is required: the mailbox to send as"),
    ({"mailbox": "noreply"}, "mailbox", "must be an email address"),
    ({"mailbox": "zoë@contoso.example"}, "mailbox", "must be an email address (ASCII)"),
    ({"scope": "https://outlook.office365.com/SMTP.Send"}, "scope", "must end with /.default"),
    ({"token_endpoint": "http://login.example.com/token"}, "token_endpoint", "must use https://"),
    ({"token_endpoint": "ftp://login.example.com/token"}, "token_endpoint", "must be an https:// URL"),
    ({"provider": "generic", "token_endpoint": None}, "token_endpoint",
     "is required for a generic provider"),
    ({"provider": "google", "client_id": SA_EMAIL}, "private_key",
     "is required for Google (the service account's key)"),
    ({"provider": "google", "private_key": "-----BEGIN PRIVATE KEY-----\nnot-a-key\n"}, "private_key",
     "is not a readable unencrypted PEM private key"),
    ({"provider": "google", "private_key": '{"type": "service_account"}'}, "private_key",
     "is a JSON file without a 'private_key'"),
    ({"provider": "google"}, "private_key", "is required for Google"),
    ({"provider": "bogus"}, "provider", "must be one of: microsoft, google, generic"),
])
def test_oauth_options_are_checked_field_by_field(changes, field, message):
    found = errors({**MICROSOFT, **changes})
    assert message in found.get(field, ""), found
    for text in found.values():
        assert CLIENT_SECRET not in text


def test_google_client_id_must_be_the_service_accounts_email(pem):
    options = {"auth": "oauth2", "provider": "google", "private_key": pem, "mailbox": MAILBOX}
    assert "must be the service account's email" in errors({**options, "client_id": "1048576"})["client_id"]
    assert "is required (the service account's email)" in errors(options)["client_id"]
    key_file = json.dumps({"private_key": pem, "client_email": SA_EMAIL})
    assert clean({**options, "private_key": key_file})["client_id"] is None  # read from the file
    assert "differs from the key file's client_email" in errors(
        {**options, "private_key": key_file, "client_id": "other@x.iam.gserviceaccount.com"})["client_id"]


def test_token_endpoint_and_scope_are_filled_for_known_providers(pem):
    config = config_from_options(clean(MICROSOFT))
    assert config.token_endpoint == f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    assert config.scope == "https://outlook.office365.com/.default"
    assert config.client_secret == Secret(CLIENT_SECRET) and config.private_key is None
    google = config_from_options(clean({"auth": "oauth2", "provider": "google", "client_id": SA_EMAIL,
                                        "private_key": pem, "mailbox": MAILBOX}))
    assert google.token_endpoint == "https://oauth2.googleapis.com/token"
    assert google.scope == "https://mail.google.com/" and google.client_secret is None
    # Given values win (a national cloud, a narrower scope); the tenant is then optional.
    own = config_from_options(clean({**MICROSOFT, "tenant": None,
                                     "token_endpoint": "https://login.microsoftonline.us/t/oauth2/v2.0/token",
                                     "scope": "https://outlook.office365.us/.default"}))
    assert own.token_endpoint == "https://login.microsoftonline.us/t/oauth2/v2.0/token"
    assert own.scope == "https://outlook.office365.us/.default"
    for text in (repr(config), repr(google), repr(own)):
        assert CLIENT_SECRET not in text and "PRIVATE KEY" not in text


def test_a_key_pasted_without_line_breaks_is_read(pem):
    # A password input drops line breaks; the JSON key file survives that anyway.
    one_line = pem.replace("\n", "")
    cleaned = clean({"auth": "oauth2", "provider": "google", "client_id": SA_EMAIL,
                     "private_key": one_line, "mailbox": MAILBOX})
    assert config_from_options(cleaned).private_key.pem == Secret(pem)
    key_file = json.dumps({"private_key": pem, "client_email": SA_EMAIL}, indent=2).replace("\n", "")
    assert plain(clean({**cleaned, "private_key": key_file})["private_key"]) == key_file
