"""Flask CLI commands for operators and scripts: ``flask --app app smtpsite ...``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from flask_migrate import upgrade
from sqlalchemy import select

from smtpsite import audit, routing, settings
from smtpsite.config_cli import add_commands as add_config_commands
from smtpsite.extensions import db
from smtpsite.keys_cli import add_key_commands
from smtpsite.messages import MessageError
from smtpsite.models import PRIORITIES, SmtpServer
from smtpsite.sending import UnknownSiteError, send_mail
from smtpsite.servers import ServerError, save_server
from smtpsite.sites import SiteError, create_site, find_site
from smtpsite.worker_cli import add_worker_commands

# Changes made by the commands are audited as the operating-system user's (smtpsite/audit.py).
smtpsite_cli = AppGroup("smtpsite", help="Manage smtpsite: sites, servers, settings, sending.",
                        callback=click.pass_context(audit.cli_group_callback))


def register_cli(app: Flask) -> None:
    """Attach the ``smtpsite`` command group to ``app``."""
    add_config_commands(smtpsite_cli)  # dkim, export, import (smtpsite/config_cli.py)
    app.cli.add_command(smtpsite_cli)
    add_key_commands(smtpsite_cli)  # rotate-secrets, check-keys (smtpsite/keys_cli.py)
    add_worker_commands(smtpsite_cli)  # worker, serve, queue (smtpsite/worker_cli.py)


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _site_or_fail(code: str | None):
    if code is None:
        return None
    site = find_site(code)
    if site is None:
        _fail(f"no site with code name {code!r}")
    return site


@smtpsite_cli.command("init")
def init_command() -> None:
    """Create or upgrade the database schema (running it again changes nothing)."""
    from smtpsite import MIGRATIONS_DIR

    upgrade(directory=MIGRATIONS_DIR)
    click.echo("database schema is up to date")
    # On an empty database: a demo site sending to the mail catcher (before the first user
    # makes the database non-empty), and the panel's first global administrator, whose
    # password is shown once here.
    from smtpsite.admin.auth import ensure_first_admin
    from smtpsite.catcher import ensure_demo_site

    if demo := ensure_demo_site(current_app):
        click.echo(f"Created the site {demo.code_name!r}: its default server is the mail catcher "
                   "(see Captured mail in the panel).")
    ensure_first_admin(click.echo)
    # A key that cannot read the stored secrets is said here, not at the first send.
    from smtpsite.keys import check_keys

    if problem := check_keys().message:
        click.echo(f"error: {problem}", err=True)


@smtpsite_cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins_command(as_json: bool) -> None:
    """List the installed delivery methods and their fields."""
    registry = current_app.extensions["smtpsite"].registry
    rows = [
        {
            "name": p.cls.name,
            "label": p.cls.label,
            "source": p.source,
            "fields": [
                {
                    "name": f.name, "label": f.label, "type": f.type, "required": f.required,
                    "default": f.default, "secret": f.secret,
                    "choices": [c for c, _ in f.choices],
                }
                for f in p.cls.fields
            ],
        }
        for p in registry
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']}  {row['label']}  ({row['source']})")
        for f in row["fields"]:
            flags = [f["type"]] + [n for n in ("required", "secret") if f[n]]
            default = "" if f["default"] in (None, "") else f" default={f['default']!r}"
            click.echo(f"    {f['name']}: {f['label']} [{', '.join(flags)}]{default}")


# -- sites ----------------------------------------------------------------------------
site_cli = AppGroup("site", help="Sites.")
smtpsite_cli.add_command(site_cli)


@site_cli.command("add")
@click.argument("code")
@click.option("--name", "display_name", required=True, help="Display name.")
@click.option("--domain", "domains", multiple=True, help="A domain name (repeatable).")
def site_add(code: str, display_name: str, domains: tuple[str, ...]) -> None:
    """Add a site with code name CODE."""
    try:
        site = create_site(code, display_name, domains)
    except SiteError as exc:
        _fail(str(exc))
    db.session.commit()
    click.echo(f"site {site.code_name} added (id {site.id})")


@site_cli.command("list")
def site_list() -> None:
    """List sites."""
    from smtpsite.models import Site

    for site in db.session.execute(select(Site).order_by(Site.code_key)).scalars():
        domains = ", ".join(site.domains or [])
        click.echo(f"{site.code_name}\t{site.display_name}\t{domains}")


# -- servers --------------------------------------------------------------------------
server_cli = AppGroup("server", help="SMTP servers.")
smtpsite_cli.add_command(server_cli)


def _parse_options(pairs: tuple[str, ...]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--option {pair!r} must be key=value")
        options[key.strip()] = value
    return options


@server_cli.command("add")
@click.argument("server_name")
@click.option("--method", default="network", show_default=True, help="Delivery method.")
@click.option("--priority", type=click.Choice(PRIORITIES), default="normal", show_default=True)
@click.option("--max-connections", type=int, default=1, show_default=True)
@click.option("--rate-limit", type=int, default=None, help="Messages per minute.")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@click.option("--global", "is_global", is_flag=True, help="Use it for all sites.")
@click.option("--site", "site_codes", multiple=True, help="A site code name (repeatable).")
@click.option("--display-name", default=None)
@click.option("--sender-filter", default=None, help="Addresses/domains it may send as.")
@click.option("--option", "option_pairs", multiple=True, help="A plugin option key=value.")
def server_add(
    server_name: str, method: str, priority: str, max_connections: int, rate_limit: int | None,
    disabled: bool, is_global: bool, site_codes: tuple[str, ...], display_name: str | None,
    sender_filter: str | None, option_pairs: tuple[str, ...],
) -> None:
    """Add an SMTP server (global, or for the given sites)."""
    if is_global and site_codes:
        _fail("choose either --global or --site, not both")
    sites = [_site_or_fail(code) for code in site_codes]
    try:
        server = save_server(
            None, server_name=server_name, method=method, options=_parse_options(option_pairs),
            priority=priority, enabled=not disabled, is_global=is_global, sites=sites,
            display_name=display_name, max_connections=max_connections, rate_limit=rate_limit,
            sender_filter=sender_filter,
        )
    except ServerError as exc:
        db.session.rollback()
        _fail(str(exc))
    db.session.commit()
    click.echo(f"server {server.server_name} added (id {server.id})")


def _server_scope(server: SmtpServer) -> str:
    return "all sites" if server.is_global else ", ".join(s.code_name for s in server.sites)


@server_cli.command("list")
def server_list() -> None:
    """List SMTP servers (no secrets)."""
    servers = db.session.execute(select(SmtpServer).order_by(SmtpServer.id)).scalars()
    for s in servers:
        state = "enabled" if s.enabled else "disabled"
        click.echo(
            f"{s.id}\t{s.server_name}\t{s.priority}\t{state}\t{s.method}\t"
            f"max={s.max_connections}\t{_server_scope(s)}"
        )


def _find_server(name_or_id: str) -> SmtpServer:
    query = select(SmtpServer).where(SmtpServer.server_name == name_or_id)
    if name_or_id.isdigit():
        query = select(SmtpServer).where(SmtpServer.id == int(name_or_id))
    matches = db.session.execute(query).scalars().all()
    if not matches:
        _fail(f"no server named {name_or_id!r}")
    if len(matches) > 1:
        ids = ", ".join(str(s.id) for s in matches)
        _fail(f"{len(matches)} servers are named {name_or_id!r} (ids {ids}): give the id")
    return matches[0]


@server_cli.command("enable")
@click.argument("server")
def server_enable(server: str) -> None:
    """Enable a server (by name or id)."""
    found = _find_server(server)
    found.enabled = True
    db.session.commit()
    click.echo(f"server {found.server_name} enabled")


@server_cli.command("disable")
@click.argument("server")
def server_disable(server: str) -> None:
    """Disable a server (by name or id): it is skipped from the next send on."""
    found = _find_server(server)
    found.enabled = False
    db.session.commit()
    click.echo(f"server {found.server_name} disabled")


# -- settings -------------------------------------------------------------------------
settings_cli = AppGroup("settings", help="Email settings (global or per site).")
smtpsite_cli.add_command(settings_cli)


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


@settings_cli.command("get")
@click.argument("key", required=False)
@click.option("--site", "site_code", default=None)
def settings_get(key: str | None, site_code: str | None) -> None:
    """Print KEY's effective value and where it comes from (all keys without KEY)."""
    site = _site_or_fail(site_code)
    try:
        values = {key: settings.resolve(key, site)} if key else settings.resolve_all(site)
    except settings.SettingError as exc:
        _fail(str(exc))
    for name, resolved in values.items():
        shown = resolved.value
        if settings.KEYS[name].secret:
            shown = "(set)" if resolved.value else "(empty)"
        click.echo(f"{name}\t{_show(shown)}\t({resolved.source})")


