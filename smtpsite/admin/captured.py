"""Captured mail: what the built-in mail catcher received, for global administrators.

Captured mail can belong to any site (the catcher does not know which site sent it), so
only global administrators see it. A message's HTML is shown in a sandboxed frame whose
content comes from its own route with a policy that loads nothing remote and runs no script.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from io import BytesIO

from flask import Response, abort, current_app, flash, redirect, request, send_file
from flask_admin import expose
from flask_admin.helpers import get_redirect_target
from markupsafe import Markup
from sqlalchemy import delete, func, select

from smtpsite.admin import scoping
from smtpsite.extensions import db
from smtpsite.models import CapturedMessage

# The policy of the HTML frame: nothing from anywhere (no scripts, no remote images, fonts
# or styles, no forms), inline styles and data: images only; framable by the panel alone;
# and a sandbox (opaque origin, no scripts) even when the route is opened on its own.
FRAME_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox")
# Downloads never render in the panel's origin.
DOWNLOAD_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"
RAW_PREVIEW_LIMIT = 200_000  # characters of raw source shown on the page (the download is whole)
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;]+')


@dataclass
class Attachment:
    """A part of a message other than its text and HTML bodies."""

    filename: str
    content_type: str
    data: bytes
    content_id: str = ""


@dataclass
class ParsedMessage:
    """What the details page shows of a raw message."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)


def safe_filename(name: str | None, fallback: str) -> str:
    """A download name with no path, control or shell-special characters."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[/\\]", name)[-1]  # no directories
    name = _UNSAFE_NAME.sub("_", name).strip(" .")
    return name[:150] or fallback


def _part_text(part: EmailMessage) -> str:
    try:
        return part.get_content()
    except Exception:  # unknown charset or broken encoding: show what can be read
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", "replace")


def _header_items(message: EmailMessage) -> list[tuple[str, str]]:
    items = []
    for name, value in message.raw_items():
        try:
            items.append((name, str(policy.default.header_fetch_parse(name, value))))
        except Exception:  # a malformed header is shown as it came
            items.append((name, str(value)))
    return items


def parse_message(raw: bytes) -> ParsedMessage:
    """Split ``raw`` into headers, text body, HTML body and the other parts."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    html_part = message.get_body(preferencelist=("html",))
    text_part = message.get_body(preferencelist=("plain",))
    parsed = ParsedMessage(headers=_header_items(message))
    parsed.html = _part_text(html_part) if html_part is not None else None
    parsed.text = _part_text(text_part) if text_part is not None else None
    for part in message.walk():
        if part.is_multipart() or part is html_part or part is text_part:
            continue
        number = len(parsed.attachments) + 1
        parsed.attachments.append(Attachment(
            filename=safe_filename(part.get_filename(), f"part-{number}"),
            content_type=part.get_content_type(),
            data=part.get_payload(decode=True) or b"",
            content_id=(part.get("Content-ID") or "").strip().strip("<>"),
        ))
    if parsed.html is not None:
        parsed.html = _inline_images(parsed.html, parsed.attachments)
    return parsed


def _inline_images(html: str, attachments: list[Attachment]) -> str:
    """Point ``cid:`` references at data: URLs, the only images the frame may load."""
    for item in attachments:
        if item.content_id and item.content_type.startswith("image/"):
            data = base64.b64encode(item.data).decode("ascii")
            html = html.replace(f"cid:{item.content_id}", f"data:{item.content_type};base64,{data}")
    return html


def human_size(size: int) -> str:
    """1234567 -> '1.2 MB'."""
    value = float(size)
    for unit in ("bytes", "KB", "MB"):
        if value < 1024 or unit == "MB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"


def _subject_link(view, _context, model: CapturedMessage, _name) -> Markup:
    url = view.get_url(".details_view", id=model.id)
    return Markup('<a href="{}">{}</a>').format(url, model.subject or "(no subject)")


