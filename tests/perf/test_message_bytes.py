"""The cached header classes build the very bytes the stdlib's own policies build."""

from __future__ import annotations

from email import policy

import pytest

from smtpsite import messages
from smtpsite.messages import Attachment, build_message

CASES = [
    {"to": ["customer@example.com"], "subject": "Your order", "text": "Hello\n"},
    {"to": ["Zoë Ünïcode <zoe@example.com>", "b@example.com"], "cc": ["c@example.com"],
     "subject": "Grüße " * 20, "text": "Grüße\n" * 50, "html": "<p>Grüße</p>",
     "email_format": "both", "reply_to": "Help Desk <help@example.com>",
     "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"}},
    {"to": ["用户@例子.广告"], "subject": "SMTPUTF8", "text": "hi\n"},
    {"to": ["a@example.com"], "subject": "files", "html": "<img src='cid:logo'>",
     "attachments": [Attachment("logo.png", b"\x89PNG" * 100, "image/png", "logo"),
                     Attachment("notes.txt", "some text\n"), ("data.bin", b"\0\1\2" * 999)]},
]


@pytest.mark.parametrize("case", CASES)
def test_bytes_equal_the_stdlib_policies(case, monkeypatch):
    monkeypatch.setattr(messages, "make_msgid", lambda domain=None: "<fixed@example.com>")
    monkeypatch.setattr(messages, "format_datetime", lambda _dt: "Fri, 04 Dec 2026 10:00:00 +0000")
    boundaries = iter(range(10**6))
    monkeypatch.setattr("email.generator.Generator._make_boundary",
                        classmethod(lambda cls, text=None: f"==b{next(boundaries)}=="))
    fast = build_message(sender="Shop <shop@example.com>", **case).outgoing.data
    monkeypatch.setattr(messages, "BUILD_POLICY", policy.default.clone(cte_type="7bit"))
    monkeypatch.setattr(messages, "WIRE_POLICY", policy.SMTP.clone(cte_type="7bit"))
    monkeypatch.setattr(messages, "WIRE_POLICY_UTF8", policy.SMTPUTF8)
    boundaries = iter(range(10**6))
    stdlib = build_message(sender="Shop <shop@example.com>", **case).outgoing.data
    assert fast == stdlib
