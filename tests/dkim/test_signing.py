"""DKIM signatures checked with dkimpy: directly, after an SMTP round trip, queued, in pickup files."""

from __future__ import annotations

import re

import dkim as dkimpy
import pytest
from sqlalchemy import select

from smtpsite import dkim, send_mail, settings
from smtpsite.extensions import db
from smtpsite.models import Email
from smtpsite.secrets import Secret
from smtpsite.servers import save_server
from smtpsite.sites import create_site
from tests.dkim.conftest import dns_for

MESSAGE = (
    b"From: Shop <news@shop.example.com>\r\n"
    b"To: a@example.com\r\n"
    b"Subject: Hello\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <1@shop.example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello there.\r\n"
)


def signature_tags(data: bytes) -> dict[str, str]:
    """The tags of the first DKIM-Signature header of ``data``."""
    header = re.search(rb"^DKIM-Signature:(.*?)\r\n(?![ \t])", data, re.S | re.M).group(1)
    text = re.sub(r"\s+", "", header.decode())
    return dict(part.split("=", 1) for part in text.split(";") if part)


def test_generated_key_gives_a_record_and_signatures_that_verify(shop):
    site, record = shop
    assert record.name == "s2025._domainkey.shop.example.com"
    assert record.value.startswith("v=DKIM1; k=rsa; p=")
    signed = dkim.signer_for(site).sign(MESSAGE)
    assert signed.endswith(MESSAGE)
    assert dkimpy.verify(signed, dnsfunc=dns_for(record))
    tags = signature_tags(signed)
    assert tags["d"] == "shop.example.com" and tags["s"] == "s2025"
    assert tags["c"] == "relaxed/relaxed" and tags["a"] == "rsa-sha256"
    assert tags["h"].split(":") == [
        "from", "to", "subject", "date", "message-id", "mime-version", "content-type",
    ]


def test_a_changed_message_or_another_key_fails(shop):
    site, record = shop
    signed = dkim.signer_for(site).sign(MESSAGE)
    dns = dns_for(record)
    assert not dkimpy.verify(signed.replace(b"Hello there.", b"Hello thera."), dnsfunc=dns)
    assert not dkimpy.verify(signed.replace(b"Subject: Hello", b"Subject: Hullo"), dnsfunc=dns)
    other = dkim.dns_record(dkim.generate_private_key(), "s2025", "shop.example.com")
    assert not dkimpy.verify(signed, dnsfunc=dns_for(other))
    # Relaxed canonicalisation: re-folded whitespace in a header still verifies.
    assert dkimpy.verify(signed.replace(b"Subject: Hello", b"Subject:   Hello"), dnsfunc=dns)


def _site_server(site, server_name: str, method: str = "network", **options):
    save_server(None, server_name=server_name, method=method,
                options=options or {"security": "none"}, sites=[site])
    settings.set_value("emails.queue_enabled", False)
    db.session.commit()


def test_mail_sent_through_a_real_smtp_server_verifies(shop, smtp_server):
    site, record = shop
    _site_server(site, smtp_server.server_name)
    result = send_mail(
        "shop", to=["a@example.com"], cc=["c@example.com"], bcc=["hidden@example.com"],
        subject="Grüße aus dem Shop — " + "lang " * 30, sender="Shöp <news@shop.example.com>",
        text="Plain ünïcode text.\n.leading dot\n" + "x" * 1200,
        html="<p>Hallo <b>Welt</b></p>", attachments=[("a.txt", b"attached\n", "text/plain")],
    )
    assert result.status == "sent", result
    [received] = smtp_server.messages
    assert sorted(received.rcpt_tos) == ["a@example.com", "c@example.com", "hidden@example.com"]
    assert received.data.startswith(b"DKIM-Signature:")
    assert b"hidden@example.com" not in received.data
    assert dkimpy.verify(received.data, dnsfunc=dns_for(record))


