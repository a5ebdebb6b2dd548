"""The SMTP servers screen: list, plugin-built forms, bulk enable/disable and Test connection."""

from __future__ import annotations

from flask import current_app, flash, g, redirect, request, url_for
from flask_admin import expose
from flask_admin.actions import action
from flask_admin.contrib.sqla.filters import BaseSQLAFilter, BooleanEqualFilter, FilterEqual
from flask_admin.helpers import get_redirect_target
from flask_wtf import FlaskForm
from markupsafe import Markup, escape
from sqlalchemy import select
from wtforms import StringField
from wtforms.validators import InputRequired

from smtpsite import settings
from smtpsite.addresses import AddressError, check_address
from smtpsite.admin import checks, scoping
from smtpsite.admin.server_form import place_errors, prefill, server_form_class, submitted_options
from smtpsite.extensions import db
from smtpsite.models import PRIORITIES, ServerHealth, Site, SmtpServer
from smtpsite.registry import UnknownMethodError
from smtpsite.servers import ServerError, save_server, secret_status

BULK_CHECK_LIMIT = 10


class SiteFilter(BaseSQLAFilter):
    """Servers assigned to one site; the choices (set per request) are the user's sites."""

    def __init__(self) -> None:
        super().__init__(SmtpServer.id, "Site")

    def apply(self, query, value, alias=None):
        return query.filter(SmtpServer.sites.any(Site.id == int(value)))

    def operation(self) -> str:
        return "is"

    def validate(self, value) -> bool:
        return str(value).isdigit()


def _health(server: SmtpServer) -> ServerHealth | None:
    # One query per request for every row of the list.
    if "server_health" not in g:
        g.server_health = {h.server_key: h for h in db.session.execute(select(ServerHealth)).scalars()}
    return g.server_health.get(server.key)


def _sites_text(_view, _context, server: SmtpServer, _name) -> str:
    if server.is_global:
        return "all sites"
    return ", ".join(sorted(s.display_name for s in server.sites)) or "no site"


def _last_check(_view, _context, server: SmtpServer, _name) -> Markup:
    health = _health(server)
    if health is None or health.last_check_at is None:
        return Markup('<span class="text-muted">never checked</span>')
    badge = "success" if health.last_check_ok else "danger"
    word = "OK" if health.last_check_ok else "failed"
    return Markup(
        f'<span class="badge badge-{badge}">{word}</span> '
        f'<small>{escape(health.last_check_at.strftime("%Y-%m-%d %H:%M"))} UTC</small><br>'
        f'<small class="text-muted">{escape(health.last_check_message or "")}</small>'
    )


def _name(_view, _context, server: SmtpServer, _name) -> Markup:
    text = escape(server.server_name)
    if server.display_name:
        text = Markup(f"{escape(server.display_name)}<br><small class='text-muted'>{text}</small>")
    test_url = url_for(".test_view", id=server.id)
    return Markup(f'{text}<br><a class="small" href="{escape(test_url)}">Test connection</a>')


def _options(_view, _context, server: SmtpServer, _name) -> Markup:
    # Plain options only; secrets are shown as set / not set.
    rows = [f"{escape(k)}: {escape(v)}" for k, v in sorted((server.options or {}).items())]
    rows += [f"{escape(k)}: {'set' if is_set else 'not set'}"
             for k, is_set in secret_status(server).items()]
    return Markup("<br>".join(rows))


class TestForm(FlaskForm):
    """Who the check pretends to send from and to."""

    sender = StringField("Sender", validators=[InputRequired()],
                         description="Used in MAIL FROM; nothing is sent.")
    recipient = StringField("Recipient", validators=[InputRequired()],
                            description="Used in RCPT TO; nothing is sent.")


def default_sender(server: SmtpServer) -> str:
    """The no-reply sender of the server's first site (or the global one)."""
    site = None if server.is_global or not server.sites else server.sites[0]
    return settings.get("emails.default_sender", site)


