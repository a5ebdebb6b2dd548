"""The send helper end to end, against real SMTP servers on 127.0.0.1."""

from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from flask import current_app
from sqlalchemy import select

from smtpsite import availability, send_mail, send_message, settings
from smtpsite.extensions import db
from smtpsite.messages import MessageError
from smtpsite.models import Email
from smtpsite.sending import UnknownSiteError
from smtpsite.servers import save_server
from smtpsite.sites import create_site
from tests.smtpd import Behaviour


@pytest.fixture
def shop(app):
    site = create_site("shop", "Shop")
    settings.set_value("emails.queue_enabled", False)
    db.session.commit()
    return site


def add_server(server, site, *, priority="normal", max_connections=1, **options):
    record = save_server(None, server_name=server.server_name, method="network",
                         options={"security": "none", "timeout": 5, **options},
                         priority=priority, sites=[site], max_connections=max_connections)
    db.session.commit()
    return record


def stored(message_id):
    return db.session.execute(select(Email).where(Email.message_id == message_id)).scalar_one()


def parse(data):
    return message_from_bytes(data.replace(b"\r\n", b"\n"), policy=policy.default)


def test_what_arrives_is_what_was_asked(shop, smtp_server):
    add_server(smtp_server, shop)
    settings.set_value("emails.format", "both", shop)
    db.session.commit()
    result = send_mail(
        "SHOP", sender="Bücher Shop <shop@example.com>", to=["Zoë <zoe@example.com>"],
        cc=["cc@example.com"], bcc=["secret@example.com"], reply_to="help@example.com",
        subject="Ihre Bestellung – Nr. 42", html="<p>Danke für Ihre Bestellung</p>",
        attachments=[("rechnung.txt", "Summe: 10 €", None)], headers={"X-Order": "42"},
    )
    assert result.status == "sent" and result.ok
    assert result.server == smtp_server.server_name
    assert [a.outcome for a in result.attempts] == ["sent"]
    [received] = smtp_server.messages
    assert received.mail_from == "shop@example.com"
    assert received.rcpt_tos == ["zoe@example.com", "cc@example.com", "secret@example.com"]
    msg = parse(received.data)
    assert msg["Message-ID"] == result.message_id
    assert msg["Subject"] == "Ihre Bestellung – Nr. 42"
    assert msg["From"].addresses[0].display_name == "Bücher Shop"
    assert msg["Bcc"] is None and b"secret@example.com" not in received.data
    assert msg["Reply-To"] == "help@example.com" and msg["X-Order"] == "42"
    assert msg.get_body(("plain",)).get_content().strip() == "Danke für Ihre Bestellung"
    assert msg.get_body(("html",)).get_content().strip() == "<p>Danke für Ihre Bestellung</p>"
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "rechnung.txt"
    assert attachment.get_content().rstrip("\n") == "Summe: 10 €"


def test_default_sender_comes_from_settings(shop, smtp_server):
    add_server(smtp_server, shop)
    settings.set_value("emails.default_sender", "noreply@shop.example", shop)
    db.session.commit()
    send_mail("shop", to=["a@example.com"], subject="s", text="t")
    assert smtp_server.messages[0].mail_from == "noreply@shop.example"


def test_temporary_failure_fails_over_to_the_next_server(shop, start_server):
    first = start_server(behaviour=Behaviour(rcpt_reply="451 4.3.0 try later"))
    second = start_server()
    add_server(first, shop, priority="high")
    add_server(second, shop)
    result = send_mail("shop", to=["a@example.com"], subject="s", text="t")
    assert result.status == "sent" and result.server == second.server_name
    assert [(a.server, a.outcome, a.code) for a in result.attempts] == [
        (first.server_name, "failed", 451), (second.server_name, "sent", 250)]
    assert len(second.messages) == 1 and first.messages == []
    # The failed server cools down: the next email goes straight to the second one.
    again = send_mail("shop", to=["b@example.com"], subject="s", text="t")
    assert [a.server for a in again.attempts] == [second.server_name]


def test_connection_refused_fails_over(shop, smtp_server):
    from tests.smtpd import free_port

    save_server(None, server_name=f"127.0.0.1:{free_port()}", method="network",
                options={"security": "none", "timeout": 2}, priority="high", sites=[shop])
    add_server(smtp_server, shop)
    result = send_mail("shop", to=["a@example.com"], subject="s", text="t")
    assert result.status == "sent" and result.attempts[0].outcome == "failed"
    assert "Connection refused" in result.attempts[0].message


def test_permanent_rejection_stops_and_keeps_the_email(shop, start_server):
    first = start_server(behaviour=Behaviour(rcpt_reply="550 5.1.1 no such user"))
    second = start_server()
    add_server(first, shop, priority="high")
    add_server(second, shop)
    result = send_mail("shop", to=["gone@example.com"], subject="s", text="t")
    assert result.status == "failed" and not result.ok
    assert len(result.attempts) == 1 and "550" in result.error
    assert second.recorder.connections == 0
    email = stored(result.message_id)
    assert email.status == "failed" and "550" in email.last_result
    assert [a.outcome for a in email.attempts] == ["failed"]


