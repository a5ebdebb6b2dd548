"""What the signed-in administrator may see and change, and the scoped base view built on it.

Global administrators see everything. A site administrator sees only their sites, the
servers assigned only to their sites, and data that belongs to those sites. Every list,
count, export, action and single-record look-up goes through the same filter, so guessing
an id gives 404 rather than someone else's record.
"""

from __future__ import annotations

from typing import Any

from flask import abort, redirect, request, url_for
from flask_admin.contrib.sqla import ModelView
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import false, select, true
from sqlalchemy.sql.elements import ColumnElement

from smtpsite.extensions import db
from smtpsite.models import Site, SmtpServer


def signed_in() -> bool:
    """Whether someone is signed in."""
    return bool(current_user.is_authenticated)


def is_global_admin() -> bool:
    """Whether the signed-in user is a global administrator."""
    return signed_in() and bool(current_user.is_global_admin)


def visible_site_ids() -> frozenset[int] | None:
    """The ids of the sites the user manages; ``None`` means every site."""
    if is_global_admin():
        return None
    return current_user.site_ids if signed_in() else frozenset()


def site_column_filter(column: Any) -> ColumnElement[bool]:
    """A filter for rows that belong to a site through ``column`` (a site id column).

    Rows with no site (global ones) pass only for global administrators.
    """
    ids = visible_site_ids()
    if ids is None:
        return true()
    return column.in_(ids) if ids else false()


def server_filter() -> ColumnElement[bool]:
    """Servers the user may see: all for global admins, else those assigned only to their sites."""
    ids = visible_site_ids()
    if ids is None:
        return true()
    if not ids:
        return false()
    return (
        SmtpServer.is_global.is_(False)
        & SmtpServer.sites.any()
        & ~SmtpServer.sites.any(Site.id.not_in(ids))
    )


def can_see_server(server: SmtpServer) -> bool:
    """The same rule as ``server_filter`` for a loaded server."""
    ids = visible_site_ids()
    if ids is None:
        return True
    return not server.is_global and bool(server.sites) and all(s.id in ids for s in server.sites)


def visible_sites() -> list[Site]:
    """The sites the user manages, by display name."""
    query = select(Site).where(site_column_filter(Site.id)).order_by(Site.display_name, Site.id)
    return list(db.session.execute(query).scalars())


def site_or_404(site_id: Any) -> Site:
    """The site with ``site_id`` if the user manages it; 404 otherwise (also for bad ids)."""
    try:
        wanted = int(site_id)
    except (TypeError, ValueError):
        abort(404)
    ids = visible_site_ids()
    site = db.session.get(Site, wanted)
    if site is None or (ids is not None and site.id not in ids):
        abort(404)
    return site


def require_global_admin() -> None:
    """Stop with 403 unless a global administrator is signed in."""
    if not is_global_admin():
        abort(403)


def login_redirect():
    """Send someone who is not signed in to the sign-in page, coming back here afterwards."""
    return redirect(url_for("admin.login_view", next=request.full_path))


class AccessMixin:
    """Sign-in required for every route; ``global_only`` views need a global administrator."""

    global_only = False

    def is_accessible(self) -> bool:
        return signed_in() and (not self.global_only or is_global_admin())

    def is_visible(self) -> bool:
        return self.is_accessible()

    def inaccessible_callback(self, name: str, **kwargs: Any):
        if not signed_in():
            return login_redirect()
        abort(403)


class ScopedModelView(AccessMixin, ModelView):
    """A ModelView whose every query is cut down to what the user may see.

    Subclasses give ``scope()`` (a filter on the model) and may make ``can_create``,
    ``can_edit``, ``can_delete`` properties that depend on the user. A route the user may
    not use answers 403 (Flask-Admin would only redirect); an id outside the scope, 404.
    """

    form_base_class = FlaskForm  # CSRF through Flask-WTF's CSRFProtect, the only mechanism
    page_size = 50
    can_set_page_size = True

    # Route names and the permission each needs.
    _ROUTE_PERMISSION = {
        "create_view": "can_create",
        "edit_view": "can_edit",
        "delete_view": "can_delete",
        "details_view": "can_view_details",
        "export": "can_export",
        "ajax_update": "can_edit",
    }

    def __init__(self, model: Any, **kwargs: Any) -> None:
        super().__init__(model, db, **kwargs)

    def scope(self) -> ColumnElement[bool]:
        """The filter that keeps only what the current user may see."""
        return true()

    def _handle_view(self, name: str, **kwargs: Any):
        response = super()._handle_view(name, **kwargs)
        if response is not None:
            return response
        permission = self._ROUTE_PERMISSION.get(name)
        if permission and not getattr(self, permission):
            abort(403)
        return None

    def get_query(self):
        return super().get_query().filter(self.scope())

    def get_count_query(self):
        return super().get_count_query().filter(self.scope())

    def get_one(self, id: Any) -> Any:
        pk = getattr(self.model, self._primary_key)
        try:
            found = self.get_query().filter(pk == int(id)).one_or_none()
        except (TypeError, ValueError):
            found = None
        if found is None:
            abort(404)
        return found
