"""The Email settings screen: every key for one scope, inherited or overridden."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, request, url_for
from flask_admin import BaseView, expose
from flask_wtf import FlaskForm
from wtforms import PasswordField, SelectField, StringField

from smtpsite import settings
from smtpsite.admin import scoping
from smtpsite.admin.dkim_view import dkim_page
from smtpsite.admin.fields import choice_list
from smtpsite.extensions import db
from smtpsite.models import Site
from smtpsite.settings import KEYS, SettingError, SettingKey


def field_name(key: str) -> str:
    """The form field name of a settings key (dots are not allowed in field names)."""
    return key.replace(".", "__")


def as_text(value: Any) -> str:
    """A stored value as the form shows it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _field(key: SettingKey, is_set: bool):
    if key.secret:
        note = "A value is set: leave empty to keep it." if is_set else "No value is set."
        return PasswordField(key.label, description=note,
                             render_kw={"autocomplete": "new-password"})
    if isinstance(key.default, bool):
        return SelectField(key.label, choices=choice_list([("true", "On"), ("false", "Off")]),
                           description=key.help, validate_choice=False)
    if key.choices:
        # The settings module checks the choice and says which values are allowed.
        return SelectField(key.label, choices=choice_list((c, c) for c in key.choices),
                           description=key.help, validate_choice=False)
    return StringField(key.label, description=key.help)


def editable_keys(site: Site | None) -> list[SettingKey]:
    """The keys that can be set at this scope (global-only keys are read-only for a site)."""
    return [k for k in KEYS.values() if site is None or not k.global_only]


def settings_form(site: Site | None, resolved: dict[str, settings.Resolved]) -> FlaskForm:
    """A form with one field per editable key, showing the current effective values."""
    attrs = {field_name(k.name): _field(k, bool(resolved[k.name].value))
             for k in editable_keys(site)}
    form = type("SettingsForm", (FlaskForm,), attrs)()
    if request.method == "GET":
        for key in editable_keys(site):
            if not key.secret:
                form[field_name(key.name)].data = as_text(resolved[key.name].value)
    return form


def save(form: FlaskForm, site: Site | None, resolved: dict[str, settings.Resolved]) -> bool:
    """Store what changed; a key left at its inherited value keeps inheriting. All or nothing."""
    for key in editable_keys(site):
        field = form[field_name(key.name)]
        if field.name not in request.form:
            continue  # not submitted: left as it is
        raw = field.data or ""
        current = resolved[key.name]
        if key.secret and raw == "":
            continue  # empty secret: keep what is stored
        if not key.secret and raw == as_text(current.value):
            continue  # unchanged (still inheriting, or the same override)
        try:
            settings.set_value(key.name, raw, site)
        except SettingError as exc:
            field.errors = [*field.errors, str(exc).removeprefix(key.name + " ")]
    if any(form[field_name(k.name)].errors for k in editable_keys(site)):
        db.session.rollback()
        return False
    db.session.commit()
    return True


class SettingsView(scoping.AccessMixin, BaseView):
    """``/admin/settings/?site=ID``: global settings (global admins) or one site's."""

    def _scope(self) -> Site | None:
        site_id = request.args.get("site")
        if site_id:
            return scoping.site_or_404(site_id)
        scoping.require_global_admin()
        return None

    @expose("/", methods=("GET", "POST"))
    def index(self):
        """Show and change every key for the chosen scope."""
        if not request.args.get("site") and not scoping.is_global_admin():
            sites = scoping.visible_sites()
            if not sites:
                abort(403)
            return redirect(url_for(".index", site=sites[0].id))
        site = self._scope()
        resolved = settings.resolve_all(site)
        form = settings_form(site, resolved)
        if form.validate_on_submit():
            inherit = request.form.get("inherit")
            if inherit:
                if inherit not in KEYS or KEYS[inherit] not in editable_keys(site):
                    abort(400)
                settings.clear(inherit, site)
                db.session.commit()
                what = "the global value" if site is not None else "the default"
                flash(f"{KEYS[inherit].label} now uses {what}.", "success")
                return redirect(request.full_path)
            if save(form, site, resolved):
                flash("Settings saved.", "success")
                return redirect(request.full_path)
            flash("Nothing was saved: please correct the values marked below.", "error")
        rows = [
            {"key": key, "resolved": resolved[key.name],
             "field": form[field_name(key.name)] if key in editable_keys(site) else None}
            for key in KEYS.values()
        ]
        return self.render("admin/smtpsite/settings.html", form=form, rows=rows, site=site,
                           sites=scoping.visible_sites(), as_text=as_text)

    @expose("/dkim/", methods=("GET", "POST"))
    def dkim(self):
        """Generate a site's DKIM key pair and show the DNS TXT record to publish."""
        return dkim_page(self)
