"""The catcher on real sockets: what smtplib sends is stored as sent, or refused with a reason."""

from __future__ import annotations

import smtplib

import pytest
from sqlalchemy import select, text

from smtpsite.extensions import db
from smtpsite.models import CapturedMessage
from tests.catcher.conftest import client

RAW = (
    b"From: Sender <sender@example.com>\r\n"
    b"To: first@example.com, second@example.org\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_dem_Catcher?=\r\n"
    b"Message-ID: <catch-1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Line one, 8-bit: \xc3\xa4\xc3\xb6\xc3\xbc\r\n"
    b".a line that starts with a dot (dot-stuffed on the wire)\r\n"
    b"..two dots\r\n"
    b"\r\n"
    b"  trailing spaces kept  \r\n"
)
RECIPIENTS = ["first@example.com", "second@example.org", "hidden-bcc@example.net"]


def captured() -> list[CapturedMessage]:
    """Every stored message, read afresh (the catcher writes from its own session)."""
    db.session.rollback()
    return list(db.session.execute(select(CapturedMessage).order_by(CapturedMessage.id)).scalars())


def test_stores_what_smtplib_sends_byte_for_byte(start_catcher):
    catcher = start_catcher()
    with client(catcher) as smtp:
        refused = smtp.sendmail("sender@example.com", RECIPIENTS, RAW)
        port = smtp.sock.getsockname()[1]
    assert refused == {}
    [message] = captured()
    assert message.raw == RAW
    assert message.size == len(RAW)
    assert message.subject == "Grüße aus dem Catcher"
    assert message.message_id == "<catch-1@example.com>"
    assert message.mail_from == "sender@example.com"
    assert message.rcpt_tos == RECIPIENTS  # Bcc recipients too: the envelope, not the headers
    assert message.peer == f"127.0.0.1:{port}"


def test_a_message_with_broken_headers_is_still_kept(start_catcher):
    catcher = start_catcher()
    raw = b"Subject: =?x-unknown?q?broken?=\r\nMessage-ID: <>\r\nNo colon on this line\r\n\r\nbody\r\n"
    with client(catcher) as smtp:
        smtp.sendmail("", ["someone@example.com"], raw)
    [message] = captured()
    assert message.raw == raw and message.mail_from == "<>"  # the null sender, as sent
    assert "broken" in message.subject


def test_a_database_error_answers_451_and_the_retry_is_stored(start_catcher):
    catcher = start_catcher()
    # A real failure: the table is gone while the message arrives.
    db.session.execute(text("ALTER TABLE captured_messages RENAME TO captured_away"))
    db.session.commit()
    try:
        with client(catcher) as smtp, pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("sender@example.com", RECIPIENTS, RAW)
    finally:
        db.session.execute(text("ALTER TABLE captured_away RENAME TO captured_messages"))
        db.session.commit()
    assert refused.value.smtp_code == 451
    assert b"try again later" in refused.value.smtp_error
    # The sender retries, as a 4xx reply tells it to: now it is kept, once.
    with client(catcher) as smtp:
        assert smtp.sendmail("sender@example.com", RECIPIENTS, RAW) == {}
    [message] = captured()
    assert message.raw == RAW


def test_oversize_messages_are_refused_with_552(start_catcher):
    catcher = start_catcher(max_size=2000)
    big = b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n" * 1 + (b"y" * 78 + b"\r\n") * 40
    with client(catcher) as smtp:
        # smtplib announces the size (SIZE=) and is refused before sending the data.
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            smtp.sendmail("sender@example.com", ["a@example.com"], big)
        assert refused.value.smtp_code == 552
        # A client that does not announce it is refused after the data.
        smtp.rset()
        assert smtp.mail("sender@example.com")[0] == 250
        assert smtp.rcpt("a@example.com")[0] == 250
        code, _reply = smtp.data(big)
        assert code == 552
        # Under the limit on the same connection: accepted.
        assert smtp.sendmail("sender@example.com", ["a@example.com"], b"Subject: small\r\n\r\nok\r\n") == {}
    assert [m.subject for m in captured()] == ["small"]
