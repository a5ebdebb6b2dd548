"""Export of sites, SMTP servers and settings as TOML, with secrets as ``${NAME}`` references.

Secret names are derived from where the secret lives, upper-cased, with every run of
other characters turned into ``_`` (and ``_2``, ``_3``... when two places give one name):

- a global secret setting: ``SMTPSITE_SECRET_SETTING_<KEY>``
- a site's secret setting: ``SMTPSITE_SECRET_SITE_<CODE NAME>_<KEY>``
- a server's secret option: ``SMTPSITE_SECRET_SERVER_<SERVER NAME>_<OPTION>``
"""

from __future__ import annotations

import re
from typing import Any

import tomli_w
from flask import current_app
from sqlalchemy import select

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.models import Setting, Site, SmtpServer
from smtpsite.secrets import Secret

ENV_PREFIX = "SMTPSITE_SECRET_"


def env_name(*parts: str) -> str:
    """An environment variable name made of ``parts`` (see the module docstring)."""
    joined = "_".join(re.sub(r"[^A-Z0-9]+", "_", p.upper()).strip("_") for p in parts)
    return ENV_PREFIX + joined


def reference(name: str) -> str:
    """The ``${NAME}`` text that stands for a secret in an exported file."""
    return "${" + name + "}"


class _Names:
    """Hands out unique variable names and remembers where each secret came from."""

    def __init__(self) -> None:
        self.used: dict[str, str] = {}

    def take(self, place: str, *parts: str) -> str:
        base = name = env_name(*parts)
        counter = 1
        while name in self.used:
            counter += 1
            name = f"{base}_{counter}"
        self.used[name] = place
        return reference(name)


def _settings_table(site: Site | None, place: str, names: _Names) -> dict[str, Any]:
    site_id = site.id if site is not None else None
    query = select(Setting.key).where(
        Setting.site_id == site_id if site_id is not None else Setting.site_id.is_(None)
    )
    table: dict[str, Any] = {}
    for name in sorted(db.session.execute(query).scalars()):
        if name not in settings.KEYS:
            continue  # a key this version no longer knows: nothing could import it
        value = settings.resolve(name, site).value
        if isinstance(value, Secret):
            if not value:
                table[name] = ""
                continue
            scope = ("SITE", site.code_name) if site is not None else ("SETTING",)
            value = names.take(f"{place}.{name}", *scope, name)
        table[name] = value
    return table


def _server_entry(server: SmtpServer, place: str, names: _Names) -> tuple[dict, dict]:
    entry: dict[str, Any] = {"server_name": server.server_name}
    if server.display_name:
        entry["display_name"] = server.display_name
    entry.update(
        method=server.method, priority=server.priority, enabled=bool(server.enabled),
        max_connections=server.max_connections,
    )
    if server.rate_limit is not None:
        entry["rate_limit"] = server.rate_limit
    if server.sender_filter:
        entry["sender_filter"] = server.sender_filter.split("\n")
    entry["global"] = bool(server.is_global)
    if not server.is_global:
        entry["sites"] = sorted(s.code_name for s in server.sites)
    options = {k: v for k, v in (server.options or {}).items() if v is not None}
    box = current_app.extensions["smtpsite"].secrets
    for option in box.decrypt_mapping(server.secrets):
        options[option] = names.take(
            f"{place}.options.{option}", "SERVER", server.server_name, option
        )
    return entry, dict(sorted(options.items()))


def export_document() -> tuple[dict[str, Any], dict[str, str]]:
    """The configuration as a dict (as TOML reads it) and ``{variable: place}`` of its secrets."""
    names = _Names()
    doc: dict[str, Any] = {}
    global_settings = _settings_table(None, "settings", names)
    if global_settings:
        doc["settings"] = global_settings
    sites = db.session.execute(select(Site).order_by(Site.code_key)).scalars().all()
    doc["sites"] = []
    for index, site in enumerate(sites):
        entry: dict[str, Any] = {
            "code_name": site.code_name, "display_name": site.display_name,
            "domains": list(site.domains or []),
        }
        site_settings = _settings_table(site, f"sites[{index}].settings", names)
        if site_settings:
            entry["settings"] = site_settings
        doc["sites"].append(entry)
    doc["servers"] = []
    servers = db.session.execute(select(SmtpServer).order_by(SmtpServer.id)).scalars().all()
    for index, server in enumerate(servers):
        entry, options = _server_entry(server, f"servers[{index}]", names)
        doc["servers"].append({**entry, "options": options})
    return doc, names.used


def _table(header: str, values: dict[str, Any]) -> str:
    # Only scalars and lists of scalars here, so tomli_w writes plain ``key = value`` lines.
    return f"{header}\n{tomli_w.dumps(values)}"


def render(doc: dict[str, Any], secrets: dict[str, str]) -> str:
    """TOML text for ``doc`` with a header naming the variables an import needs."""
    lines = [
        "# smtpsite configuration: sites, SMTP servers and settings.",
        "# Apply with: flask --app app smtpsite import FILE [--dry-run]",
    ]
    if secrets:
        lines.append("# Secrets are not in this file. Set these environment variables to import it:")
        lines.extend(f"#   {name}  ({place})" for name, place in secrets.items())
    else:
        lines.append("# No secrets: no environment variables are needed to import it.")
    parts = ["\n".join(lines) + "\n"]
    if "settings" in doc:
        parts.append(_table("[settings]", doc["settings"]))
    for site in doc["sites"]:
        plain = {k: v for k, v in site.items() if k != "settings"}
        parts.append(_table("[[sites]]", plain))
        if "settings" in site:
            parts.append(_table("[sites.settings]", site["settings"]))
    for server in doc["servers"]:
        plain = {k: v for k, v in server.items() if k != "options"}
        parts.append(_table("[[servers]]", plain) + _table("[servers.options]", server["options"]))
    return "\n".join(parts)


def export_toml() -> str:
    """The whole configuration as TOML text (deterministic: same data, same text)."""
    return render(*export_document())
