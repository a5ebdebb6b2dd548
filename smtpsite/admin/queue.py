"""The admin screens of the queue: Email queue, Sent emails, and the queue panel of the home page.

Both lists go through ``ScopedModelView``: a site administrator sees, resends and deletes
only the email of their sites (global email is for global administrators). Bulk actions
on everything ("all failed", "all") show a confirmation page first and act on what the
user may see only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, abort, flash, g, redirect, request, url_for
from flask_admin import Admin, expose
from flask_admin.actions import action
from flask_admin.contrib.sqla.filters import BaseSQLAFilter, FilterEqual, FilterLike
from flask_admin.model.template import LinkRowAction
from markupsafe import Markup, escape
from sqlalchemy import Text, and_, cast, or_, select
from sqlalchemy.sql.elements import ColumnElement

from smtpsite import queue
from smtpsite.addresses import AddressError
from smtpsite.admin import scoping
from smtpsite.extensions import db
from smtpsite.models import EMAIL_PRIORITY, EMAIL_STATUSES, Email, Site, SmtpServer

PRIORITY_NAMES = {value: name for name, value in EMAIL_PRIORITY.items()}
# Bulk operations: (what, which emails) -> label.
BULK = {
    ("resend", "failed"): "Resend all failed emails",
    ("resend", "all"): "Resend all emails",
    ("delete", "failed"): "Delete all failed emails",
    ("delete", "all"): "Delete all emails",
}


class _ContainsAny(BaseSQLAFilter):
    """"Contains", searched in several columns at once (to/cc/bcc, or both bodies)."""

    def __init__(self, columns: list[Any], name: str) -> None:
        super().__init__(columns[0], name)
        self.columns = columns

    def apply(self, query, value, alias=None):
        pattern = f"%{value}%"
        return query.filter(or_(*(cast(c, Text).ilike(pattern) for c in self.columns)))

    def operation(self) -> str:
        return "contains"


class _SiteFilter(BaseSQLAFilter):
    """The email's site by code name, or ``global`` for email of no site."""

    def __init__(self) -> None:
        super().__init__(Email.site_id, "Site (code name, or global)")

    def apply(self, query, value, alias=None):
        value = value.strip().lower()
        if value in ("", "global"):
            return query.filter(Email.site_id.is_(None))
        return query.filter(Email.site_id.in_(select(Site.id).where(Site.code_key == value)))

    def operation(self) -> str:
        return "is"


def _site_names() -> dict[int, str]:
    # One query per request, however many rows the list shows.
    if "queue_site_names" not in g:
        g.queue_site_names = dict(db.session.execute(select(Site.id, Site.code_name)).all())
    return g.queue_site_names


def _site(view, context, model, name) -> str:
    return _site_names().get(model.site_id, "?") if model.site_id else "(global)"


def _addresses(view, context, model, name) -> str:
    return ", ".join(getattr(model, name) or [])


def _attempts(view, context, model, name) -> Markup:
    rows = "".join(
        f"<tr><td>{escape(a.at)}</td><td>{escape(a.server_name)}</td><td>{escape(a.outcome)}"
        f"</td><td>{escape(a.code or '')}</td><td>{escape(a.message)}</td></tr>"
        for a in model.attempts
    )
    if not rows:
        return Markup('<span class="text-muted">not tried yet</span>')
    return Markup('<table class="table table-sm table-bordered email-attempts"><thead><tr>'
                  "<th>When</th><th>Server</th><th>Outcome</th><th>Code</th><th>Message</th>"
                  f"</tr></thead><tbody>{rows}</tbody></table>")


