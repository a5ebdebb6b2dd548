"""The faster ways of building a message write the very bytes the email package writes.

Two of them: header classes made once (``messages._HeaderClasses``) instead of per header,
and simple messages written directly (``smtpsite.mime_writer``). Each is compared with the
plain email package on fixed and generated messages.
"""

from __future__ import annotations

import string
from email import message_from_bytes, policy

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from smtpsite import messages
from smtpsite.addresses import LINE_BREAKS
from smtpsite.messages import Attachment, build_message

# Messages the direct writer leaves to the email package: non-ASCII or folded headers,
# SMTPUTF8, attachments.
CASES = [
    {"to": ["Zoë Ünïcode <zoe@example.com>", "b@example.com"], "cc": ["c@example.com"],
     "subject": "Grüße " * 20, "text": "Grüße\n" * 50, "html": "<p>Grüße</p>",
     "email_format": "both", "reply_to": "Help Desk <help@example.com>",
     "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"}},
    {"to": ["用户@例子.广告"], "subject": "SMTPUTF8", "text": "hi\n"},
    {"to": ["a@example.com"], "subject": "files", "html": "<img src='cid:logo'>",
     "attachments": [Attachment("logo.png", b"\x89PNG" * 100, "image/png", "logo"),
                     Attachment("notes.txt", "some text\n"), ("data.bin", b"\0\1\2" * 999)]},
]
# Messages the direct writer takes: every body encoding, both layouts, all header kinds.
SIMPLE_CASES = [
    {"to": ["customer@example.com"], "subject": "Your order 42 has shipped",
     "text": "Hello,\n\nyour order has shipped.\n"},
    {"to": ["Ann Lee <ann@example.com>", "b@example.com"], "cc": ["c@example.com"],
     "reply_to": "Help Desk <help@example.com>", "subject": "Both", "text": "plain\n",
     "html": "<p>html</p>", "email_format": "both", "priority": "high",
     "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"}},
    {"to": ["a@example.com"], "subject": "Umlauts, few lines (quoted-printable)",
     "text": "Grüße aus Köln\n"},
    {"to": ["a@example.com"], "subject": "Umlauts, many lines", "text": "Grüße\nä\n" * 30},
    {"to": ["a@example.com"], "subject": "Mostly non-Latin (base64)", "text": "日本語のテキスト\n" * 12},
    {"to": ["a@example.com"], "subject": "A long ASCII line", "text": "x" * 200 + "\nend"},
    {"to": ["a@example.com"], "subject": "HTML only", "html": "<p>" + "word " * 40 + "</p>"},
    {"to": ["a@example.com"], "subject": "Empty text", "text": ""},
    {"to": ["a@example.com"], "subject": "CR and CRLF line ends", "text": "a\rb\r\nc\n\n"},
]
BOUNDARY_STYLES = {
    "the email package's": lambda n: "=" * 15 + f"{n:019d}" + "==",
    "short": lambda n: f"==b{n}==",
}


def _fix_random_parts(monkeypatch, boundary_style) -> None:
    """The same Message-ID, Date and boundaries on every build, so two builds compare."""
    monkeypatch.setattr(messages, "make_msgid", lambda domain=None: f"<1.2.3@{domain}>")
    monkeypatch.setattr(messages, "format_datetime", lambda _dt: "Fri, 04 Dec 2026 10:00:00 +0000")
    counter = iter(range(10**9))
    monkeypatch.setattr("email.generator.Generator._make_boundary",
                        classmethod(lambda cls, text=None: boundary_style(next(counter))))


def _direct_and_email_package(monkeypatch, case, boundary_style) -> tuple[bytes, bytes, bool]:
    """The message built as smtpsite builds it, and by the email package alone."""
    written = []

    def spy(*args):
        data = real_writer(*args)
        written.append(data is not None)
        return data

    real_writer = messages.write_simple
    with monkeypatch.context() as patch:
        _fix_random_parts(patch, boundary_style)
        patch.setattr(messages, "write_simple", spy)
        fast = build_message(sender="Shop <shop@example.com>", **case).outgoing.data
    with monkeypatch.context() as patch:
        _fix_random_parts(patch, boundary_style)
        patch.setattr(messages, "write_simple", lambda *args: None)
        reference = build_message(sender="Shop <shop@example.com>", **case).outgoing.data
    return fast, reference, any(written)


@pytest.mark.parametrize("style", BOUNDARY_STYLES.values(), ids=BOUNDARY_STYLES.keys())
@pytest.mark.parametrize("case", SIMPLE_CASES)
def test_simple_messages_are_written_directly_with_the_same_bytes(case, style, monkeypatch):
    fast, reference, direct = _direct_and_email_package(monkeypatch, case, style)
    assert direct, "the direct writer should have taken this message"
    assert fast == reference
    parsed = message_from_bytes(fast, policy=policy.default)
    body = parsed.get_body(("plain", "html"))
    assert body.get_content().replace("\r\n", "\n").replace("\r", "\n").rstrip("\n") == (
        case.get("text", case.get("html")) or "").replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")