def _download(data: bytes, name: str, mimetype: str) -> Response:
    response = send_file(BytesIO(data), mimetype=mimetype, as_attachment=True,
                         download_name=name, max_age=0)
    response.headers["Content-Security-Policy"] = DOWNLOAD_POLICY
    response.headers["Cache-Control"] = "no-store"
    return response


class CapturedMailView(scoping.ScopedModelView):
    """``/admin/captured/``: list, read, download and delete captured messages."""

    global_only = True
    can_create = False
    can_edit = False
    can_delete = True
    can_view_details = True
    list_template = "admin/captured/list.html"
    column_list = ("received_at", "mail_from", "rcpt_tos", "subject", "size")
    column_labels = {"received_at": "Received", "mail_from": "From", "rcpt_tos": "To",
                     "message_id": "Message-ID"}
    column_searchable_list = ("mail_from", "rcpt_tos", "subject", "message_id")
    column_sortable_list = ("received_at", "mail_from", "subject", "size")
    column_default_sort = [("received_at", True), ("id", True)]
    column_formatters = {
        "received_at": lambda v, c, m, n: m.received_at.strftime("%Y-%m-%d %H:%M:%S"),
        "rcpt_tos": lambda v, c, m, n: ", ".join(m.rcpt_tos or []),
        "subject": _subject_link,
        "size": lambda v, c, m, n: human_size(m.size),
    }

    def catcher_status(self) -> Markup:
        """Where the catcher listens, for the list page."""
        config = current_app.config
        if not config["SMTPSITE_CATCHER_ENABLED"]:
            return Markup("The mail catcher is off (<code>SMTPSITE_CATCHER_ENABLED</code>).")
        return Markup("The mail catcher takes mail at <code>127.0.0.1:{}</code> (started by "
                      "<code>smtpsite serve</code>, or alone by <code>smtpsite catcher</code>)."
                      ).format(config["SMTPSITE_CATCHER_PORT"])

    @expose("/details/")
    def details_view(self):
        """One message: summary, HTML in a sandboxed frame, text, attachments, headers, raw."""
        message = self.get_one(request.args.get("id"))
        parsed = parse_message(message.raw)
        raw_text = message.raw[:RAW_PREVIEW_LIMIT].decode("utf-8", "replace")
        return self.render("admin/captured/details.html", message=message, parsed=parsed,
                           raw_text=raw_text, raw_cut=len(message.raw) > RAW_PREVIEW_LIMIT,
                           size=human_size(message.size),
                           return_url=get_redirect_target() or self.get_url(".index_view"))

    @expose("/html/<int:message_id>/")
    def html_view(self, message_id: int):
        """The HTML part alone, for the details page's sandboxed frame."""
        html = parse_message(self.get_one(message_id).raw).html
        if html is None:
            abort(404)
        response = Response(html, mimetype="text/html")
        response.headers["Content-Security-Policy"] = FRAME_POLICY
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @expose("/raw/<int:message_id>/")
    def raw_view(self, message_id: int):
        """The message exactly as received, as a text download."""
        message = self.get_one(message_id)
        return _download(message.raw, f"message-{message.id}.eml", "text/plain")

    @expose("/attachment/<int:message_id>/<int:number>/")
    def attachment_view(self, message_id: int, number: int):
        """One attachment (numbered from 1), always as a download."""
        attachments = parse_message(self.get_one(message_id).raw).attachments
        if not 1 <= number <= len(attachments):
            abort(404)
        item = attachments[number - 1]
        return _download(item.data, item.filename, "application/octet-stream")

    @expose("/delete-all/", methods=("GET", "POST"))
    def delete_all_view(self):
        """Ask, then delete every captured message (CSRF-checked like every POST)."""
        if request.method == "POST":
            deleted = db.session.execute(delete(CapturedMessage)).rowcount
            db.session.commit()
            flash(f"{deleted} captured message(s) deleted.", "success")
            return redirect(self.get_url(".index_view"))
        count = db.session.execute(select(func.count()).select_from(CapturedMessage)).scalar_one()
        return self.render("admin/captured/delete_all.html", count=count)

