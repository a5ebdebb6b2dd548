"""Import of a TOML configuration file: all of it or nothing, idempotent, saying what changes.

Everything is applied inside one database transaction with the same checks as the CLI and
the panel (``create_site``, ``settings.set_value``, ``save_server``); any error rolls the
whole transaction back, and so does ``dry_run``. Objects are matched as follows:

- sites by code name (case-insensitive);
- settings by key and scope (global, or the site they are listed under);
- servers by (server name, method, scope), where scope is "global" or the sorted code names
  of their sites; several servers with one identity are paired in order (the file's order
  against the database's ids). A server whose identity changes is a new server.

Import never deletes: sites, servers and settings missing from the file are left as they are.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import select

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.models import Site, SmtpServer
from smtpsite.registry import UnknownMethodError
from smtpsite.routing import server_options
from smtpsite.secrets import Secret
from smtpsite.servers import ServerError, save_server
from smtpsite.sites import SiteError, check_code_name, check_domains, create_site, find_site

REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
TOP_KEYS = ("settings", "sites", "servers")
SITE_KEYS = ("code_name", "display_name", "domains", "settings")
SERVER_KEYS = (
    "server_name", "display_name", "method", "priority", "enabled", "max_connections",
    "rate_limit", "sender_filter", "global", "sites", "options",
)
_SCALARS = (str, int, float, bool)


@dataclass
class Change:
    """What import does (or would do) to one object."""

    what: str
    status: str  # added / changed / unchanged
    fields: list[str] = field(default_factory=list)

    def line(self) -> str:
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.what}: {self.status}{detail}"


@dataclass
class ImportReport:
    """The outcome of an import: changes, errors with their places, and warnings."""

    dry_run: bool = False
    changes: list[Change] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether anything is (or would be) added or changed."""
        return any(c.status != "unchanged" for c in self.changes)

    def lines(self) -> list[str]:
        """What to print: one line per object, warnings, then a summary."""
        if self.errors:
            return []
        out = [c.line() for c in self.changes] + [f"warning: {w}" for w in self.warnings]
        counts = {s: sum(c.status == s for c in self.changes) for s in ("added", "changed",
                                                                          "unchanged")}
        out.append(", ".join(f"{n} {s}" for s, n in counts.items()))
        if not self.changed:
            out.append("nothing to change: the configuration already matches the file")
        elif self.dry_run:
            out.append("dry run: nothing was changed")
        return out


_TYPE_NAMES = {str: "text", int: "a whole number", bool: "true or false", list: "a list",
               dict: "a table"}


