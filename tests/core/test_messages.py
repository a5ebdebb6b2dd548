"""Building messages: formats, headers, attachments, encodings, and bad input refused."""

from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from smtpsite.messages import Attachment, MessageError, build_message, prepare_message

BASE = {"sender": "Shop <shop@example.com>", "to": ["a@example.com"], "subject": "Hello"}


def parse(data: bytes) -> EmailMessage:
    """Parse wire bytes as a mail store would: CRLF line ends become local ones."""
    return message_from_bytes(data.replace(b"\r\n", b"\n"), policy=policy.default)


def test_both_format_is_html_with_a_text_alternative():
    prepared = build_message(**BASE, html="<p>Hi <b>there</b></p>", email_format="both")
    msg = parse(prepared.outgoing.data)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().strip() == "Hi there"
    assert msg.get_body(("html",)).get_content().strip() == "<p>Hi <b>there</b></p>"


def test_html_and_plaintext_formats():
    html_only = parse(build_message(**BASE, html="<p>x</p>", text="x", email_format="html")
                      .outgoing.data)
    assert html_only.get_content_type() == "text/html"
    plain = parse(build_message(**BASE, html="<p>Only <i>html</i></p>", email_format="plaintext")
                  .outgoing.data)
    assert plain.get_content_type() == "text/plain"
    assert plain.get_content().strip() == "Only html"
    text_given = parse(build_message(**BASE, text="just text", email_format="html").outgoing.data)
    assert text_given.get_content_type() == "text/plain"


def test_non_ascii_subject_and_names_survive_the_wire():
    prepared = build_message(
        sender="Jörg Müller <jorg@example.com>", to=["Zoë <zoe@example.com>"],
        subject="Grüße – ünïcödé ✓ " * 6, text="Ça va? " * 400, email_format="plaintext",
    )
    data = prepared.outgoing.data
    assert data.isascii()  # 7-bit clean: any server takes it without 8BITMIME
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    msg = parse(data)
    assert msg["Subject"] == "Grüße – ünïcödé ✓ " * 6
    assert msg["From"].addresses[0].display_name == "Jörg Müller"
    assert msg["To"].addresses[0].display_name == "Zoë"
    assert msg.get_content() == "Ça va? " * 400 + "\n"


def test_long_lines_are_wrapped_on_the_wire():
    prepared = build_message(**BASE, text="x" * 5000, email_format="plaintext")
    lines = prepared.outgoing.data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    assert parse(prepared.outgoing.data).get_content().rstrip("\n") == "x" * 5000


def test_bcc_is_in_the_envelope_only_and_priority_headers_are_set():
    prepared = build_message(**BASE, text="t", cc=["c@example.com"], bcc=["hidden@example.com"],
                             priority="high")
    out = prepared.outgoing
    assert out.recipients == ("a@example.com", "c@example.com", "hidden@example.com")
    assert b"hidden@example.com" not in out.data
    msg = parse(out.data)
    assert msg["Bcc"] is None
    assert (msg["X-Priority"], msg["Importance"], msg["Priority"]) == ("1 (Highest)", "high",
                                                                      "urgent")
    assert msg["Message-ID"] == out.message_id and out.message_id.endswith("@example.com>")


def test_attachments_and_inline_images():
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    prepared = build_message(
        **BASE, html='<img src="cid:logo">', email_format="html",
        attachments=[("report.csv", "a,b\n1,2\n", None), ("data.bin", b"\x00\x01", None),
                     Attachment("logo.png", png, "image/png", content_id="logo")],
    )
    msg = parse(prepared.outgoing.data)
    parts = {p.get_filename(): p for p in msg.walk() if p.get_filename()}
    assert parts["report.csv"].get_content_type() == "text/csv"
    assert parts["report.csv"].get_content() == "a,b\n1,2\n"
    assert parts["data.bin"].get_payload(decode=True) == b"\x00\x01"
    assert parts["data.bin"].get_content_type() == "application/octet-stream"
    assert parts["logo.png"].get_payload(decode=True) == png
    assert parts["logo.png"]["Content-ID"] == "<logo>"
    related = [p for p in msg.walk() if p.get_content_type() == "multipart/related"]
    assert related, "an inline image belongs in multipart/related with the HTML"
    assert [(a[0], a[2]) for a in prepared.attachments] == [
        ("report.csv", 8), ("data.bin", 2), ("logo.png", len(png))]


def test_international_domains_go_out_idna_encoded():
    prepared = build_message(sender="shop@bücher.example", to=["kunde@bücher.example"],
                             subject="s", text="t")
    assert prepared.outgoing.sender == "shop@xn--bcher-kva.example"
    assert prepared.outgoing.recipients == ("kunde@xn--bcher-kva.example",)
    assert not prepared.outgoing.smtputf8
    utf8 = build_message(sender="shop@example.com", to=["jörg@example.com"], subject="s", text="t")
    assert utf8.outgoing.smtputf8


class Unreadable:
    filename = "gone.txt"

    class content:  # noqa: N801 - a file-like stand-in whose read fails like a real one
        @staticmethod
        def read():
            raise OSError("disk went away")


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.com"}, "line break"),
        ({"headers": {"X-Tag": "a\nb"}}, "line break"),
        ({"headers": {"Bad Name": "v"}}, "not a valid header name"),
        ({"headers": {"Content-Type": "text/evil"}}, "set by smtpsite"),
        ({"to": []}, "no recipients"),
        ({"to": "a@example.com"}, "not a single string"),
        ({"to": ["nope"]}, "not a valid email address"),
        ({"sender": "a@example.com, b@example.com"}, "must be one email address"),
        ({"reply_to": "x@example.com\r\nBcc: y@example.com"}, "line break"),
        ({"priority": "urgent"}, "priority"),
        ({"attachments": [Unreadable()]}, "cannot be read"),
        ({"attachments": [("", b"x", None)]}, "no file name"),
        ({"attachments": [("a.txt", b"x", "not a type")]}, "not a MIME type"),
        ({"attachments": ["just-a-string"]}, "attachment must be"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(changes, fragment):
    with pytest.raises(MessageError, match=None) as info:
        build_message(**{**BASE, "text": "t", **changes})
    assert fragment in str(info.value)


def test_no_body_is_refused():
    with pytest.raises(MessageError, match="no body"):
        build_message(**BASE)


def test_prepare_message_strips_bcc_and_keeps_the_callers_object():
    msg = EmailMessage()
    msg["From"] = "shop@example.com"
    msg["To"] = "a@example.com"
    msg["Bcc"] = "hidden@example.com"
    msg["Subject"] = "Ready made"
    msg["Message-ID"] = "<fixed-id@example.com>"
    msg.set_content("body")
    prepared = prepare_message(msg)
    assert prepared.message_id == "<fixed-id@example.com>"
    assert prepared.outgoing.recipients == ("a@example.com", "hidden@example.com")
    assert b"hidden@example.com" not in prepared.outgoing.data
    assert msg["Bcc"] == "hidden@example.com"
    assert prepared.bcc == ["hidden@example.com"]


def test_prepare_message_needs_a_sender_and_recipients():
    msg = EmailMessage()
    msg.set_content("x")
    with pytest.raises(MessageError, match="no From header"):
        prepare_message(msg)
    msg["From"] = "a@example.com"
    with pytest.raises(MessageError, match="no recipients"):
        prepare_message(msg)
