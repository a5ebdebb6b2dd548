"""Mail sent through a server using the installed example plugin arrives in the Maildir."""

from __future__ import annotations

import mailbox
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from smtpsite import send_mail, send_message
from smtpsite.extensions import db
from smtpsite.servers import save_server


@pytest.fixture
def maildir(entry_point_app, mail_root: Path) -> Path:
    """A global Maildir server (made by ``create`` at the first delivery); yields its path."""
    path = mail_root / "Maildir"
    with entry_point_app.app_context():
        save_server(None, server_name="mail-archive", method="maildir",
                    options={"path": str(path), "create": True}, is_global=True)
        db.session.commit()
        yield path
        db.session.remove()


def only_message(path: Path) -> tuple[str, bytes]:
    """The key and bytes of the one message in the Maildir, read with ``mailbox.Maildir``."""
    box = mailbox.Maildir(path, factory=None, create=False)
    [key] = box.keys()
    assert box[key].get_subdir() == "new"
    return key, box.get_bytes(key)


def test_send_mail_arrives_in_the_maildir(maildir):
    result = send_mail(None, to=["reader@example.com"], bcc=["archive@example.com"],
                       sender="shop@example.com", subject="Your order 1042",
                       text="Thank you for your order.\n.Shipped tomorrow.\n", queue=False)
    assert (result.status, result.server) == ("sent", "mail-archive"), result.error
    assert [a.outcome for a in result.attempts] == ["sent"]
    assert result.attempts[0].message.startswith("delivered as new/")

    key, data = only_message(maildir)
    envelope, _, message = data.partition(b"\nFrom: ")
    assert envelope.split(b"\n") == [b"Return-Path: <shop@example.com>",
                                     b"Delivered-To: reader@example.com",
                                     b"Delivered-To: archive@example.com"]
    received = mailbox.MaildirMessage(data)
    assert received["Message-ID"] == result.message_id
    assert received["Subject"] == "Your order 1042" and received["To"] == "reader@example.com"
    assert "Bcc" not in received and b"\r\n" not in data
    assert result.attempts[0].message == f"delivered as new/{key}"


def test_send_message_arrives_byte_for_byte(maildir):
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = "Shop <shop@example.com>"
    msg["To"] = "reader@example.com"
    msg["Subject"] = "Invoice 7"
    msg["Date"] = "Tue, 02 Jun 2026 10:00:00 +0000"
    msg["Message-ID"] = "<invoice-7@shop.example.com>"
    msg.set_content("Your invoice is attached.\n.A line with a dot.\n", cte="7bit")
    msg.add_alternative("<p>Your invoice is attached.</p>\n", subtype="html", cte="7bit")
    msg.add_attachment(b"%PDF-1.4 invoice\x00\x01", maintype="application", subtype="pdf",
                       filename="invoice-7.pdf")
    msg.set_boundary("outer-boundary-7")
    msg.get_payload(0).set_boundary("inner-boundary-7")
    sent = msg.as_bytes()  # what the caller hands over, CRLF line ends

    result = send_message(None, msg, queue=False)
    assert (result.status, result.server) == ("sent", "mail-archive"), result.error

    _key, data = only_message(maildir)
    assert data == (b"Return-Path: <shop@example.com>\n"
                    b"Delivered-To: reader@example.com\n" + sent.replace(b"\r\n", b"\n"))


def test_a_missing_maildir_without_create_fails_over_and_keeps_the_email(entry_point_app, mail_root):
    gone = mail_root / "Gone"
    for sub in ("tmp", "new", "cur"):
        (gone / sub).mkdir(parents=True)
    with entry_point_app.app_context():
        save_server(None, server_name="mail-gone", method="maildir",
                    options={"path": str(gone)}, is_global=True)
        db.session.commit()
        for sub in ("tmp", "new", "cur"):
            (gone / sub).rmdir()
        gone.rmdir()  # removed after the server was saved
        result = send_mail(None, to=["reader@example.com"], sender="shop@example.com",
                           subject="Lost?", text="Not lost.", queue=False)
        assert result.status == "deferred" and result.email_id is not None
        assert "server misconfigured" in result.error and "does not exist" in result.error
        db.session.remove()