@settings_cli.command("set")
@click.argument("key")
@click.argument("value")
@click.option("--site", "site_code", default=None)
def settings_set(key: str, value: str, site_code: str | None) -> None:
    """Set KEY to VALUE globally or for a site."""
    site = _site_or_fail(site_code)
    try:
        settings.set_value(key, value, site)
    except settings.SettingError as exc:
        _fail(str(exc))
    db.session.commit()
    click.echo(f"{key} set" + (f" for {site.code_name}" if site else " globally"))


@settings_cli.command("clear")
@click.argument("key")
@click.option("--site", "site_code", default=None)
def settings_clear(key: str, site_code: str | None) -> None:
    """Remove KEY at this scope (a site goes back to inheriting the global value)."""
    site = _site_or_fail(site_code)
    try:
        removed = settings.clear(key, site)
    except settings.SettingError as exc:
        _fail(str(exc))
    db.session.commit()
    click.echo(f"{key} cleared" if removed else f"{key} was not set at this scope")


# -- routing and sending --------------------------------------------------------------
@smtpsite_cli.command("route")
@click.option("--site", "site_code", default=None, help="Site code name (none: global).")
@click.option("--sender", default=None, help="Sender address, for sender filters.")
def route_command(site_code: str | None, sender: str | None) -> None:
    """Show the server chain of a site, in order, and why each server is in it."""
    site = _site_or_fail(site_code)
    rows = routing.describe(site, sender)
    if not rows:
        click.echo("no server: email for this site waits in the queue until one is added")
        return
    for row in rows:
        click.echo(
            f"{row['position']}. {row['name']}  [{row['priority']}, {row['method']}]  "
            f"{row['reason']}  -> {row['state']}"
        )


