"""The Routing preview: a site's ordered server chain and why each server is in it."""

from __future__ import annotations

from typing import Any

from flask import abort, redirect, request, url_for
from flask_admin import BaseView, expose
from sqlalchemy import select

from smtpsite import routing
from smtpsite.addresses import AddressError, check_address
from smtpsite.admin import scoping
from smtpsite.extensions import db
from smtpsite.models import SmtpServer

HIDDEN = "a server you do not manage"


def visible_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chain with servers the user may not see named only by their role."""
    if scoping.is_global_admin():
        return rows
    ids = {int(r["key"].split(":", 1)[1]) for r in rows if r["key"].startswith("server:")}
    servers = db.session.execute(select(SmtpServer).where(SmtpServer.id.in_(ids))).scalars()
    allowed = {s.key for s in servers if scoping.can_see_server(s)}
    shown = []
    for row in rows:
        if row["key"].startswith("server:") and row["key"] not in allowed:
            row = {**row, "name": HIDDEN, "method": "", "key": ""}
        shown.append(row)
    return shown


class RoutingView(scoping.AccessMixin, BaseView):
    """``/admin/routing/?site=ID&sender=ADDR``; global mail (no site) for global admins only."""

    @expose("/")
    def index(self):
        """Show the chain for the chosen site (and sender)."""
        site_id = request.args.get("site")
        if not site_id and not scoping.is_global_admin():
            sites = scoping.visible_sites()
            if not sites:
                abort(403)
            return redirect(url_for(".index", site=sites[0].id))
        site = scoping.site_or_404(site_id) if site_id else None
        sender = (request.args.get("sender") or "").strip() or None
        error = None
        if sender:
            try:
                check_address(sender)
            except AddressError as exc:
                error, sender = str(exc), None
        rows = visible_rows(routing.describe(site, sender))
        return self.render("admin/smtpsite/routing.html", rows=rows, site=site, sender=sender,
                           error=error, sites=scoping.visible_sites(),
                           raw_sender=request.args.get("sender", ""))
