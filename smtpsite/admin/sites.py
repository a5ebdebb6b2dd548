"""The Sites screen: list, create, edit, delete (refused while servers or emails depend on a site)."""

from __future__ import annotations

from typing import Any

from flask import flash, request
from flask_wtf import FlaskForm
from markupsafe import Markup, escape
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired

from smtpsite.admin import scoping
from smtpsite.extensions import db
from smtpsite.models import Site
from smtpsite.sites import SiteError, check_code_name, check_domains, delete_site, find_site


class SiteForm(FlaskForm):
    """A site's code name, display name and domain names."""

    code_name = StringField(
        "Code name", validators=[DataRequired()],
        description="Used by site code and the CLI; letters, digits, '_', '.' and '-'.",
    )
    display_name = StringField("Display name", validators=[DataRequired()])
    domains = TextAreaField("Domain names", description="One per line.")


def _domains_text(_view, _context, model: Site, _name: str) -> str:
    return ", ".join(model.domains or [])


def _settings_link(_view, _context, model: Site, _name: str) -> Markup:
    from flask import url_for

    return Markup(
        f'<a href="{escape(url_for("settings.index", site=model.id))}">settings</a> · '
        f'<a href="{escape(url_for("routing.index", site=model.id))}">routing</a>'
    )


class SitesView(scoping.ScopedModelView):
    """Sites; a site administrator sees and edits only their own and cannot add or delete."""

    form = SiteForm
    column_list = ("code_name", "display_name", "domains", "links")
    column_details_list = ("code_name", "display_name", "domains", "created_at")
    column_export_list = ("code_name", "display_name", "domains", "created_at")
    column_labels = {"links": "", "domains": "Domain names", "code_name": "Code name",
                     "display_name": "Display name"}
    column_formatters = {"domains": _domains_text, "links": _settings_link}
    column_formatters_export = {"domains": _domains_text}
    column_searchable_list = ("code_name", "display_name")
    column_sortable_list = ("code_name", "display_name")
    column_default_sort = "display_name"
    can_view_details = True
    can_export = True

    @property
    def can_create(self) -> bool:
        return scoping.is_global_admin()

    @property
    def can_delete(self) -> bool:
        return scoping.is_global_admin()

    def scope(self):
        return scoping.site_column_filter(Site.id)

    def edit_form(self, obj: Any = None):
        form = super().edit_form(obj)
        if request.method == "GET" and obj is not None:
            form.domains.data = "\n".join(obj.domains or [])
        return form

    def _clean(self, form: SiteForm, site: Site | None) -> dict[str, Any] | None:
        """The form's values checked, or None with errors placed next to the fields."""
        values: dict[str, Any] = {"display_name": form.display_name.data.strip()}
        try:
            values["code_name"] = check_code_name(form.code_name.data)
            other = find_site(values["code_name"])
            if other is not None and other is not site:
                raise SiteError(f"a site with code name {values['code_name']!r} already exists")
            if site is not None and values["code_name"] != site.code_name \
                    and not scoping.is_global_admin():
                raise SiteError("only a global administrator can change a site's code name")
        except SiteError as exc:
            form.code_name.errors.append(str(exc))
        try:
            values["domains"] = check_domains((form.domains.data or "").split())
        except SiteError as exc:
            form.domains.errors.append(str(exc))
        if form.code_name.errors or form.domains.errors:
            return None
        return values

    def create_model(self, form: SiteForm):
        values = self._clean(form, None)
        if values is None:
            return False
        site = Site(code_name=values["code_name"], code_key=values["code_name"].lower(),
                    display_name=values["display_name"], domains=values["domains"])
        db.session.add(site)
        db.session.commit()
        return site

    def update_model(self, form: SiteForm, model: Site) -> bool:
        values = self._clean(form, model)
        if values is None:
            return False
        model.code_name = values["code_name"]
        model.code_key = values["code_name"].lower()
        model.display_name = values["display_name"]
        model.domains = values["domains"]
        db.session.commit()
        return True

    def delete_model(self, model: Site) -> bool:
        try:
            delete_site(model)
        except SiteError as exc:
            flash(str(exc), "error")
            return False
        db.session.commit()
        return True
