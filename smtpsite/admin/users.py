"""The Users screen (global administrators only): who may sign in, and to which sites."""

from __future__ import annotations

from typing import Any

from flask import flash, request
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField
from wtforms.validators import InputRequired

from smtpsite.admin import scoping
from smtpsite.admin.auth import UserError, check_new_password, clean_email, find_user, hash_password
from smtpsite.admin.fields import MultiCheckboxField, choice_list
from smtpsite.extensions import db
from smtpsite.models import Site, User


def _sites_text(_view, _context, user: User, _name) -> str:
    if user.is_global_admin:
        return "all sites (global administrator)"
    return ", ".join(sorted(s.display_name for s in user.sites))


class UserForm(FlaskForm):
    """Email, role, sites and (optionally) a new password."""

    email = EmailField("Email", validators=[InputRequired()])
    is_global_admin = BooleanField("Global administrator",
                                   description="Manages every site, global servers and users.")
    sites = MultiCheckboxField("Sites", coerce=int,
                               description="The sites a site administrator manages.")
    active = BooleanField("Active", default=True, description="Off: the user cannot sign in.")
    password = PasswordField("Password", render_kw={"autocomplete": "new-password"},
                             description="At least 10 characters. When editing, leave empty "
                                         "to keep the current password.")


class UsersView(scoping.ScopedModelView):
    """Users; never shows password hashes."""

    global_only = True
    form = UserForm
    column_list = ("email", "is_global_admin", "sites", "active", "last_login_at")
    column_details_list = ("email", "is_global_admin", "sites", "active", "created_at",
                           "last_login_at")
    column_export_list = ("email", "is_global_admin", "sites", "active", "last_login_at")
    column_labels = {"is_global_admin": "Global admin", "last_login_at": "Last sign-in"}
    column_formatters = {"sites": _sites_text}
    column_formatters_export = {"sites": _sites_text}
    column_searchable_list = ("email",)
    column_filters = ("is_global_admin", "active")
    column_default_sort = "email"
    can_view_details = True
    can_export = True

    def _prepare(self, form: UserForm) -> UserForm:
        form.sites.choices = choice_list((s.id, f"{s.display_name} ({s.code_name})")
                                         for s in scoping.visible_sites())
        return form

    def create_form(self, obj: Any = None):
        return self._prepare(super().create_form(obj))

    def edit_form(self, obj: Any = None):
        form = self._prepare(super().edit_form(obj))
        if request.method == "GET" and obj is not None:
            form.sites.data = [s.id for s in obj.sites]
            form.password.data = ""
        return form

    def _apply(self, form: UserForm, user: User, creating: bool) -> bool:
        """Copy the form into ``user``; errors go next to their fields."""
        try:
            email = clean_email(form.email.data)
            other = find_user(email)
            if other is not None and other is not user:
                raise UserError(f"a user with email {email!r} already exists")
        except UserError as exc:
            form.email.errors = [*form.email.errors, str(exc)]
        sites = [db.session.get(Site, i) for i in form.sites.data or []]
        if not form.is_global_admin.data and not sites:
            form.sites.errors = [*form.sites.errors, "a site administrator needs at least one site"]
        if form.password.data or creating:
            try:
                check_new_password(form.password.data or "")
            except UserError as exc:
                form.password.errors = [*form.password.errors, str(exc)]
        is_self = not creating and user.id == current_user.id
        if is_self and not (form.is_global_admin.data and form.active.data):
            form.is_global_admin.errors = [
                *form.is_global_admin.errors,
                "you cannot remove your own global administrator role or disable yourself"]
        if form.email.errors or form.sites.errors or form.password.errors \
                or form.is_global_admin.errors:
            return False
        user.email = email
        user.is_global_admin = form.is_global_admin.data
        user.active = form.active.data
        user.sites = [] if user.is_global_admin else sites
        if form.password.data:
            user.password_hash = hash_password(form.password.data)
        return True

    def create_model(self, form: UserForm):
        user = User(email="", password_hash="")
        if not self._apply(form, user, creating=True):
            return False
        db.session.add(user)
        db.session.commit()
        return user

    def update_model(self, form: UserForm, model: User) -> bool:
        if not self._apply(form, model, creating=False):
            db.session.rollback()
            return False
        db.session.commit()
        return True

    def delete_model(self, model: User) -> bool:
        if model.id == current_user.id:
            flash("You cannot delete your own account.", "error")
            return False
        db.session.delete(model)
        db.session.commit()
        return True
