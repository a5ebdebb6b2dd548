"""The panel's home page, sign-in, sign-out and the signed-in user's own password."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import flash, redirect, request, session, url_for
from flask_admin import AdminIndexView, expose
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from werkzeug.security import check_password_hash
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, EqualTo

from smtpsite.admin import scoping
from smtpsite.admin.auth import (
    AdminUser,
    UserError,
    authenticate,
    check_new_password,
    hash_password,
)
from smtpsite.extensions import db
from smtpsite.models import SmtpServer, User


class LoginForm(FlaskForm):
    """Email and password."""

    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


class PasswordForm(FlaskForm):
    """Change one's own password."""

    current = PasswordField("Current password", validators=[DataRequired()])
    new = PasswordField("New password", validators=[DataRequired()])
    repeat = PasswordField("New password again",
                           validators=[DataRequired(), EqualTo("new", "the passwords differ")])


def _safe_next(target: str | None) -> str | None:
    # Only a path on this site: never an absolute URL to somewhere else.
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


class HomeView(scoping.AccessMixin, AdminIndexView):
    """``/admin/``: what the user manages, plus the sign-in and account pages."""

    _OPEN = {"login_view"}

    def is_visible(self) -> bool:
        return True

    def _handle_view(self, name: str, **kwargs):
        if name in self._OPEN:
            return None
        return super()._handle_view(name, **kwargs)

    @expose("/")
    def index(self):
        """Counts of what the user manages and links to each screen."""
        sites = scoping.visible_sites()
        servers = db.session.execute(
            select(func.count()).select_from(SmtpServer).where(scoping.server_filter())
        ).scalar_one()
        return self.render("admin/smtpsite/home.html", sites=sites, server_count=servers)

    @expose("/login/", methods=("GET", "POST"))
    def login_view(self):
        """Sign in with email and password; failures are counted and slowed down."""
        if scoping.signed_in():
            return redirect(url_for(".index"))
        form = LoginForm()
        if form.validate_on_submit():
            user, error = authenticate(form.email.data, form.password.data,
                                       request.remote_addr or "unknown")
            if user is None:
                form.password.errors.append(error)
            else:
                next_url = _safe_next(request.args.get("next"))
                session.clear()  # a fresh session: nothing carried over from before sign-in
                login_user(AdminUser(user))
                return redirect(next_url or url_for(".index"))
        return self.render("admin/smtpsite/login.html", form=form)

    @expose("/logout/", methods=("POST",))
    def logout_view(self):
        """Sign out (a POST, so a link elsewhere cannot sign anyone out)."""
        logout_user()
        session.clear()
        flash("You are signed out.", "info")
        return redirect(url_for(".login_view"))

    @expose("/account/", methods=("GET", "POST"))
    def account_view(self):
        """Change one's own password (this signs out the user's other sessions)."""
        form = PasswordForm()
        if form.validate_on_submit():
            user = db.session.get(User, current_user.id)
            if not check_password_hash(user.password_hash, form.current.data):
                form.current.errors.append("is not your current password")
            else:
                try:
                    user.password_hash = hash_password(check_new_password(form.new.data))
                except UserError as exc:
                    form.new.errors.append(str(exc))
                else:
                    db.session.commit()
                    login_user(AdminUser(user))
                    flash("Your password was changed.", "success")
                    return redirect(url_for(".index"))
        return self.render("admin/smtpsite/account.html", form=form)
