"""The Audit log screen (read-only), and the hook that makes the signed-in user the actor.

Global administrators see every entry; a site administrator sees the entries of their
sites (changes to global things, users and servers shared by several sites are for
global administrators only).
"""

from __future__ import annotations

import json

from flask import Flask, g, request
from flask_admin import Admin
from flask_admin.contrib.sqla.filters import (
    BaseSQLAFilter,
    DateTimeBetweenFilter,
    DateTimeGreaterFilter,
    DateTimeSmallerFilter,
    FilterEqual,
    FilterLike,
)
from flask_login import current_user
from markupsafe import Markup, escape
from sqlalchemy import select

from smtpsite import audit
from smtpsite.admin import scoping
from smtpsite.extensions import db
from smtpsite.models import AuditEntry, Site

OBJECT_TYPES = ("site", "server", "setting", "user", "email")


class _SiteFilter(BaseSQLAFilter):
    """The entry's site by code name."""

    def __init__(self) -> None:
        super().__init__(AuditEntry.site_id, "Site (code name)")

    def apply(self, query, value, alias=None):
        wanted = select(Site.id).where(Site.code_key == value.strip().lower())
        return query.filter(AuditEntry.site_id.in_(wanted))

    def operation(self) -> str:
        return "is"


def _json(_view, _context, entry: AuditEntry, name: str) -> Markup:
    value = getattr(entry, name)
    if value is None:
        return Markup('<span class="text-muted">-</span>')
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return Markup(f"<pre class='audit-json'>{escape(text)}</pre>")


def _site(_view, _context, entry: AuditEntry, _name) -> str:
    if entry.site_id is None:
        return ""
    if "audit_sites" not in g:
        g.audit_sites = dict(db.session.execute(select(Site.id, Site.code_name)).all())
    return g.audit_sites.get(entry.site_id, str(entry.site_id))


class AuditView(scoping.ScopedModelView):
    """Who changed what and when; nothing here can be changed."""

    can_create = False
    can_edit = False
    can_delete = False
    can_view_details = True
    column_default_sort = ("id", True)
    column_list = ("at", "actor", "channel", "action", "object_type", "object_id", "site_id",
                   "summary")
    column_details_list = ("at", "actor", "channel", "action", "object_type", "object_id",
                           "site_id", "summary", "before", "after")
    column_labels = {"at": "When (UTC)", "object_type": "Object", "object_id": "Id",
                     "site_id": "Site"}
    column_formatters = {"site_id": _site}
    column_formatters_detail = {"site_id": _site, "before": _json, "after": _json}
    column_filters = (
        FilterEqual(AuditEntry.object_type, "Object type", options=[(t, t) for t in OBJECT_TYPES]),
        FilterLike(AuditEntry.actor, "Actor"),
        FilterEqual(AuditEntry.channel, "Channel", options=[("panel", "panel"), ("cli", "cli")]),
        _SiteFilter(),
        DateTimeGreaterFilter(AuditEntry.at, "When"),
        DateTimeSmallerFilter(AuditEntry.at, "When"),
        DateTimeBetweenFilter(AuditEntry.at, "When"),
    )

    def scope(self):
        return scoping.site_column_filter(AuditEntry.site_id)


def _set_panel_actor() -> None:
    """Changes made in this request are the signed-in user's."""
    path = request.path
    if not path.startswith("/admin") or path.startswith("/admin/static/"):
        return
    if not current_user.is_authenticated:
        return
    g.audit_token = audit.set_actor(current_user.email, "panel")


def _reset_panel_actor(_exc: BaseException | None) -> None:
    token = g.pop("audit_token", None)
    if token is not None:
        audit.reset_actor(token)


def add_audit_view(app: Flask, admin: Admin) -> None:
    """Register the Audit log screen and the panel's actor hooks."""
    admin.add_view(AuditView(AuditEntry, name="Audit log", endpoint="audit"))
    app.before_request(_set_panel_actor)
    app.teardown_request(_reset_panel_actor)
