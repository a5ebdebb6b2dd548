"""Creating and changing SMTP server records, with the checks the CLI and the panel share."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask import current_app

from smtpsite.addresses import AddressError, check_address, parse_server_name
from smtpsite.delivery import OptionsError, Secret
from smtpsite.extensions import db
from smtpsite.models import PRIORITIES, Site, SmtpServer
from smtpsite.registry import UnknownMethodError
from smtpsite.routing import server_options


class ServerError(ValueError):
    """A server record is not acceptable; ``errors`` maps a field to its message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" if k else v for k, v in self.errors.items()))


def _clean_sender_filter(text: str | None) -> str | None:
    if not text or not text.strip():
        return None
    entries = [e for e in text.replace(",", "\n").split() if e]
    for entry in entries:
        if "@" in entry and not entry.startswith("@"):
            check_address(entry)
        elif not all(part for part in entry.lstrip("@").split(".")):
            raise AddressError(f"{entry!r} is not an address or a domain")
    return "\n".join(entries)


def save_server(
    server: SmtpServer | None,
    *,
    server_name: str,
    method: str,
    options: Mapping[str, Any],
    priority: str = "normal",
    enabled: bool = True,
    is_global: bool = False,
    sites: Iterable[Site] = (),
    display_name: str | None = None,
    max_connections: int = 1,
    rate_limit: int | None = None,
    sender_filter: str | None = None,
) -> SmtpServer:
    """Validate everything, then create or update ``server`` (the caller commits).

    A secret option left empty keeps the value already stored. Choosing global drops the
    site list, as in the original.
    """
    state = current_app.extensions["smtpsite"]
    errors: dict[str, str] = {}
    try:
        parse_server_name(server_name)
    except AddressError as exc:
        errors["server_name"] = str(exc)
    if priority not in PRIORITIES:
        errors["priority"] = "must be one of: " + ", ".join(PRIORITIES)
    if not isinstance(max_connections, int) or max_connections < 1:
        errors["max_connections"] = "must be a whole number of at least 1"
    if rate_limit is not None and (not isinstance(rate_limit, int) or rate_limit < 1):
        errors["rate_limit"] = "must be empty or a whole number of at least 1"
    try:
        sender_filter = _clean_sender_filter(sender_filter)
    except AddressError as exc:
        errors["sender_filter"] = str(exc)
    site_list = list(sites)
    if not is_global and not site_list:
        errors["sites"] = "choose 'all sites' or at least one site"
    try:
        cls = state.registry.get(method)
    except UnknownMethodError as exc:
        errors["method"] = str(exc)
        raise ServerError(errors) from None

    secret_names = cls.secret_fields()
    existing: dict[str, Any] = {}
    if server is not None and server.method == method:
        existing = server_options(server)
    merged = dict(options)
    for name in secret_names:
        # An empty secret field means "keep the stored one".
        if not _present(merged.get(name)) and _present(existing.get(name)):
            merged[name] = existing[name]
    try:
        cleaned = cls.clean_options(merged, state.plugin_context)
    except OptionsError as exc:
        errors.update({f"options.{k}" if k else "options": v for k, v in exc.errors.items()})
    if errors:
        raise ServerError(errors)

    if server is None:
        server = SmtpServer()
        db.session.add(server)
    server.server_name = server_name.strip()
    server.display_name = (display_name or "").strip() or None
    server.method = method
    server.priority = priority
    server.enabled = enabled
    server.max_connections = max_connections
    server.rate_limit = rate_limit
    server.sender_filter = sender_filter
    server.options = {k: v for k, v in cleaned.items() if k not in secret_names}
    server.secrets = state.secrets.encrypt_mapping(
        {k: v for k, v in cleaned.items() if k in secret_names}
    )
    server.is_global = is_global
    server.sites = [] if is_global else site_list
    return server


def _present(value: Any) -> bool:
    if isinstance(value, Secret):
        return bool(value.reveal())
    return value not in (None, "")


def secret_status(server: SmtpServer) -> dict[str, bool]:
    """For each secret option of the server's method: whether a value is stored."""
    state = current_app.extensions["smtpsite"]
    try:
        names = state.registry.get(server.method).secret_fields()
    except UnknownMethodError:
        return {}
    stored = state.secrets.decrypt_mapping(server.secrets)
    return {name: name in stored for name in sorted(names)}
