"""Writing the common simple message straight to bytes, exactly as the ``email`` package would.

Building a message with ``EmailMessage`` parses every header back into tokens and refolds
it on output: most of the cost of a send. Most messages are simple: a text and/or HTML
body, no attachments, short ASCII headers. For those the email package's output is known
line by line, and this module writes it directly; ``write_simple`` returns None for
anything else, and the caller builds the message with the email package as before.

The output is byte-equal to the email package's (``tests/perf/test_message_bytes.py``
compares the two on generated messages), so the fast path changes no message on the wire.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from email import quoprimime
from email.generator import BytesGenerator

# The build policy's line length (``policy.default``): longer header lines are folded, and
# body lines longer than this are encoded.
MAX_LINE = 78
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
_MAILBOX = rf"(?:{_ATOM}(?: {_ATOM})* <{_ADDR}>|{_ADDR})"
# The header values the email package writes back unchanged, by the kind of header.
_SIMPLE = {
    "address": re.compile(rf"{_MAILBOX}(?:, {_MAILBOX})*"),
    "date": re.compile(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}"),
    "message-id": re.compile(r"<\d+\.\d+\.\d+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?>"),
    # Printable ASCII, not starting or ending with a space.
    "text": re.compile(r"[!-~](?:[ -~]*[!-~])?"),
}
_KIND = {name: "address" for name in ("from", "to", "cc", "reply-to")}
_KIND.update({"date": "date", "message-id": "message-id"})
# Headers the email package parses in a way of their own: never written here.
_SPECIAL = frozenset({
    "resent-date", "orig-date", "sender", "resent-sender", "resent-to", "resent-cc", "bcc",
    "resent-bcc", "resent-from", "mime-version", "content-type", "content-disposition",
    "content-transfer-encoding",
})


def _header_line(name: str, value: str) -> str | None:
    """``Name: value`` with CRLF when the email package would write it so, else None."""
    key = name.lower()
    if key in _SPECIAL or "=?" in value or len(name) + 2 + len(value) > MAX_LINE:
        return None
    if not _SIMPLE[_KIND.get(key, "text")].fullmatch(value):
        return None
    return f"{name}: {value}\r\n"


def _encode_body(text: str) -> tuple[str, str]:
    """The transfer encoding and encoded body the email package picks for UTF-8 text.

    The same choice as ``email.contentmanager``'s text handler under a 7-bit policy:
    7bit when the text is ASCII with short lines, else the shorter of quoted-printable and
    base64 judged on the first ten lines.
    """
    lines = text.encode("utf-8").splitlines()
    body = b"\n".join(lines) + b"\n"
    if max((len(line) for line in lines), default=0) <= MAX_LINE and body.isascii():
        return "7bit", body.decode("ascii")
    sniff = b"\n".join(lines[:10]) + b"\n"
    sniff_qp = quoprimime.body_encode(sniff.decode("latin-1"), MAX_LINE)
    if len(sniff_qp) <= len(binascii.b2a_base64(sniff)):
        if len(lines) <= 10:
            return "quoted-printable", sniff_qp
        return "quoted-printable", quoprimime.body_encode(body.decode("latin-1"), MAX_LINE)
    per_line = MAX_LINE // 4 * 3
    return "base64", "".join(
        binascii.b2a_base64(body[i:i + per_line]).decode("ascii")
        for i in range(0, len(body), per_line)
    )


def _text_part(subtype: str, text: str, mime_version: bool) -> bytes:
    cte, payload = _encode_body(text)
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n'
    if mime_version:
        head += "MIME-Version: 1.0\r\n"
    return (head + "\r\n" + payload.replace("\n", "\r\n")).encode("ascii")


def write_simple(headers: Sequence[tuple[str, str]], text: str | None,
                 html: str | None) -> bytes | None:
    """The wire bytes (CRLF) of a text and/or HTML message, or None when it is not simple.

    ``headers`` come first, in order; then the MIME headers and the bodies, laid out as
    ``EmailMessage.set_content`` (and ``add_alternative`` for both bodies) lay them out.
    """
    lines = []
    for name, value in headers:
        line = _header_line(name, value)
        if line is None:
            return None
        lines.append(line)
    head = "".join(lines).encode("ascii")
    if text is None or html is None:
        subtype, body = ("plain", text) if html is None else ("html", html)
        return head + _text_part(subtype, body or "", mime_version=True)
    # The same quirks as the email package: the HTML part (added as an alternative) carries
    # a MIME-Version of its own, the text part none.
    parts = [_text_part("plain", text, mime_version=False),
             _text_part("html", html, mime_version=True)]
    boundary = BytesGenerator._make_boundary(b"\r\n".join(parts))
    content_type = f'Content-Type: multipart/alternative; boundary="{boundary}"'
    if len(content_type) > MAX_LINE:
        content_type = f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"'
    delimiter = f"--{boundary}".encode("ascii")
    return b"".join([
        head, b"MIME-Version: 1.0\r\n", content_type.encode("ascii"), b"\r\n\r\n",
        delimiter, b"\r\n", parts[0], b"\r\n", delimiter, b"\r\n", parts[1], b"\r\n",
        delimiter, b"--\r\n",
    ])