def test_queued_mail_is_stored_signed(shop):
    site, record = shop
    result = send_mail("shop", to=["a@example.com"], subject="Queued", text="Later.",
                       sender="news@shop.example.com")
    assert result.status == "queued"
    raw = db.session.execute(select(Email.raw).where(Email.id == result.email_id)).scalar_one()
    assert raw.startswith(b"DKIM-Signature:")
    assert dkimpy.verify(raw, dnsfunc=dns_for(record))


def test_mail_written_to_a_pickup_file_verifies(shop, app, tmp_path):
    site, record = shop
    folder = tmp_path / "pickup" / "mail"
    folder.mkdir()
    _site_server(site, "localhost", method="pickup", directory=str(folder))
    result = send_mail("shop", to=["a@example.com"], bcc=["b@example.com"], subject="Pickup",
                       html="<p>Hi</p>", sender="news@shop.example.com")
    assert result.status == "sent", result
    [path] = folder.glob("*.eml")
    content = path.read_bytes()
    envelope, _, message = content.partition(b"DKIM-Signature:")
    assert envelope == (b"X-Sender: news@shop.example.com\r\n"
                        b"X-Receiver: a@example.com\r\nX-Receiver: b@example.com\r\n")
    assert dkimpy.verify(b"DKIM-Signature:" + message, dnsfunc=dns_for(record))


def test_sites_without_complete_dkim_settings_are_not_signed(shop, smtp_server):
    site, _record = shop
    blog = create_site("blog", "Blog", ["blog.example.com"])
    db.session.commit()
    # Domain and selector alone are not enough: no key, no signature.
    settings.set_value("emails.dkim_domain", "blog.example.com", blog)
    settings.set_value("emails.dkim_selector", "sel", blog)
    _site_server(blog, smtp_server.server_name)
    assert send_mail("blog", to=["a@example.com"], subject="Hi", text="x").status == "sent"
    [received] = smtp_server.messages
    assert b"DKIM-Signature" not in received.data
    assert dkim.signer_for(blog) is None and dkim.signer_for(None) is None


def test_a_global_key_signs_mail_of_sites_without_their_own(app):
    key = dkim.generate_private_key()
    settings.set_value("emails.dkim_domain", "example.com")
    settings.set_value("emails.dkim_selector", "main")
    settings.set_value("emails.dkim_private_key", key)
    blog = create_site("blog", "Blog")
    db.session.commit()
    signed = dkim.signer_for(blog).sign(MESSAGE)
    assert dkimpy.verify(signed, dnsfunc=dns_for(dkim.dns_record(key, "main", "example.com")))


def test_a_pem_with_crlf_line_ends_is_stored_and_signs(app):
    key = dkim.generate_private_key()
    site = create_site("shop", "Shop")
    db.session.commit()
    settings.set_value("emails.dkim_private_key", key.reveal().replace("\n", "\r\n"), site)
    settings.set_value("emails.dkim_domain", "shop.example.com", site)
    settings.set_value("emails.dkim_selector", "a.b-1", site)
    db.session.commit()
    stored = settings.get("emails.dkim_private_key", site)
    assert isinstance(stored, Secret) and "\r" not in stored.reveal()
    signed = dkim.signer_for(site).sign(MESSAGE)
    record = dkim.dns_record(key, "a.b-1", "shop.example.com")
    assert dkimpy.verify(signed, dnsfunc=dns_for(record))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("emails.dkim_domain", "not a domain", "is not a valid domain name"),
        ("emails.dkim_domain", "-bad.example.com", "is not a valid domain name"),
        ("emails.dkim_selector", "sel_1", "must be a DNS label"),
        ("emails.dkim_selector", "-sel", "must be a DNS label"),
        ("emails.dkim_private_key", "not a key", "is not an unencrypted PEM private key"),
    ],
)
def test_bad_dkim_settings_are_refused(app, name, value, message):
    with pytest.raises(settings.SettingError, match=message):
        settings.set_value(name, value)
