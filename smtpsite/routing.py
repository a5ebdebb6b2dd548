"""The server chain of a site: which servers may send its mail, in which order, and why."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from flask import current_app
from sqlalchemy import or_, select
from sqlalchemy.orm import selectinload

from smtpsite import availability, chain_cache, settings
from smtpsite.addresses import AddressError, matches_sender_filter, parse_server_name
from smtpsite.delivery import ServerAddress
from smtpsite.extensions import db
from smtpsite.models import PRIORITY_RANK, Site, SmtpServer, server_sites


@dataclass
class ChainEntry:
    """One server in a site's chain, or one left out of it, with the reason."""

    key: str
    name: str
    method: str
    priority: str
    reason: str
    address: ServerAddress | None
    max_connections: int = 1
    rate_limit: int | None = None  # messages per minute, across every process
    server_id: int | None = None
    skipped: str | None = None
    # Plain options and decrypted secrets (as ``Secret``); never shown.
    options: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def usable(self) -> bool:
        """Whether the entry may be tried at all (not disabled, filtered or invalid)."""
        return self.skipped is None


def server_options(server: SmtpServer) -> dict[str, Any]:
    """The server's plugin options with its secrets decrypted (as ``Secret`` values)."""
    box = current_app.extensions["smtpsite"].secrets
    return {**(server.options or {}), **box.decrypt_mapping(server.secrets)}


def _settings_server(site: Site | None) -> ChainEntry | None:
    values = settings.resolve_all(site)
    server_name = values["emails.smtp_server"].value
    if not server_name:
        return None
    source = values["emails.smtp_server"].source
    scope = f"site {site.code_name}" if site is not None and source == "site" else "global"
    key = f"settings:site:{site.id}" if scope != "global" else "settings:global"
    entry = ChainEntry(
        key=key,
        name=server_name,
        method="network",
        priority="high",
        reason=f"default server from the {scope} email settings (always high priority)",
        address=None,
    )
    try:
        entry.address = parse_server_name(server_name)
    except AddressError as exc:
        entry.skipped = f"invalid server name: {exc}"
    entry.options = {"security": values["emails.smtp_security"].value}
    if values["emails.smtp_auth"].value == "oauth2":
        entry.options["auth"] = "oauth2"
        for name in ("provider", "tenant", "token_endpoint", "client_id", "client_secret",
                     "private_key", "scope", "mailbox"):
            value = values[f"emails.smtp_oauth_{name}"].value
            entry.options[name] = value or None
        return entry
    password = values["emails.smtp_password"].value
    username = values["emails.smtp_username"].value
    use_password = values["emails.smtp_auth"].value == "password" and bool(username)
    entry.options.update({
        "auth": "password" if use_password else "none",
        "username": username if use_password else None,
        "password": password if use_password and password else None,
    })
    return entry


def _entry(server: SmtpServer, reason: str) -> ChainEntry:
    entry = ChainEntry(
        key=server.key,
        name=server.server_name,
        method=server.method,
        priority=server.priority,
        reason=reason,
        address=None,
        max_connections=server.max_connections or 1,
        rate_limit=server.rate_limit,
        server_id=server.id,
    )
    try:
        entry.address = parse_server_name(server.server_name)
    except AddressError as exc:
        entry.skipped = f"invalid server name: {exc}"
    if not server.enabled:
        entry.skipped = "disabled"
    return entry


def explain_chain(site: Site | None, sender: str | None = None) -> list[ChainEntry]:
    """Every server that could serve ``site``, in chain order, with skipped ones marked.

    Order: the settings default server (high), then the site's servers, then global
    servers by id; stable-sorted high, normal, low. ``site`` None means global email.
    """
    entries = []
    for entry, sender_filter in _site_chain(site).entries:
        if entry.usable and sender and not matches_sender_filter(sender, sender_filter):
            entry = replace(entry, skipped="sender filter does not match " + sender, options={})
        entries.append(entry)
    return entries


@dataclass
class _SiteChain:
    """A site's chain before sender filters; shared by every caller: never modified."""

    entries: list[tuple[ChainEntry, str | None]]  # with each server's sender filter
    usable: list[ChainEntry]
    filtered: bool  # whether any usable server has a sender filter


def _site_chain(site: Site | None) -> _SiteChain:
    """Cached per site until a site, server, assignment or setting changes (chain_cache)."""
    site_id = site.id if site is not None else None
    return chain_cache.cached(("chain", site_id), lambda: _load_chain(site))


def _load_chain(site: Site | None) -> _SiteChain:
    entries: list[tuple[ChainEntry, str | None]] = []
    default = _settings_server(site)
    if default is not None:
        entries.append((default, None))
    query = select(SmtpServer).options(selectinload(SmtpServer.sites))
    if site is None:
        query = query.where(SmtpServer.is_global.is_(True))
    else:
        assigned = select(server_sites.c.server_id).where(server_sites.c.site_id == site.id)
        query = query.where(or_(SmtpServer.is_global.is_(True), SmtpServer.id.in_(assigned)))
    # populate_existing: servers this session loaded before are read again, not reused.
    servers = db.session.execute(query.order_by(SmtpServer.id)
                                 .execution_options(populate_existing=True)).scalars().all()
    # Site servers before global ones, each group by id.
    servers = sorted(servers, key=lambda s: (s.is_global, s.id))
    registry = current_app.extensions["smtpsite"].registry
    for server in servers:
        reason = "global server (all sites)" if server.is_global else f"assigned to {site.code_name}"
        entry = _entry(server, reason)
        if entry.usable and server.method not in registry:
            entry.skipped = f"delivery method {server.method!r} is not installed"
        if entry.usable:
            entry.options = server_options(server)
        entries.append((entry, server.sender_filter))
    entries.sort(key=lambda pair: PRIORITY_RANK.get(pair[0].priority, 1))
    usable = [entry for entry, _ in entries if entry.usable]
    filtered = any(entry.usable and sender_filter for entry, sender_filter in entries)
    return _SiteChain(entries, usable, filtered)


def chain_for(site: Site | None, sender: str | None = None) -> list[ChainEntry]:
    """The usable servers for ``site`` and ``sender``, in the order they are tried."""
    chain = _site_chain(site)
    if not chain.filtered or not sender:
        return list(chain.usable)
    return [e for e in explain_chain(site, sender) if e.usable]


def describe(site: Site | None, sender: str | None = None) -> list[dict[str, Any]]:
    """The chain for people (CLI, panel): order, name, priority, reason, state."""
    entries = explain_chain(site, sender)
    cooling = availability.cooling_down(e.key for e in entries if e.usable)
    rows = []
    for position, entry in enumerate(entries, 1):
        state = entry.skipped or ("cooling down after a failure" if entry.key in cooling else "ok")
        rows.append(
            {
                "position": position,
                "name": entry.name,
                "method": entry.method,
                "priority": entry.priority,
                "reason": entry.reason,
                "state": state,
                "key": entry.key,
            }
        )
    return rows
