"""Building and checking messages: from ``send_mail`` arguments or a ready ``EmailMessage``."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.header import Header
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime, getaddresses, localtime, make_msgid
from html.parser import HTMLParser
from typing import Any

from smtpsite.addresses import (
    AddressError,
    check_address,
    check_header_name,
    check_header_value,
    check_recipients,
    envelope_address,
    mailbox_address,
)
from smtpsite.delivery import OutgoingMessage
from smtpsite.mime_writer import write_simple

# Headers smtpsite writes itself; callers may not set them through ``headers=``.
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From", "To", "Cc", "Bcc", "Reply-To", "Subject", "Message-ID", "Date", "MIME-Version",
        "Content-Type", "Content-Transfer-Encoding", "X-Priority", "Importance", "Priority",
    )
)
PRIORITY_HEADERS = {
    "high": ("1 (Highest)", "high", "urgent"),
    "normal": ("3 (Normal)", "normal", "normal"),
    "low": ("5 (Lowest)", "low", "non-urgent"),
}
FORMATS = ("html", "plaintext", "both")


class _WordsKeepTheirSpaces:
    """Non-ASCII unstructured headers encoded as ``email.header.Header`` encodes them.

    The default policy's folder may break a line between two encoded words at a space of
    the text; RFC 2047 readers drop whitespace between encoded words, so the space is lost
    ("Grüße  日本" can arrive as "Grüße日本"). Encoded words that carry the spaces inside
    them decode to the exact text.
    """

    def fold(self, *, policy: Policy) -> str:
        value = str(self)
        if value.isascii() or policy.utf8:
            return super().fold(policy=policy)
        encoded = Header(value, "utf-8", maxlinelen=policy.max_line_length,
                         header_name=self.name).encode(linesep=policy.linesep)
        return f"{self.name}: {encoded}{policy.linesep}"


class _HeaderClasses(HeaderRegistry):
    """The stdlib's header registry, making each header class once instead of per header.

    ``HeaderRegistry.__getitem__`` builds a new class with ``type()`` on every header set
    or read (a tenth of a send in the profiles); the classes it builds are the same each
    time. Unstructured headers also keep their spaces (``_WordsKeepTheirSpaces``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = super().__getitem__(name)
            if issubclass(made, UnstructuredHeader):
                made = type(made.__name__, (_WordsKeepTheirSpaces, made), {})
            self._made[key] = made
        return made


# Bodies are built 7-bit clean (quoted-printable or base64 where needed), so any server
# takes them without 8BITMIME and no line on the wire comes near the 998-octet limit.
BUILD_POLICY = policy.default.clone(cte_type="7bit", header_factory=_HeaderClasses())
# Serialised with CRLF line ends, as SMTP wants them.
WIRE_POLICY = policy.SMTP.clone(cte_type="7bit", header_factory=BUILD_POLICY.header_factory)
WIRE_POLICY_UTF8 = policy.SMTPUTF8.clone(header_factory=BUILD_POLICY.header_factory)


class MessageError(ValueError):
    """The message cannot be built or sent as given; nothing was sent."""


@dataclass(frozen=True)
class Attachment:
    """A file to attach; give ``content_id`` to embed it in the HTML (``cid:...``)."""

    filename: str
    content: bytes | str
    mimetype: str | None = None
    content_id: str | None = None


@dataclass
class PreparedEmail:
    """A message checked and serialised once, with what the queue shows of it."""

    outgoing: OutgoingMessage
    sender: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: str | None
    subject: str
    text: str | None
    html: str | None
    format: str
    priority: str
    headers: dict[str, str]
    attachments: list[tuple[str, str, int, str | None]] = field(default_factory=list)

    @property
    def message_id(self) -> str:
        """The Message-ID kept for the whole life of the email."""
        return self.outgoing.message_id


class _TextExtractor(HTMLParser):
    """Plain text from HTML, for the text part when only HTML was given."""

    _BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in {"script", "style", "head"}:
            self._skip += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"script", "style", "head"}:
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """A readable plain-text rendering of ``html``."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = re.sub(r"[ \t]+", " ", "".join(parser.parts))
    return re.sub(r"\n\s*\n+", "\n\n", text).strip() + "\n"


def _coerce_attachment(item: Any) -> Attachment:
    if isinstance(item, Attachment):
        att = item
    elif isinstance(item, tuple | list) and len(item) in (2, 3):
        att = Attachment(item[0], item[1], item[2] if len(item) == 3 else None)
    elif all(hasattr(item, a) for a in ("filename", "content")):
        att = Attachment(
            item.filename, item.content, getattr(item, "mimetype", None),
            getattr(item, "content_id", None),
        )
    else:
        raise MessageError(
            "an attachment must be a (filename, content, mimetype) tuple or have "
            "filename and content attributes"
        )
    if not isinstance(att.filename, str) or not att.filename.strip():
        raise MessageError("an attachment has no file name")
    check_header_value("attachment file name", att.filename)
    content = att.content
    if hasattr(content, "read"):
        try:
            content = content.read()
        except OSError as exc:
            raise MessageError(f"attachment {att.filename!r} cannot be read: {exc}") from None
    if not isinstance(content, bytes | str):
        raise MessageError(f"attachment {att.filename!r}: content must be bytes or text")
    mimetype = att.mimetype or mimetypes.guess_type(att.filename)[0] or "application/octet-stream"
    if not re.fullmatch(r"[\w.+-]+/[\w.+-]+", mimetype):
        raise MessageError(f"attachment {att.filename!r}: {mimetype!r} is not a MIME type")
    if att.content_id is not None:
        check_header_value("attachment content id", att.content_id)
    return Attachment(att.filename, content, mimetype, att.content_id)


def build_message(
    *,
    sender: str,
    to: Sequence[str],
    subject: str,
    text: str | None = None,
    html: str | None = None,
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    reply_to: str | None = None,
    attachments: Iterable[Any] = (),
    headers: Mapping[str, str] | None = None,
    priority: str = "normal",
    email_format: str = "html",
) -> PreparedEmail:
    """Check every part, build the MIME message and serialise it once."""
    if email_format not in FORMATS:
        raise MessageError(f"email format {email_format!r} is not one of {', '.join(FORMATS)}")
    if priority not in PRIORITY_HEADERS:
        raise MessageError(f"priority {priority!r} is not one of high, normal, low")
    try:
        sender_header = check_header_value("From", sender)
        sender_addr = mailbox_address(sender_header, "sender")
        to_list = check_recipients(to, "to")
        cc_list = check_recipients(cc, "cc")
        bcc_list = check_recipients(bcc, "bcc")
        reply = None
        if reply_to:
            mailbox_address(check_header_value("Reply-To", reply_to), "reply_to")
            reply = reply_to
        check_header_value("Subject", subject if isinstance(subject, str) else "")
        extra = dict(headers or {})
        for name, value in extra.items():
            check_header_name(name)
            check_header_value(name, value)
            if name.lower() in RESERVED_HEADERS:
                raise MessageError(f"header {name!r} is set by smtpsite; use the argument for it")
    except AddressError as exc:
        raise MessageError(str(exc)) from None
    if not isinstance(subject, str):
        raise MessageError("subject must be text")
    if not (to_list or cc_list or bcc_list):
        raise MessageError("the message has no recipients")
    if text is None and html is None:
        raise MessageError("the message has no body: give text, html or both")
    files = [_coerce_attachment(a) for a in attachments]

    if email_format == "plaintext" or html is None:
        text_part, html_part = (text if text is not None else html_to_text(html or "")), None
    elif email_format == "both":
        text_part, html_part = (text if text is not None else html_to_text(html)), html
    else:
        text_part, html_part = None, html

    headers_out = [("From", sender_header)]
    if to_list:
        headers_out.append(("To", ", ".join(to)))
    if cc_list:
        headers_out.append(("Cc", ", ".join(cc)))
    if reply:
        headers_out.append(("Reply-To", reply))
    x_priority, importance, prio = PRIORITY_HEADERS[priority]
    message_id = make_msgid(domain=_msgid_domain(sender_addr))
    headers_out += [
        ("Subject", subject), ("Date", format_datetime(localtime())), ("Message-ID", message_id),
        ("X-Priority", x_priority), ("Importance", importance), ("Priority", prio),
        *extra.items(),
    ]
    env_sender, env_rcpts, utf8 = _envelope(sender_addr, [*to_list, *cc_list, *bcc_list])
    # The common simple message is written directly (byte-equal); the rest by the email package.
    data = None if files or utf8 else write_simple(headers_out, text_part, html_part)
    if data is None:
        msg = EmailMessage(policy=BUILD_POLICY)
        try:
            for name, value in headers_out:
                msg[name] = value
        except (ValueError, LookupError, AttributeError, TypeError):
            # The email package's header parser refuses (an encoded word that decodes to a
            # line break, "=?utf-8?b?DQo=?=") or trips over (a display name of ".") hostile
            # input.
            raise MessageError(
                "an address, display name or header cannot be encoded as given"
            ) from None
        _set_bodies(msg, text_part, html_part, files)
        data = msg.as_bytes(policy=WIRE_POLICY_UTF8 if utf8 else WIRE_POLICY)
    outgoing = OutgoingMessage(message_id=message_id, sender=env_sender, recipients=env_rcpts,
                               data=data, smtputf8=utf8)
    return PreparedEmail(
        outgoing=outgoing,
        sender=sender_header,
        to=list(to),
        cc=list(cc),
        bcc=list(bcc),
        reply_to=reply,
        subject=subject,
        text=text_part,
        html=html_part,
        format=email_format,
        priority=priority,
        headers=extra,
        attachments=[
            (f.filename, f.mimetype or "", len(_as_bytes(f.content)), f.content_id) for f in files
        ],
    )


def _as_bytes(content: bytes | str) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


def _set_bodies(
    msg: EmailMessage, text: str | None, html: str | None, files: list[Attachment]
) -> None:
    inline = [f for f in files if f.content_id and html is not None]
    regular = [f for f in files if f not in inline]
    if text is not None:
        msg.set_content(text, subtype="plain", charset="utf-8")
        if html is not None:
            msg.add_alternative(html, subtype="html", charset="utf-8")
    else:
        msg.set_content(html or "", subtype="html", charset="utf-8")
    if inline:
        html_part = msg.get_payload()[-1] if msg.is_multipart() else msg
        html_part.make_related()
        for f in inline:
            maintype, subtype = (f.mimetype or "application/octet-stream").split("/", 1)
            html_part.add_related(
                _as_bytes(f.content), maintype=maintype, subtype=subtype,
                cid=f"<{f.content_id.strip('<>')}>", filename=f.filename, disposition="inline",
            )
    for f in regular:
        maintype, subtype = (f.mimetype or "application/octet-stream").split("/", 1)
        if maintype == "text" and isinstance(f.content, str):
            msg.add_attachment(f.content, subtype=subtype, filename=f.filename)
        else:
            msg.add_attachment(
                _as_bytes(f.content), maintype=maintype, subtype=subtype, filename=f.filename
            )


def _msgid_domain(address: str) -> str:
    domain = address.rpartition("@")[2]
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "smtpsite.invalid"


def _envelope(sender: str, recipients: list[str]) -> tuple[str, tuple[str, ...], bool]:
    """MAIL FROM, the RCPT TO list (each once) and whether SMTPUTF8 is needed."""
    env_sender, utf8 = envelope_address(sender)
    env_rcpts = []
    for address in recipients:
        rcpt, needs = envelope_address(address)
        env_rcpts.append(rcpt)
        utf8 = utf8 or needs
    return env_sender, tuple(dict.fromkeys(env_rcpts)), utf8


def prepare_message(
    msg: EmailMessage,
    *,
    sender: str | None = None,
    recipients: Sequence[str] | None = None,
) -> PreparedEmail:
    """Check a ready ``EmailMessage`` and serialise it: envelope from its headers, Bcc removed."""
    if not isinstance(msg, EmailMessage):
        raise MessageError("send_message needs an email.message.EmailMessage")
    try:
        for name, value in msg.items():
            check_header_value(name, str(value))
        from_header = sender or msg.get("Sender") or msg.get("From")
        if not from_header:
            raise MessageError("the message has no From header and no sender was given")
        sender_addr = mailbox_address(str(from_header), "sender")
        if recipients is not None:
            rcpts = check_recipients(recipients, "recipients")
        else:
            pairs = getaddresses([str(v) for h in ("To", "Cc", "Bcc") for v in msg.get_all(h, [])])
            rcpts = [check_address(addr) for _name, addr in pairs if addr]
    except AddressError as exc:
        raise MessageError(str(exc)) from None
    if not rcpts:
        raise MessageError("the message has no recipients")
    msg = _copy_message(msg)
    bcc = [addr for _n, addr in getaddresses([str(v) for v in msg.get_all("Bcc", [])])]
    del msg["Bcc"]
    if msg["Message-ID"] is None:
        msg["Message-ID"] = make_msgid(domain=_msgid_domain(sender_addr))
    if msg["Date"] is None:
        msg["Date"] = format_datetime(localtime())
    env_sender, env_rcpts, utf8 = _envelope(sender_addr, rcpts)
    outgoing = OutgoingMessage(
        message_id=str(msg["Message-ID"]), sender=env_sender, recipients=env_rcpts,
        data=msg.as_bytes(policy=WIRE_POLICY_UTF8 if utf8 else WIRE_POLICY), smtputf8=utf8,
    )
    body = msg.get_body(("html", "plain"))
    text_body = msg.get_body(("plain",))
    html_body = msg.get_body(("html",))
    return PreparedEmail(
        outgoing=outgoing,
        sender=str(msg.get("From", sender_addr)),
        to=[a for _n, a in getaddresses([str(v) for v in msg.get_all("To", [])])],
        cc=[a for _n, a in getaddresses([str(v) for v in msg.get_all("Cc", [])])],
        bcc=bcc,
        reply_to=str(msg["Reply-To"]) if msg["Reply-To"] else None,
        subject=str(msg.get("Subject", "")),
        text=text_body.get_content() if text_body is not None else None,
        html=html_body.get_content() if html_body is not None else None,
        format="both" if text_body is not None and html_body is not None
        else ("html" if body is not None and body.get_content_subtype() == "html" else "plaintext"),
        priority="normal",
        headers={},
        attachments=[
            (a.get_filename() or "", a.get_content_type(), len(a.get_payload(decode=True) or b""),
             a.get("Content-ID"))
            for a in msg.iter_attachments()
        ],
    )


def _copy_message(msg: EmailMessage) -> EmailMessage:
    # Work on a copy: the caller's object must not lose its Bcc header.
    return message_from_bytes(msg.as_bytes(policy=policy.default), policy=policy.default)