class ServersView(scoping.ScopedModelView):
    """SMTP servers; a site administrator sees only servers assigned only to their sites."""

    column_list = ("server_name", "priority", "enabled", "method", "sites", "last_check")
    column_details_list = ("server_name", "display_name", "priority", "enabled", "method",
                           "sites", "options", "max_connections", "rate_limit", "sender_filter",
                           "last_check", "created_at", "updated_at")
    column_export_list = ("server_name", "display_name", "priority", "enabled", "method", "sites",
                          "max_connections", "rate_limit", "sender_filter")
    column_labels = {"server_name": "Server", "display_name": "Display name",
                     "method": "Delivery method",
                     "last_check": "Last check", "options": "Options"}
    column_formatters = {"server_name": _name, "sites": _sites_text, "last_check": _last_check}
    column_formatters_detail = {"sites": _sites_text, "last_check": _last_check,
                                "options": _options}
    column_formatters_export = {"sites": _sites_text}
    column_searchable_list = ("server_name", "display_name")
    column_sortable_list = ("server_name", "priority", "enabled", "method")
    column_filters = (
        FilterEqual(SmtpServer.priority, "Priority", options=[(p, p) for p in PRIORITIES]),
        BooleanEqualFilter(SmtpServer.enabled, "Enabled"),
        FilterEqual(SmtpServer.method, "Delivery method"),
        SiteFilter(),
    )
    column_default_sort = "server_name"
    can_view_details = True
    can_export = True

    def scope(self):
        return scoping.server_filter()

    def _get_filter_groups(self):
        # Flask-Admin computes filter choices once at start-up: list the user's sites now.
        groups = super()._get_filter_groups()
        if groups and "Site" in groups:
            options = [(str(s.id), s.display_name) for s in scoping.visible_sites()]
            groups["Site"] = [{**item, "options": options} for item in groups["Site"]]
        return groups

    def _plugin(self, name: str):
        return current_app.extensions["smtpsite"].registry.get(name)

    def _form(self, method: str, server: SmtpServer | None) -> FlaskForm:
        plugin = self._plugin(method)
        form_class = server_form_class(
            plugin, sites=scoping.visible_sites(), allow_global=scoping.is_global_admin(),
            secrets_set=secret_status(server) if server is not None and server.method == method
            else {},
        )
        form = form_class()
        form.method.data = method
        return form

    def _save(self, form: FlaskForm, server: SmtpServer | None) -> SmtpServer | None:
        """Validate and save; on a problem put the messages next to the fields, save nothing."""
        if not form.validate_on_submit():
            return None
        is_global = form.scope.data == "all" and scoping.is_global_admin()
        sites = [] if is_global else [scoping.site_or_404(i) for i in form.sites.data]
        try:
            saved = save_server(
                server, server_name=form.server_name.data or "", method=form.method.data,
                options=submitted_options(form), priority=form.priority.data,
                enabled=form.enabled.data, is_global=is_global, sites=sites,
                display_name=form.display_name.data, max_connections=form.max_connections.data,
                rate_limit=form.rate_limit.data, sender_filter=form.sender_filter.data,
            )
        except ServerError as exc:
            db.session.rollback()
            for message in place_errors(form, exc.errors):
                flash(message, "error")
            return None
        db.session.commit()
        return saved

    def _render_form(self, form: FlaskForm, server: SmtpServer | None, return_url: str):
        return self.render("admin/smtpsite/server_form.html", form=form, server=server,
                           plugin=self._plugin(form.method.data), return_url=return_url,
                           methods=list(current_app.extensions["smtpsite"].registry))

    @expose("/new/", methods=("GET", "POST"))
    def create_view(self):
        """Choose the delivery method first, then fill in that plugin's form."""
        return_url = get_redirect_target() or self.get_url(".index_view")
        method = request.values.get("method")
        if not method or method not in current_app.extensions["smtpsite"].registry:
            return self.render("admin/smtpsite/server_method.html", return_url=return_url,
                               methods=list(current_app.extensions["smtpsite"].registry))
        form = self._form(method, None)
        saved = self._save(form, None)
        if saved is not None:
            flash(f"Server {saved.server_name} was created.", "success")
            return redirect(return_url)
        return self._render_form(form, None, return_url)

    @expose("/edit/", methods=("GET", "POST"))
    def edit_view(self):
        """Edit a server; its method's fields are pre-filled, secrets show only 'set'."""
        return_url = get_redirect_target() or self.get_url(".index_view")
        server = self.get_one(request.args.get("id"))
        method = request.values.get("method") or server.method
        try:
            form = self._form(method, server)
        except UnknownMethodError as exc:
            flash(str(exc), "error")
            return redirect(return_url)
        if request.method == "GET":
            prefill(form, server, self._plugin(method))
        saved = self._save(form, server)
        if saved is not None:
            flash(f"Server {saved.server_name} was saved.", "success")
            return redirect(return_url)
        return self._render_form(form, server, return_url)

    @expose("/test/", methods=("GET", "POST"))
    def test_view(self):
        """Run the plugin's connection check (nothing is sent) and show the dialogue."""
        server = self.get_one(request.args.get("id"))
        form = TestForm()
        result = None
        if request.method == "GET":
            form.sender.data = default_sender(server)
            form.recipient.data = form.sender.data
        elif form.validate_on_submit():
            for field in (form.sender, form.recipient):
                try:
                    check_address(field.data)
                except AddressError as exc:
                    field.errors = [*field.errors, str(exc)]
            if not form.sender.errors and not form.recipient.errors:
                result = checks.check_server(server, form.sender.data.strip(),
                                             form.recipient.data.strip())
        return self.render("admin/smtpsite/server_test.html", server=server, form=form,
                           results=[(server, result)] if result else [],
                           return_url=self.get_url(".index_view"))

    def _set_enabled(self, ids: list[str], enabled: bool) -> None:
        query = self.get_query().filter(SmtpServer.id.in_([int(i) for i in ids if i.isdigit()]))
        count = 0
        for server in query:
            server.enabled = enabled
            count += 1
        db.session.commit()
        flash(f"{count} server(s) {'enabled' if enabled else 'disabled'}.", "success")

    @action("enable", "Enable")
    def action_enable(self, ids: list[str]) -> None:
        """Enable the chosen servers."""
        self._set_enabled(ids, True)

    @action("disable", "Disable")
    def action_disable(self, ids: list[str]) -> None:
        """Disable the chosen servers."""
        self._set_enabled(ids, False)

    @action("test", "Test connection",
            f"Check the chosen servers (at most {BULK_CHECK_LIMIT})? Nothing is sent.")
    def action_test(self, ids: list[str]):
        """Check up to ``BULK_CHECK_LIMIT`` servers with their sites' default sender."""
        query = self.get_query().filter(SmtpServer.id.in_([int(i) for i in ids if i.isdigit()]))
        servers = query.order_by(SmtpServer.id).limit(BULK_CHECK_LIMIT).all()
        results = []
        for server in servers:
            sender = default_sender(server)
            results.append((server, checks.check_server(server, sender, sender)))
        return self.render("admin/smtpsite/server_test.html", server=None, form=None,
                           results=results, return_url=self.get_url(".index_view"))

    def delete_model(self, model: SmtpServer) -> bool:
        health = db.session.get(ServerHealth, model.key)
        if health is not None:
            db.session.delete(health)
        return super().delete_model(model)