@pytest.mark.parametrize("case", CASES)
def test_messages_it_cannot_write_go_to_the_email_package(case, monkeypatch):
    fast, reference, direct = _direct_and_email_package(monkeypatch, case,
                                                        BOUNDARY_STYLES["short"])
    assert not direct
    assert fast == reference


_ATOM = st.text(alphabet=string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-",
                min_size=1, max_size=8)
_DOMAIN = st.lists(st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1,
                           max_size=10), min_size=2, max_size=3).map(".".join)
_ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}",
                     st.lists(_ATOM, min_size=1, max_size=2).map(".".join), _DOMAIN)
# Display names the writer takes, and some it must leave to the email package.
_NAME = st.one_of(st.lists(_ATOM, min_size=1, max_size=3).map(" ".join),
                  st.sampled_from(["J. Smith", "Zoë", '"Quoted"', "a  b", "x (comment)"]))
_MAILBOX = st.one_of(_ADDRESS, st.builds(lambda n, a: f"{n} <{a}>", _NAME, _ADDRESS))
_PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)
# Mostly text the writer takes (printable ASCII), sometimes text it must leave alone.
_HEADER_TEXT = st.one_of(st.text(alphabet=_PRINTABLE, max_size=60),
                         st.text(alphabet=_PRINTABLE | st.sampled_from("äß日\t"), max_size=90))
_BODY = st.text(alphabet=_PRINTABLE | st.sampled_from("\n\n\r\näöü日本"), max_size=400)


def _usable(value: str) -> bool:
    return not any(ch in value for ch in "\r\n")


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(to=st.lists(_MAILBOX, min_size=1, max_size=4), cc=st.lists(_MAILBOX, max_size=2),
       subject=_HEADER_TEXT, text=st.none() | _BODY, html=st.none() | _BODY,
       email_format=st.sampled_from(messages.FORMATS),
       extra=st.dictionaries(st.sampled_from(["X-Campaign", "x-tag", "List-Id"]),
                             _HEADER_TEXT, max_size=2))
def test_generated_messages_have_the_same_bytes_either_way(monkeypatch, to, cc, subject, text,
                                                           html, email_format, extra):
    if text is None and html is None:
        text = ""
    case = {"to": to, "cc": cc, "subject": subject, "text": text, "html": html,
            "email_format": email_format,
            "headers": {k: v for k, v in extra.items() if v.strip() and _usable(v)}}
    try:
        fast, reference, _ = _direct_and_email_package(monkeypatch, case,
                                                       BOUNDARY_STYLES["the email package's"])
    except messages.MessageError:
        return  # refused as it should be either way (checked before any building)
    assert fast == reference


@pytest.mark.parametrize("case", [c for c in CASES if c["subject"].isascii()])
def test_the_cached_header_classes_write_the_stdlib_policies_bytes(case, monkeypatch):
    monkeypatch.setattr(messages, "write_simple", lambda *args: None)
    _fix_random_parts(monkeypatch, BOUNDARY_STYLES["short"])
    fast = build_message(sender="Shop <shop@example.com>", **case).outgoing.data
    monkeypatch.setattr(messages, "BUILD_POLICY", policy.default.clone(cte_type="7bit"))
    monkeypatch.setattr(messages, "WIRE_POLICY", policy.SMTP.clone(cte_type="7bit"))
    monkeypatch.setattr(messages, "WIRE_POLICY_UTF8", policy.SMTPUTF8)
    _fix_random_parts(monkeypatch, BOUNDARY_STYLES["short"])
    stdlib = build_message(sender="Shop <shop@example.com>", **case).outgoing.data
    assert fast == stdlib


_NON_ASCII_TEXT = st.text(alphabet=st.characters(blacklist_characters=LINE_BREAKS,
                                                 blacklist_categories=("Cs",)),
                          min_size=1, max_size=120).filter(lambda v: not v.isascii())


@hsettings(max_examples=300, deadline=None)
@given(value=_NON_ASCII_TEXT)
def test_non_ascii_header_text_arrives_exactly(value):
    # The email package's own folder can lose a space between two encoded words
    # ("0ࠀࠀࠀࠀࠀࠀࠀࠀࠀࠀࠀࠀࠀࠀ  \x80" arrived without its spaces); smtpsite's must not.
    prepared = build_message(sender="shop@example.com", to=["a@example.com"], subject=value,
                             text="x", headers={"X-Note": value})
    parsed = message_from_bytes(prepared.outgoing.data, policy=policy.default)
    assert str(parsed["Subject"]) == value
    assert str(parsed["X-Note"]) == value
    assert all(len(line) <= 78 for line in prepared.outgoing.data.split(b"\r\n"))


def test_the_space_the_email_package_loses_is_kept():
    value = "0" + "\u0800" * 14 + "  \x80"
    prepared = build_message(sender="shop@example.com", to=["a@example.com"], subject=value,
                             text="x")
    assert str(message_from_bytes(prepared.outgoing.data, policy=policy.default)["Subject"]) == value