def test_failure_after_the_final_dot_is_not_sent_elsewhere(shop, start_server):
    first = start_server(behaviour=Behaviour(drop_after_data=True))
    second = start_server()
    add_server(first, shop, priority="high")
    add_server(second, shop)
    result = send_mail("shop", to=["a@example.com"], subject="s", text="t")
    assert result.status == "uncertain"
    assert "may have been delivered" in result.error
    assert len(first.messages) == 1 and second.messages == []
    email = stored(result.message_id)
    assert email.status == "failed" and email.attempts[0].outcome == "uncertain"


def test_a_busy_server_is_passed_over(shop, start_server):
    first = start_server()
    second = start_server()
    busy = add_server(first, shop, priority="high")
    add_server(second, shop)
    lease = availability.try_acquire(busy.key, 1, ttl=60)
    try:
        result = send_mail("shop", to=["a@example.com"], subject="s", text="t")
    finally:
        availability.release(lease)
    assert result.server == second.server_name and first.messages == []


def test_every_server_busy_waits_then_queues(shop, smtp_server):
    busy = add_server(smtp_server, shop)
    current_app.config["SMTPSITE_BUSY_WAIT"] = 0.3
    lease = availability.try_acquire(busy.key, 1, ttl=60)
    try:
        result = send_mail("shop", to=["a@example.com"], subject="s", text="t")
    finally:
        availability.release(lease)
    assert result.status == "deferred" and "busy" in result.error
    assert smtp_server.messages == []
    assert stored(result.message_id).status == "waiting"


def test_no_server_says_so_and_keeps_the_email(shop):
    result = send_mail("shop", to=["a@example.com"], subject="s", text="t")
    assert result.status == "deferred" and "no server" in result.error
    assert stored(result.message_id).status == "waiting"


def test_emails_disabled_sends_nothing_and_tells_the_caller(shop, smtp_server):
    add_server(smtp_server, shop)
    settings.set_value("emails.enabled", False, shop)
    db.session.commit()
    result = send_mail("shop", to=["a@example.com"], subject="s", text="t")
    assert result.status == "disabled" and "disabled" in result.error
    assert smtp_server.messages == []
    assert stored(result.message_id).status == "waiting"


def test_queue_enabled_stores_and_returns_at_once(shop, smtp_server):
    add_server(smtp_server, shop)
    settings.set_value("emails.queue_enabled", True, shop)
    db.session.commit()
    result = send_mail("shop", to=["a@example.com"], subject="s", text="t")
    assert result.status == "queued" and result.ok
    email = stored(result.message_id)
    assert email.status == "waiting" and email.attempts == []
    assert result.message_id.encode() in email.raw
    assert smtp_server.messages == []


def test_tls_and_auth_through_a_server_record(shop, start_server, certificate):
    server = start_server(tls="ssl", users={"mailer": "pw-1"})
    save_server(None, server_name=server.server_name, method="network", sites=[shop],
                options={"security": "ssl", "username": "mailer", "password": "pw-1",
                         "ca_file": str(certificate.cert_file), "timeout": 5})
    db.session.commit()
    result = send_mail("shop", to=["a@example.com"], subject="s", text="t")
    assert result.status == "sent", result.error
    assert server.messages[0].auth_login == "mailer"


def test_send_message_takes_a_ready_message(shop, smtp_server):
    add_server(smtp_server, shop)
    msg = EmailMessage()
    msg["From"] = "shop@example.com"
    msg["To"] = "a@example.com"
    msg["Bcc"] = "b@example.com"
    msg["Subject"] = "Ready"
    msg.set_content("body")
    result = send_message("shop", msg)
    assert result.status == "sent"
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["a@example.com", "b@example.com"]
    assert b"b@example.com" not in received.data


def test_bad_input_sends_nothing(shop, smtp_server):
    add_server(smtp_server, shop)
    with pytest.raises(UnknownSiteError, match="no site"):
        send_mail("nosuchsite", to=["a@example.com"], subject="s", text="t")
    with pytest.raises(MessageError, match="single string"):
        send_mail("shop", to="a@example.com", subject="s", text="t")
    with pytest.raises(MessageError, match="line break"):
        send_mail("shop", to=["a@example.com"], subject="s\r\nBcc: x@example.com", text="t")
    assert smtp_server.messages == []
    assert db.session.execute(select(Email)).first() is None


def test_global_email_uses_global_servers_only(shop, start_server):
    site_server = start_server()
    global_server = start_server()
    add_server(site_server, shop)
    save_server(None, server_name=global_server.server_name, method="network",
                options={"security": "none"}, is_global=True)
    db.session.commit()
    result = send_mail(None, to=["a@example.com"], subject="s", text="t")
    assert result.server == global_server.server_name and site_server.messages == []
