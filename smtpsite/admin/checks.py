"""Running a server's connection check from the panel and keeping its result."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from flask import current_app

from smtpsite.addresses import AddressError, parse_server_name
from smtpsite.delivery import CheckResult, DeliveryMethod, OptionsError, Secret
from smtpsite.extensions import db
from smtpsite.models import ServerHealth, SmtpServer, utcnow
from smtpsite.registry import UnknownMethodError
from smtpsite.routing import server_options

log = logging.getLogger(__name__)
MASK = "********"


def redact(lines: Iterable[str], options: Mapping[str, Any]) -> list[str]:
    """Lines with every secret value of ``options`` masked (a plugin might echo one)."""
    secrets = [v.reveal() for v in options.values() if isinstance(v, Secret) and v.reveal()]
    cleaned = []
    for line in lines:
        for secret in secrets:
            line = line.replace(secret, MASK)
        cleaned.append(line)
    return cleaned


def make_plugin(server_name: str, method: str, options: Mapping[str, Any]) -> DeliveryMethod:
    """An instance of ``method``'s plugin for ``server_name`` with checked options."""
    state = current_app.extensions["smtpsite"]
    cls = state.registry.get(method)
    cleaned = cls.clean_options(options, state.plugin_context)
    # Keep secrets wrapped so that nothing prints them by accident.
    cleaned = {k: Secret(v) if k in cls.secret_fields() and isinstance(v, str) else v
               for k, v in cleaned.items()}
    return cls(parse_server_name(server_name), cleaned, state.plugin_context)


def check_with(server_name: str, method: str, options: Mapping[str, Any], sender: str,
               recipient: str) -> CheckResult:
    """Run the plugin's check (it sends nothing); problems become a failed result, never a 500."""
    try:
        plugin = make_plugin(server_name, method, options)
    except (UnknownMethodError, AddressError, OptionsError) as exc:
        return CheckResult(False, f"the server is misconfigured: {exc}")
    try:
        result = plugin.check(sender, recipient)
    except Exception as exc:  # a plugin bug must not become a 500 (nor leak options)
        log.error("delivery plugin %s raised %s during a check", method, type(exc).__name__)
        return CheckResult(False, f"the {method} plugin failed during the check "
                                  f"({type(exc).__name__})")
    result.transcript = redact(result.transcript, options)
    result.message = redact([result.message], options)[0]
    return result


def check_server(server: SmtpServer, sender: str, recipient: str) -> CheckResult:
    """Check a stored server and record the outcome in its health row."""
    result = check_with(server.server_name, server.method, server_options(server), sender,
                        recipient)
    record_check(server.key, result)
    return result


def record_check(server_key: str, result: CheckResult) -> None:
    """Store the last check's outcome where the server list reads it."""
    row = db.session.get(ServerHealth, server_key)
    if row is None:
        row = ServerHealth(server_key=server_key)
        db.session.add(row)
    row.last_check_at = utcnow()
    row.last_check_ok = result.ok
    row.last_check_message = result.message[:2000]
    db.session.commit()