class EmailQueueView(scoping.ScopedModelView):
    """Emails waiting, being sent, failed or expired; resend or delete them."""

    statuses: tuple[str, ...] = tuple(s for s in EMAIL_STATUSES if s != "sent")
    bulk_operations = BULK
    list_template = "admin/queue/list.html"
    can_create = False
    can_edit = False
    can_delete = True
    can_view_details = True
    column_default_sort = ("id", True)
    column_list = ("id", "created_at", "status", "priority", "site_id", "sender", "to",
                   "subject", "attempt_count", "last_result")
    column_details_list = ("id", "message_id", "status", "priority", "site_id", "sender", "to",
                           "cc", "bcc", "reply_to", "subject", "created_at", "scheduled_at",
                           "expires_at", "first_attempt_at", "next_attempt_at", "sent_at",
                           "sent_by", "last_result", "attempts")
    column_labels = {"site_id": "Site", "sender": "From", "attempt_count": "Attempts",
                     "last_result": "Last result", "created_at": "Created"}
    column_formatters = {
        "site_id": _site, "to": _addresses, "cc": _addresses, "bcc": _addresses,
        "priority": lambda v, c, m, n: PRIORITY_NAMES.get(m.priority, m.priority),
    }
    column_formatters_detail = {**column_formatters, "attempts": _attempts}
    column_filters = (
        FilterLike(Email.sender, "From"),
        FilterLike(Email.subject, "Subject"),
        _ContainsAny([Email.text_body, Email.html_body], "Body"),
        FilterLike(Email.last_result, "Last result"),
        _ContainsAny([Email.to, Email.cc, Email.bcc], "To (to, cc, bcc)"),
        FilterEqual(Email.priority, "Priority",
                    options=[(str(v), n) for n, v in EMAIL_PRIORITY.items()]),
        FilterEqual(Email.status, "Status", options=[(s, s) for s in EMAIL_STATUSES]),
        _SiteFilter(),
    )

    def scope(self) -> ColumnElement[bool]:
        return and_(scoping.site_column_filter(Email.site_id), Email.status.in_(self.statuses))

    def delete_model(self, model: Email) -> bool:
        # Through the queue, which never deletes an email while a worker sends it.
        if queue.delete_emails(and_(queue.by_ids([model.id]), self.scope())):
            return True
        flash(f"Email {model.id} is being sent right now; it was not deleted.", "error")
        return False

    @action("resend", "Resend", "Send the selected emails again (same Message-ID)?")
    def action_resend(self, ids: list[str]) -> None:
        """Resend the selected emails."""
        count = queue.resend(and_(queue.by_ids(int(i) for i in ids), self.scope()),
                             "resent from the admin panel")
        flash(f"{count} email(s) will be sent again.", "success")

    @expose("/bulk/<operation>/<which>/", methods=("GET", "POST"))
    def bulk_view(self, operation: str, which: str):
        """Resend or delete all (failed) emails of this list, after a confirmation page."""
        label = BULK.get((operation, which))
        if label is None:
            abort(404)
        where = and_(self.scope(), Email.status == "failed") if which == "failed" else self.scope()
        if request.method == "POST":  # CSRFProtect has checked the token
            if operation == "resend":
                count = queue.resend(where, "resent from the admin panel")
                flash(f"{count} email(s) will be sent again.", "success")
            else:
                count = queue.delete_emails(where)
                flash(f"{count} email(s) deleted.", "success")
            return redirect(url_for(".index_view"))
        count = sum(queue.status_counts(where).values())
        return self.render("admin/queue/confirm.html", label=label, count=count,
                           operation=operation)


class SentEmailsView(EmailQueueView):
    """The archive of sent emails; resend one, to its recipients or to another address."""

    statuses = ("sent",)
    bulk_operations: dict = {}
    column_extra_row_actions = [
        LinkRowAction("fa fa-share", lambda _action, row_id, _row: url_for(
            ".resend_to_view", email_id=row_id), title="Resend to another address"),
    ]
    column_list = ("id", "sent_at", "site_id", "sender", "to", "subject", "sent_by")
    column_default_sort = ("sent_at", True)
    column_labels = {**EmailQueueView.column_labels, "sent_by": "Sent through",
                     "sent_at": "Sent"}

    @expose("/bulk/<operation>/<which>/", methods=("GET", "POST"))
    def bulk_view(self, operation: str, which: str):
        """Only the queue has bulk operations."""
        abort(404)

    @expose("/resend-to/<int:email_id>/", methods=("GET", "POST"))
    def resend_to_view(self, email_id: int):
        """Resend an archived email to another address (a copy with Resent-* headers)."""
        email = self.get_one(email_id)
        error = None
        address = (request.form.get("address") or "").strip()
        if request.method == "POST":
            try:
                queue.resend_to(email.id, address)
            except AddressError as exc:
                error = str(exc)
            else:
                flash(f"A copy will be sent to {address}.", "success")
                return redirect(url_for(".index_view"))
        return self.render("admin/queue/resend_to.html", email=email, address=address,
                           error=error)


def summary() -> dict[str, Any]:
    """Queue depth and per-server counts for the home page, cut to what the user may see."""
    counts = queue.status_counts(scoping.site_column_filter(Email.site_id))
    servers = queue.server_counts({"hour": timedelta(hours=1), "day": timedelta(days=1)})
    site_ids = scoping.visible_site_ids()
    if site_ids is not None:
        visible = {f"settings:site:{i}" for i in site_ids}
        visible |= {f"server:{i}" for i in db.session.execute(
            select(SmtpServer.id).where(scoping.server_filter())).scalars()}
        servers = [s for s in servers if s.server_key in visible]
    return {"counts": counts, "depth": counts.get("waiting", 0) + counts.get("sending", 0),
            "servers": servers}


def add_queue_views(app: Flask, admin: Admin) -> None:
    """Register the queue screens and the home page's queue panel."""
    admin.add_view(EmailQueueView(Email, name="Email queue", endpoint="email_queue"))
    admin.add_view(SentEmailsView(Email, name="Sent emails", endpoint="sent_emails"))
    app.context_processor(lambda: {"queue_summary": summary})
