"""``smtpsite dkim generate|record`` and the private key never being shown."""

from __future__ import annotations

import logging

import dkim as dkimpy
import pytest

from smtpsite import dkim, settings
from smtpsite.extensions import db
from smtpsite.sites import create_site
from tests.dkim.conftest import dns_for
from tests.dkim.test_signing import MESSAGE


def key_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM: any one of them showing up would leak the key."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


@pytest.fixture
def shop_site(app):
    site = create_site("shop", "Shop", ["shop.example.com", "www.shop.example.com"])
    db.session.commit()
    return site


def test_generate_stores_the_key_and_prints_only_the_record(app, runner, shop_site, caplog):
    caplog.set_level(logging.DEBUG)
    result = runner.invoke(args=["smtpsite", "dkim", "generate", "--site", "shop",
                                 "--selector", "s1"])
    assert result.exit_code == 0, result.output
    key = settings.get("emails.dkim_private_key", shop_site)
    record = dkim.dns_record(key, "s1", "shop.example.com")
    assert f"name:  {record.name}" in result.output
    assert f"value: {record.value}" in result.output
    assert record.zone_line() in result.output
    assert settings.get("emails.dkim_domain", shop_site) == "shop.example.com"
    assert settings.get("emails.dkim_selector", shop_site) == "s1"
    assert dkimpy.verify(dkim.signer_for(shop_site).sign(MESSAGE), dnsfunc=dns_for(record))
    for line in key_lines(key.reveal()):
        assert line not in result.output
        assert line not in caplog.text

    shown = runner.invoke(args=["smtpsite", "settings", "get", "emails.dkim_private_key",
                                "--site", "shop"])
    assert "(set)" in shown.output and not any(x in shown.output for x in key_lines(key.reveal()))
    again = runner.invoke(args=["smtpsite", "dkim", "record", "--site", "shop"])
    assert again.exit_code == 0 and f"value: {record.value}" in again.output


def test_a_second_key_needs_replace(app, runner, shop_site):
    args = ["smtpsite", "dkim", "generate", "--site", "shop", "--selector", "s1"]
    assert runner.invoke(args=args).exit_code == 0
    first = settings.get("emails.dkim_private_key", shop_site)
    refused = runner.invoke(args=args[:-1] + ["s2"])
    assert refused.exit_code != 0 and "--replace" in refused.output
    assert settings.get("emails.dkim_private_key", shop_site) == first
    replaced = runner.invoke(args=[*args[:-1], "s2", "--replace", "--domain", "mail.example.com"])
    assert replaced.exit_code == 0, replaced.output
    assert "s2._domainkey.mail.example.com" in replaced.output
    assert settings.get("emails.dkim_private_key", shop_site) != first


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--site", "nope", "--selector", "s1"], "no site with code name 'nope'"),
        (["--site", "bare", "--selector", "s1"], "has no domain name"),
        (["--site", "shop", "--selector", "bad_selector"], "must be a DNS label"),
        (["--site", "shop", "--selector", "s1", "--domain", "no domain"], "not a valid domain"),
    ],
)
def test_generate_refuses_bad_input_and_stores_nothing(app, runner, shop_site, args, message):
    create_site("bare", "No domains")
    db.session.commit()
    result = runner.invoke(args=["smtpsite", "dkim", "generate", *args])
    assert result.exit_code != 0 and message in result.output
    assert not settings.get("emails.dkim_private_key", shop_site)
    assert settings.get("emails.dkim_domain", shop_site) == ""


def test_the_key_is_not_in_repr_errors_or_setting_messages(app, shop_site):
    key = dkim.generate_private_key()
    secret_lines = key_lines(key.reveal())
    signer = dkim.DkimSigner("shop.example.com", "s1", key)
    assert "Secret" in repr(key) and not any(x in repr(key) for x in secret_lines)
    assert repr(signer) == "<DkimSigner d=shop.example.com s=s1>"
    # A key cut short: refused, and the message quotes none of it.
    broken = "\n".join(key.reveal().splitlines()[:8] + ["-----END PRIVATE KEY-----"])
    with pytest.raises(settings.SettingError) as info:
        settings.set_value("emails.dkim_private_key", broken, shop_site)
    assert not any(x in str(info.value) for x in secret_lines)
    # A message the signer cannot sign (no From): the error names the domain, not the key.
    with pytest.raises(dkim.DkimError) as failed:
        signer.sign(b"To: a@example.com\r\nSubject: x\r\n\r\nbody\r\n")
    assert "shop.example.com" in str(failed.value)
    assert not any(x in str(failed.value) for x in secret_lines)