@smtpsite_cli.command("send")
@click.option("--site", "site_code", default=None, help="Site code name (none: global).")
@click.option("--to", "to", multiple=True, required=True)
@click.option("--subject", required=True)
@click.option("--text", default=None)
@click.option("--html", default=None)
@click.option("--sender", default=None)
@click.option("--queue/--now", "queue", default=None, help="Queue it, or send at once.")
def send_command(
    site_code: str | None, to: tuple[str, ...], subject: str, text: str | None,
    html: str | None, sender: str | None, queue: bool | None,
) -> None:
    """Send one email; prints the Message-ID and the server; exits non-zero on failure."""
    try:
        result = send_mail(
            site_code, to=list(to), subject=subject, text=text, html=html, sender=sender,
            queue=queue,
        )
    except (MessageError, UnknownSiteError) as exc:
        _fail(str(exc))
    click.echo(f"Message-ID: {result.message_id}")
    click.echo(f"status: {result.status}")
    if result.server:
        click.echo(f"server: {result.server}")
    for attempt in result.attempts:
        click.echo(f"attempt: {attempt.server} {attempt.outcome} {attempt.code or ''} "
                   f"{attempt.message}".rstrip())
    if not result.ok:
        click.echo(f"error: {result.error}", err=True)
        sys.exit(1)