class _Importer:
    def __init__(self, report: ImportReport, environ: dict[str, str]) -> None:
        self.report = report
        self.environ = environ
        state = current_app.extensions["smtpsite"]
        self.registry = state.registry
        self.box = state.secrets

    # -- helpers ---------------------------------------------------------------------
    def error(self, place: str, message: str) -> None:
        self.report.errors.append((place, message))

    def check_keys(self, place: str, table: dict, allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                self.error(f"{place}.{key}" if place else key,
                           "unknown key (expected one of: " + ", ".join(allowed) + ")")

    def get(self, place: str, table: dict, key: str, kind: type, default: Any = None,
            required: bool = False) -> Any:
        """``table[key]`` checked against ``kind``; records an error and gives ``default``."""
        if key not in table:
            if required:
                self.error(f"{place}.{key}", "is required")
            return default
        value = table[key]
        # bool is a subclass of int: a whole number must not accept true/false.
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if wrong:
            self.error(f"{place}.{key}", f"must be {_TYPE_NAMES[kind]}")
            return default
        if kind is list and not all(isinstance(v, str) for v in value):
            self.error(f"{place}.{key}", "must be a list of text values")
            return default
        return value

    def value(self, place: str, raw: Any, *, secret: bool) -> Any:
        """A scalar value, with a whole-string ``${NAME}`` read from the environment."""
        if not isinstance(raw, _SCALARS):
            self.error(place, "must be a single value (text, number or true/false)")
            return None
        match = REFERENCE.match(raw) if isinstance(raw, str) else None
        if match:
            name = match.group(1)
            if name not in self.environ:
                self.error(place, f"environment variable {name} is not set")
                return None
            return Secret(self.environ[name]) if secret else self.environ[name]
        if secret and raw:
            self.report.warnings.append(f"{place}: secret written in plain text in the file; "
                                        "use a ${NAME} reference")
        return Secret(raw) if secret and isinstance(raw, str) else raw

    # -- settings --------------------------------------------------------------------
    def settings(self, place: str, table: Any, site: Site | None) -> None:
        if not isinstance(table, dict):
            self.error(place, "must be a table")
            return
        for name, raw in _flatten(table).items():
            key_place = f"{place}.{name}"
            key = settings.KEYS.get(name)
            if key is None:
                self.error(key_place, "unknown setting")
                continue
            raw = self.value(key_place, raw, secret=key.secret)
            if raw is None:
                continue
            try:
                new = key.clean(raw.reveal() if isinstance(raw, Secret) else raw)
                if key.global_only and site is not None:
                    raise settings.SettingError("is global only: it cannot be set for a site")
            except settings.SettingError as exc:
                self.error(key_place, str(exc))
                continue
            current = settings.resolve(name, site)
            own = current.source == ("site" if site is not None else "global")
            old = current.value.reveal() if isinstance(current.value, Secret) else current.value
            if own and old == new:
                status = "unchanged"  # not written: a secret would be re-encrypted
            else:
                settings.set_value(name, new, site)
                status = "changed" if own else "added"
            scope = f"site {site.code_name}" if site is not None else "global"
            self.report.changes.append(Change(f"setting {name} ({scope})", status))

    # -- sites -----------------------------------------------------------------------
    def sites(self, entries: Any) -> None:
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            self.error("sites", "must be a list of tables ([[sites]])")
            return
        seen: dict[str, int] = {}
        for index, entry in enumerate(entries):
            place = f"sites[{index}]"
            self.check_keys(place, entry, SITE_KEYS)
            site = self.site(place, entry, seen, index)
            if site is not None and "settings" in entry:
                self.settings(f"{place}.settings", entry["settings"], site)

    def site(self, place: str, entry: dict, seen: dict[str, int], index: int) -> Site | None:
        code = self.get(place, entry, "code_name", str, required=True)
        display = self.get(place, entry, "display_name", str)
        domains = self.get(place, entry, "domains", list)
        if code is None:
            return None
        try:
            code = check_code_name(code)
        except SiteError as exc:
            self.error(f"{place}.code_name", str(exc))
            return None
        if code.lower() in seen:
            self.error(f"{place}.code_name", f"same site as sites[{seen[code.lower()]}]")
            return None
        seen[code.lower()] = index
        if domains is not None:
            try:
                domains = check_domains(domains)
            except SiteError as exc:
                self.error(f"{place}.domains", str(exc))
                return None
        site = find_site(code)
        if site is None:
            site = create_site(code, display or code, domains or [])
            db.session.flush()
            self.report.changes.append(Change(f"site {code}", "added"))
            return site
        changed = []
        if site.code_name != code:
            site.code_name, changed = code, [*changed, "code_name"]
        if display is not None and display.strip() != site.display_name:
            site.display_name, changed = display.strip(), [*changed, "display_name"]
        if domains is not None and domains != list(site.domains or []):
            site.domains, changed = domains, [*changed, "domains"]
        self.report.changes.append(
            Change(f"site {code}", "changed" if changed else "unchanged", changed)
        )
        return site

    # -- servers ---------------------------------------------------------------------
    def servers(self, entries: Any) -> None:
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            self.error("servers", "must be a list of tables ([[servers]])")
            return
        existing: dict[tuple, list[SmtpServer]] = defaultdict(list)
        for server in db.session.execute(select(SmtpServer).order_by(SmtpServer.id)).scalars():
            existing[_identity(server.server_name, server.method, _scope(server))].append(server)
        for index, entry in enumerate(entries):
            self.server(f"servers[{index}]", entry, existing)

    def server(self, place: str, entry: dict, existing: dict[tuple, list[SmtpServer]]) -> None:
        self.check_keys(place, entry, SERVER_KEYS)
        errors_before = len(self.report.errors)
        name = self.get(place, entry, "server_name", str, required=True)
        method = self.get(place, entry, "method", str, required=True)
        is_global = self.get(place, entry, "global", bool, default=False)
        codes = self.get(place, entry, "sites", list, default=[])
        sender_filter = entry.get("sender_filter")
        if isinstance(sender_filter, list) and all(isinstance(v, str) for v in sender_filter):
            sender_filter = "\n".join(sender_filter)
        elif sender_filter is not None and not isinstance(sender_filter, str):
            self.error(f"{place}.sender_filter", "must be text or a list of text values")
        if is_global and codes:
            self.error(f"{place}.sites", "a global server (global = true) takes no site list")
        sites = []
        for j, code in enumerate(codes):
            site = find_site(code)
            if site is None:
                self.error(f"{place}.sites[{j}]", f"no site with code name {code!r}")
            sites.append(site)
        options_raw = self.get(place, entry, "options", dict, default={})
        secret_names = self._secret_fields(method)
        options = {
            key: self.value(f"{place}.options.{key}", raw, secret=key in secret_names)
            for key, raw in options_raw.items()
        }
        fields = dict(
            priority=self.get(place, entry, "priority", str, default="normal"),
            enabled=self.get(place, entry, "enabled", bool, default=True),
            display_name=self.get(place, entry, "display_name", str),
            max_connections=self.get(place, entry, "max_connections", int, default=1),
            rate_limit=self.get(place, entry, "rate_limit", int),
        )
        if name is None or method is None or len(self.report.errors) > errors_before:
            return
        scope = "global" if is_global else tuple(sorted(s.code_key for s in sites))
        matches = existing.get(_identity(name, method, scope))
        server = matches.pop(0) if matches else None
        before = _snapshot(server) if server is not None else None
        old_token = server.secrets if server is not None else None
        try:
            server = save_server(
                server, server_name=name, method=method, options=options, is_global=is_global,
                sites=sites, sender_filter=sender_filter, **fields,
            )
        except ServerError as exc:
            for key, message in exc.errors.items():
                self.error(f"{place}.{key}" if key else place, message)
            return
        # No flush before the secrets are put back: it would write an UPDATE for nothing.
        after = _snapshot(server)
        what = f"server {name} [{method}, {'global' if is_global else ', '.join(scope)}]"
        if before is None:
            self.report.changes.append(Change(what, "added"))
            return
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if not changed:
            server.secrets = old_token  # save_server re-encrypted the same values
        self.report.changes.append(Change(what, "changed" if changed else "unchanged", changed))

    def _secret_fields(self, method: str | None) -> frozenset[str]:
        try:
            return self.registry.get(method).secret_fields() if method else frozenset()
        except UnknownMethodError:
            return frozenset()  # save_server reports the unknown method

    # -- the whole file --------------------------------------------------------------
    def run(self, doc: dict[str, Any]) -> None:
        self.check_keys("", doc, TOP_KEYS)
        if "settings" in doc:
            self.settings("settings", doc["settings"], None)
        self.sites(doc.get("sites", []))
        self.servers(doc.get("servers", []))


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    # ``emails.format = 1`` written unquoted reads as a nested table: join the names back.
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _scope(server: SmtpServer) -> str | tuple[str, ...]:
    return "global" if server.is_global else tuple(sorted(s.code_key for s in server.sites))


def _identity(name: str, method: str, scope: str | tuple[str, ...]) -> tuple:
    return (name.strip().lower(), method, scope)


def _snapshot(server: SmtpServer) -> dict[str, Any]:
    """What import compares to tell "changed" from "unchanged" (secrets as ``Secret``)."""
    snap = {
        "server_name": server.server_name, "display_name": server.display_name,
        "method": server.method, "priority": server.priority, "enabled": server.enabled,
        "max_connections": server.max_connections, "rate_limit": server.rate_limit,
        "sender_filter": server.sender_filter, "global": server.is_global,
        "sites": sorted(s.code_key for s in server.sites),
    }
    snap.update({f"options.{k}": v for k, v in server_options(server).items()})
    return snap


def import_toml(
    data: bytes, *, source: str = "<file>", dry_run: bool = False
) -> ImportReport:
    """Apply a TOML configuration (see the module docstring); commit unless errors or dry run."""
    report = ImportReport(dry_run=dry_run)
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        report.errors.append((source, "is not UTF-8 text"))
        return report
    except tomllib.TOMLDecodeError as exc:
        report.errors.append((source, f"TOML syntax error: {exc}"))
        return report
    try:
        _Importer(report, dict(os.environ)).run(doc)
    except BaseException:
        db.session.rollback()
        raise
    if report.errors or dry_run:
        db.session.rollback()
    else:
        db.session.commit()
    return report
