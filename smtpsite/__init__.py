"""smtpsite: outgoing mail for many websites through prioritised SMTP servers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from smtpsite import config as config_module
from smtpsite.delivery import PluginContext
from smtpsite.extensions import db, migrate
from smtpsite.registry import PluginRegistry, load_entry_point_plugins, registry_from_classes
from smtpsite.secrets import SecretBox
from smtpsite.sending import SendResult, send_mail, send_message

MIGRATIONS_DIR = str(Path(__file__).parent / "migrations")

__all__ = ["SendResult", "create_app", "send_mail", "send_message"]


@dataclass
class SmtpSiteState:
    """Per-app state kept in ``app.extensions["smtpsite"]``."""

    registry: PluginRegistry
    secrets: SecretBox
    plugin_context: PluginContext


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app: configuration, database, plugins, CLI and admin panel."""
    project_root = Path(__file__).resolve().parent.parent
    app = Flask(
        __name__,
        instance_path=str(project_root / "instance"),
        template_folder=str(project_root / "templates"),
    )
    app.config.update(config_module.default_config(app.instance_path))
    app.config.update(config_module.from_environment())
    if test_config:
        app.config.update(test_config)

    if not app.config["SMTPSITE_SECRET_KEYS"]:
        app.config["SMTPSITE_SECRET_KEYS"] = config_module.ensure_instance_key(app.instance_path)
    app.config["SMTPSITE_PICKUP_ROOTS"] = config_module.split_paths(
        app.config["SMTPSITE_PICKUP_ROOTS"]
    )
    database_url = app.config["SMTPSITE_DATABASE_URL"]
    if database_url.startswith("sqlite:///") and ":memory:" not in database_url:
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    app.config.setdefault("SQLALCHEMY_DATABASE_URI", database_url)
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_pre_ping": True})

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)

    plugin_classes = app.config["SMTPSITE_PLUGINS"]
    registry = (
        load_entry_point_plugins()
        if plugin_classes is None
        else registry_from_classes(plugin_classes)
    )
    # Plugins get the configuration but none of its secrets (keys, passwords, database URL).
    context_config = {
        k: v for k, v in app.config.items()
        if k.startswith("SMTPSITE_") and not re.search(r"KEY|SECRET|PASSWORD|TOKEN|DATABASE_URL", k)
    }
    app.extensions["smtpsite"] = SmtpSiteState(
        registry=registry,
        secrets=SecretBox(app.config["SMTPSITE_SECRET_KEYS"]),
        plugin_context=PluginContext(config=context_config),
    )

    from smtpsite.cli import register_cli

    register_cli(app)

    from smtpsite.admin import init_admin

    init_admin(app)
    from smtpsite.ops import init_ops  # /healthz, /metrics, failover hooks (latency, rescues)

    init_ops(app)

    from smtpsite.security_headers import init_security_headers

    init_security_headers(app)  # after the admin panel: its bulk actions get CSP hashes
    from smtpsite.keys import check_at_startup

    check_at_startup(app)  # a key that cannot read the stored secrets is reported now
    return app


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """SQLite: foreign keys, waits on locks, readers beside a writer, syncs at checkpoints."""
    module = type(dbapi_connection).__module__
    if not module.startswith("sqlite3"):
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    # Under WAL, NORMAL syncs at checkpoints instead of at every commit: the database cannot
    # be corrupted, but a power cut (not a crash of the process) may undo the last commits.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
