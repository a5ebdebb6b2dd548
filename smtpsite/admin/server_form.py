"""The server form: common fields, plus one field per option the chosen plugin declares."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import wtforms
from flask import current_app
from flask_wtf import FlaskForm
from markupsafe import escape
from wtforms import (
    BooleanField,
    FormField,
    HiddenField,
    IntegerField,
    PasswordField,
    RadioField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import InputRequired, NumberRange, Optional

from smtpsite.admin.fields import MultiCheckboxField, choice_list
from smtpsite.delivery import DeliveryMethod, Field, OptionsError
from smtpsite.models import PRIORITIES, Site, SmtpServer
from smtpsite.routing import server_options


def _option_field(spec: Field, secret_set: bool) -> wtforms.Field:
    """The form field for one declared plugin option."""
    label = spec.label + (" (required)" if spec.required else "")
    # Plugin help is plain text: escape it (Flask-Admin renders descriptions as HTML).
    help_text = escape(spec.help)
    render_kw: dict[str, Any] = {}
    if spec.show_if is not None:
        other, values = spec.show_if
        # Without script the help says when the field applies; with it, the form hides it.
        help_text += escape(f" Used only when {other} is {' or '.join(values)}.")
        render_kw["data-show-if"] = json.dumps({"field": other, "values": list(values)})
    if spec.secret:
        state = "A value is set: leave empty to keep it." if secret_set else "No value is set."
        return PasswordField(label, description=escape(state) + " " + help_text,
                             render_kw={"autocomplete": "new-password", **render_kw})
    if spec.type == "boolean":
        return BooleanField(label, default=bool(spec.default), description=help_text,
                            render_kw=render_kw)
    if spec.type == "choice":
        return SelectField(label, choices=choice_list(spec.choices), default=spec.default,
                           description=help_text, render_kw=render_kw)
    default = "" if spec.default is None else str(spec.default)
    if spec.type == "text":
        return TextAreaField(label, default=default, description=help_text, render_kw=render_kw)
    # Numbers and paths are typed as text and checked by the plugin's own rules.
    return StringField(label, default=default, description=help_text, render_kw=render_kw)


def options_form_class(plugin: type[DeliveryMethod], secrets_set: Mapping[str, bool]) -> type:
    """A WTForms form class (no CSRF of its own) with the plugin's declared fields."""
    attrs = {spec.name: _option_field(spec, secrets_set.get(spec.name, False))
             for spec in plugin.fields}
    return type(f"{plugin.__name__}Options", (wtforms.Form,), attrs)


def server_form_class(plugin: type[DeliveryMethod], *, sites: list[Site], allow_global: bool,
                      secrets_set: Mapping[str, bool]) -> type[FlaskForm]:
    """The whole server form for ``plugin``; ``sites`` are the ones the user may choose."""
    site_choices = choice_list((s.id, f"{s.display_name} ({s.code_name})") for s in sites)
    scope_choices = [("sites", "Chosen sites")]
    if allow_global:
        scope_choices.insert(0, ("all", "All sites (global server)"))

    class ServerForm(FlaskForm):
        method = HiddenField()
        server_name = StringField(
            "Server name", validators=[InputRequired()],
            description="host, host:port or [IPv6]:port; the port defaults to 25.")
        display_name = StringField("Display name", description="Optional; shown in lists.")
        priority = SelectField("Priority", choices=choice_list((p, p.capitalize()) for p in PRIORITIES),
                               default="normal")
        enabled = BooleanField("Enabled", default=True)
        scope = RadioField("Sites", choices=choice_list(scope_choices),
                           default=scope_choices[0][0])
        sites = MultiCheckboxField("Chosen sites", coerce=int,
                                   choices=site_choices,
                                   description="Used when 'Chosen sites' is selected.")
        max_connections = IntegerField(
            "Connections at once", default=1, validators=[InputRequired(), NumberRange(min=1)],
            description="How many messages this server may carry at the same time.")
        rate_limit = IntegerField("Rate limit (messages per minute)", validators=[Optional()],
                                  description="Empty: no limit.")
        sender_filter = TextAreaField(
            "Sender filter",
            description="Addresses and/or domains, one per line: the server then only takes "
                        "mail from these senders. Empty: any sender.")
        options = FormField(options_form_class(plugin, secrets_set), label=plugin.label,
                            separator="-")

    return ServerForm


def effective_options(plugin: type[DeliveryMethod], server: SmtpServer) -> dict[str, Any]:
    """The stored options as the plugin reads them (defaults and derived values filled in).

    A record saved before the plugin gained an option shows what the plugin will use,
    not the field's bare default. Stored options that no longer validate are shown as
    they are, so the form can correct them.
    """
    context = current_app.extensions["smtpsite"].plugin_context
    try:
        cleaned = plugin.clean_options(server_options(server), context)
    except OptionsError:
        return dict(server.options or {})
    return {k: v for k, v in cleaned.items() if k not in plugin.secret_fields()}


def prefill(form: FlaskForm, server: SmtpServer, plugin: type[DeliveryMethod]) -> None:
    """Fill the form from a stored server; secrets stay empty (only 'set' is shown)."""
    form.server_name.data = server.server_name
    form.display_name.data = server.display_name or ""
    form.priority.data = server.priority
    form.enabled.data = server.enabled
    form.scope.data = "all" if server.is_global else "sites"
    form.sites.data = [s.id for s in server.sites]
    form.max_connections.data = server.max_connections
    form.rate_limit.data = server.rate_limit
    form.sender_filter.data = server.sender_filter or ""
    if server.method == form.method.data:
        options = effective_options(plugin, server)
        for name, field in form.options.form._fields.items():
            if name in options and not isinstance(field, PasswordField):
                value = options[name]
                field.data = value if isinstance(field, BooleanField | SelectField) else (
                    "" if value is None else str(value))


def submitted_options(form: FlaskForm) -> dict[str, Any]:
    """The plugin options as typed in; an empty secret means 'keep the stored value'."""
    return {name: field.data for name, field in form.options.form._fields.items()}


def place_errors(form: FlaskForm, errors: Mapping[str, str]) -> list[str]:
    """Put ``ServerError`` messages next to their fields; return those that have no field."""
    general = []
    for key, message in errors.items():
        name = key.removeprefix("options.")
        if key.startswith("options.") and name in form.options.form._fields:
            field = form.options.form._fields[name]
            field.errors = [*field.errors, message]
        elif key in form._fields and key != "options":
            target = form.scope if key == "sites" and form.scope.data == "all" else form[key]
            target.errors = [*target.errors, message]
        else:
            general.append(f"{key}: {message}" if key else message)
    return general
