"""The admin panel at ``/admin/``: Flask-Admin views behind Flask-Login sign-in.

Every view derives from ``scoping.AccessMixin`` (sign-in required, optionally global
administrators only); model views derive from ``scoping.ScopedModelView``, which cuts every
query down to what the signed-in user may see.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from flask import Flask
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme
from flask_wtf import CSRFProtect

from smtpsite.admin.auth import LoginThrottle, login_manager
from smtpsite.config import ensure_instance_flask_key

csrf = CSRFProtect()


@dataclass
class AdminState:
    """Per-app state of the panel, kept in ``app.extensions["smtpsite_admin"]``."""

    admin: Admin
    throttle: LoginThrottle


def _configure_session(app: Flask) -> None:
    """Session signing key and cookie flags."""
    if not app.config.get("SECRET_KEY"):
        key = app.config.get("SMTPSITE_FLASK_SECRET_KEY")
        if not key:
            # Tests get a throw-away key rather than a file in the project's instance folder.
            key = secrets.token_hex(32) if app.testing else ensure_instance_flask_key(
                app.instance_path)
        app.config["SECRET_KEY"] = key
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    app.config.setdefault("MAX_CONTENT_LENGTH", 25 * 1024 * 1024)  # test email attachments


def init_admin(app: Flask) -> None:
    """Attach the admin panel, sign-in and CSRF protection to ``app``."""
    from smtpsite.admin import cli  # noqa: F401 - registers ``smtpsite user``
    from smtpsite.admin.home import HomeView
    from smtpsite.admin.routing import RoutingView
    from smtpsite.admin.servers import ServersView
    from smtpsite.admin.settings_view import SettingsView
    from smtpsite.admin.sites import SitesView
    from smtpsite.admin.testmail import TestMailView
    from smtpsite.admin.users import UsersView
    from smtpsite.models import Site, SmtpServer, User

    _configure_session(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    admin = Admin(
        app,
        name="smtpsite",
        index_view=HomeView(name="Home", url="/admin", endpoint="admin"),
        theme=Bootstrap4Theme(base_template="admin/smtpsite_base.html", fluid=True),
    )
    admin.add_view(SitesView(Site, name="Sites", endpoint="site"))
    admin.add_view(ServersView(SmtpServer, name="SMTP servers", endpoint="server"))
    admin.add_view(SettingsView(name="Email settings", endpoint="settings"))
    admin.add_view(RoutingView(name="Routing preview", endpoint="routing"))
    admin.add_view(TestMailView(name="Send test email", endpoint="testmail"))
    admin.add_view(UsersView(User, name="Users", endpoint="user"))
    from smtpsite.admin.queue import add_queue_views  # Email queue, Sent emails, home panel

    add_queue_views(app, admin)
    from smtpsite.admin.audit import add_audit_view  # Audit log; the signed-in user is the actor

    add_audit_view(app, admin)
    from smtpsite.admin.captured import CapturedMailView  # what the mail catcher received
    from smtpsite.models import CapturedMessage

    admin.add_view(CapturedMailView(CapturedMessage, name="Captured mail", endpoint="captured"))
    app.extensions["smtpsite_admin"] = AdminState(
        admin=admin,
        throttle=LoginThrottle(free_attempts=app.config.get("SMTPSITE_LOGIN_FREE_ATTEMPTS", 5)),
    )
