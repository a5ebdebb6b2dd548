"""Email settings: typed keys with a global value and optional per-site overrides."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import select

from smtpsite import chain_cache
from smtpsite.addresses import AddressError, check_address, parse_server_name
from smtpsite.extensions import db
from smtpsite.models import Setting, Site
from smtpsite.secrets import Secret, SecretKeyError
from smtpsite.sites import SiteError, check_domains


class SettingError(ValueError):
    """A settings key or value is not acceptable."""


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise SettingError("must be true or false")


def _parse_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise SettingError("must be a whole number")
    try:
        return int(str(raw).strip())
    except ValueError:
        raise SettingError("must be a whole number") from None


def _parse_text(raw: Any) -> str:
    text = str(raw)
    if "\r" in text or "\n" in text or "\x00" in text:
        raise SettingError("must be a single line")
    return text.strip()


def _parse_pem(raw: Any) -> str:
    # A PEM block spans several lines: keep them, with one line-end style.
    text = str(raw).replace("\r\n", "\n").replace("\r", "\n").strip()
    if "\x00" in text:
        raise SettingError("must not contain NUL characters")
    return text


@dataclass(frozen=True)
class SettingKey:
    """A settings key: its type, default, and where it may be set."""

    name: str
    label: str
    parse: Callable[[Any], Any]
    default: Any
    help: str = ""
    choices: tuple[str, ...] = ()
    global_only: bool = False
    secret: bool = False
    minimum: int | None = None
    # Extra check on the parsed value (e.g. an address or a server name).
    check: Callable[[Any], None] | None = None

    def clean(self, raw: Any) -> Any:
        """Parse and check a raw value; raise ``SettingError`` with a clear message."""
        value = self.parse(raw)
        if self.choices and value not in self.choices:
            raise SettingError("must be one of: " + ", ".join(self.choices))
        if self.minimum is not None and value < self.minimum:
            raise SettingError(f"must be at least {self.minimum}")
        if self.check is not None and value not in ("", None):
            self.check(value)
        return value


def _check_address(value: str) -> None:
    try:
        check_address(value)
    except AddressError as exc:
        raise SettingError(str(exc)) from None


def _check_server_name(value: str) -> None:
    try:
        parse_server_name(value)
    except AddressError as exc:
        raise SettingError(str(exc)) from None


def _check_domain(value: str) -> None:
    try:
        check_domains([value])
    except SiteError as exc:
        raise SettingError(str(exc)) from None


_DNS_LABELS = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


def _check_dns_label(value: str) -> None:
    if not _DNS_LABELS.match(value):
        raise SettingError("must be a DNS label: letters, digits and '-' (dots between labels)")


def _check_address_list(value: str) -> None:
    for address in split_addresses(value):
        _check_address(address)


def _check_webhook(value: str) -> None:
    if not re.match(r"^https?://[^\s/]+", value):
        raise SettingError("must be an http:// or https:// URL")


def split_addresses(value: str) -> list[str]:
    """The addresses of a comma-separated settings value (empty entries dropped)."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _check_dkim_key(value: str) -> None:
    from smtpsite.dkim import check_private_key  # smtpsite.dkim reads settings: import late

    try:
        check_private_key(value)
    except ValueError as exc:
        raise SettingError(str(exc)) from None


KEYS: dict[str, SettingKey] = {
    k.name: k
    for k in (
        SettingKey("emails.enabled", "Enable emails", _parse_bool, True,
                   "Off: nothing is sent; emails still wait in the queue."),
        SettingKey("emails.queue_enabled", "Enable email queue", _parse_bool, True,
                   "On: emails are queued and sent in the background. Off: sent at once."),
        # 100: on PostgreSQL each batch costs a fixed ~30 ms of round trips (claim, slot lease,
        # results); 100 emails share it at a moderate wait for newly queued mail.
        SettingKey("emails.batch_size", "Batch size", _parse_int, 100,
                   "Emails read from the queue per fetch.", global_only=True, minimum=1),
        SettingKey("emails.archive_days", "Archive emails (days)", _parse_int, 0,
                   "Keep sent emails this many days; 0 deletes them after sending.", minimum=0),
        SettingKey("emails.format", "Email format", _parse_text, "html",
                   "html, plaintext, or both (HTML with a plain-text alternative).",
                   choices=("html", "plaintext", "both")),
        SettingKey("emails.encoding", "Email encoding", _parse_text, "utf-8",
                   "Character set of subject and body.", choices=("utf-8",)),
        SettingKey("emails.default_sender", "No-reply sender address", _parse_text,
                   "no-reply@localhost.local", "Sender used when a message names none.",
                   check=_check_address),
        SettingKey("emails.smtp_server", "SMTP server", _parse_text, "",
                   "The site's default server (host or host:port); tried first, as high priority.",
                   check=_check_server_name),
        SettingKey("emails.smtp_username", "SMTP user name", _parse_text, ""),
        SettingKey("emails.smtp_password", "SMTP password", _parse_text, "", secret=True),
        SettingKey("emails.smtp_security", "SMTP security", _parse_text, "none",
                   "none, starttls, or ssl (implicit TLS).", choices=("none", "starttls", "ssl")),
        SettingKey("emails.smtp_auth", "SMTP sign-in", _parse_text, "password",
                   "none; password (user name and password, none while no user name is set); "
                   "or oauth2 (the SMTP OAuth keys below).",
                   choices=("none", "password", "oauth2")),
        SettingKey("emails.smtp_oauth_provider", "SMTP OAuth provider", _parse_text, "microsoft",
                   "microsoft (Microsoft 365), google (Google Workspace), or generic.",
                   choices=("microsoft", "google", "generic")),
        SettingKey("emails.smtp_oauth_tenant", "SMTP OAuth tenant", _parse_text, "",
                   "Microsoft 365: the directory (tenant) ID or domain, e.g. contoso.onmicrosoft.com."),
        SettingKey("emails.smtp_oauth_token_endpoint", "SMTP OAuth token endpoint", _parse_text, "",
                   "Empty for Microsoft (from the tenant) and Google; required for generic."),
        SettingKey("emails.smtp_oauth_client_id", "SMTP OAuth client ID", _parse_text, "",
                   "Microsoft: the application (client) ID; Google: the service account's email."),
        SettingKey("emails.smtp_oauth_client_secret", "SMTP OAuth client secret", _parse_text, "",
                   "The client secret's value (Microsoft, generic).", secret=True),
        SettingKey("emails.smtp_oauth_private_key", "SMTP OAuth service account key", _parse_pem, "",
                   "Google: the service account's private key (PEM) or JSON key file.", secret=True),
        SettingKey("emails.smtp_oauth_scope", "SMTP OAuth scope", _parse_text, "",
                   "Empty for the provider's default."),
        SettingKey("emails.smtp_oauth_mailbox", "SMTP OAuth mailbox", _parse_text, "",
                   "The mailbox to sign in and send as."),
        SettingKey("emails.server_cooldown", "Server cool-down (seconds)", _parse_int, 60,
                   "A server that failed is skipped this long.", global_only=True, minimum=0),
        SettingKey("emails.retry_window", "Retry window (seconds)", _parse_int, 3600,
                   "Failed emails are retried automatically this long after the first attempt.",
                   global_only=True, minimum=0),
        SettingKey("emails.sending_timeout", "Sending timeout (seconds)", _parse_int, 1800,
                   "An email left 'sending' by a worker that died is claimable after this.",
                   global_only=True, minimum=1),
        SettingKey("emails.messages_per_connection", "Messages per connection", _parse_int, 50,
                   "A connection is closed and reopened after this many messages.",
                   global_only=True, minimum=1),
        SettingKey("emails.dkim_domain", "DKIM domain", _parse_text, "",
                   "Signing domain (d=); usually the domain of the sender addresses.",
                   check=_check_domain),
        SettingKey("emails.dkim_selector", "DKIM selector", _parse_text, "",
                   "Selector (s=): the key is published at <selector>._domainkey.<domain>.",
                   check=_check_dns_label),
        SettingKey("emails.dkim_private_key", "DKIM private key", _parse_pem, "",
                   "RSA private key (PEM). With domain and selector set, every email is signed.",
                   secret=True, check=_check_dkim_key),
        # Operations: health checks and alerts (all global).
        SettingKey("emails.health_check_interval", "Health check interval (seconds)", _parse_int,
                   300, "A worker checks every enabled server this often (sends nothing); 0: never.",
                   global_only=True, minimum=0),
        SettingKey("emails.alert_recipients", "Alert recipients", _parse_text, "",
                   "Comma-separated addresses told when a server fails or recovers, a fallback "
                   "server rescued a message, or the queue backs up.", global_only=True,
                   check=_check_address_list),
        SettingKey("emails.alert_webhook", "Alert webhook", _parse_text, "",
                   "An http(s) URL that receives each alert as a JSON POST.", global_only=True,
                   secret=True, check=_check_webhook),
        SettingKey("emails.alert_queue_threshold", "Queue backlog alert threshold", _parse_int,
                   1000, "Alert when more emails than this wait in the queue; 0: never.",
                   global_only=True, minimum=0),
        SettingKey("emails.alert_rescue_cooldown", "Fallback alert cool-down (seconds)",
                   _parse_int, 3600, "At most one 'fallback rescued a message' alert per failing "
                   "server in this time.", global_only=True, minimum=0),
        # Staging safety switches.
        SettingKey("emails.override_recipients", "Override recipients", _parse_text, "",
                   "Comma-separated addresses: when set, every email goes to these instead (the "
                   "original recipients are kept in an X-Original-Recipients header).",
                   check=_check_address_list),
        SettingKey("emails.simulate", "Simulate sending", _parse_bool, False,
                   "On: nothing leaves; every email is recorded as sent (attempt 'simulated').",
                   global_only=True),
        SettingKey("emails.fail_all", "Fail every send", _parse_bool, False,
                   "On: every send fails as a temporary failure (to rehearse alerts); emails "
                   "wait in the queue.", global_only=True),
    )
}


def get_key(name: str) -> SettingKey:
    """Return the key named ``name`` or raise ``SettingError``."""
    try:
        return KEYS[name]
    except KeyError:
        raise SettingError(f"unknown setting {name!r}") from None


def _encode(key: SettingKey, value: Any) -> str:
    if key.secret:
        plain = value.reveal() if isinstance(value, Secret) else str(value)
        return current_app.extensions["smtpsite"].secrets.encrypt(plain)
    return json.dumps(value)


def _decode(key: SettingKey, stored: str) -> Any:
    if key.secret:
        return Secret(current_app.extensions["smtpsite"].secrets.decrypt(stored))
    return json.loads(stored)


@dataclass(frozen=True)
class Resolved:
    """A value and where it came from: ``site``, ``global`` or ``default``."""

    value: Any
    source: str


def _site_id(site: Site | int | None) -> int | None:
    if isinstance(site, Site):
        if site.id is None:
            # A site added but not yet flushed has no id: without one its value would be
            # read or written as the global value.
            db.session.flush()
        return site.id
    return site


def resolve(name: str, site: Site | int | None = None) -> Resolved:
    """The value of ``name`` for ``site``: the site's, else the global, else the default."""
    get_key(name)
    return _unpack(_resolved(_site_id(site))[name])


def get(name: str, site: Site | int | None = None) -> Any:
    """The effective value of ``name`` for ``site`` (``None`` = global)."""
    return resolve(name, site).value


def resolve_all(site: Site | int | None = None) -> dict[str, Resolved]:
    """Every key's effective value for ``site`` (cached until the settings change)."""
    return {name: _unpack(found) for name, found in _resolved(_site_id(site)).items()}


def _unpack(found: Resolved | SecretKeyError) -> Resolved:
    if isinstance(found, SecretKeyError):
        raise found  # only asking for that secret fails, as when each key was read alone
    return found


def _resolved(site_id: int | None) -> dict[str, Resolved | SecretKeyError]:
    # Shared by every caller until a change to the settings renews the configuration token
    # (smtpsite.chain_cache): callers must not modify it.
    return chain_cache.cached(("settings", site_id), lambda: _load_all(site_id))


def _decoded(key: SettingKey, stored: str, source: str) -> Resolved | SecretKeyError:
    try:
        return Resolved(_decode(key, stored), source)
    except SecretKeyError as exc:
        return exc


def _load_all(site_id: int | None) -> dict[str, Resolved | SecretKeyError]:
    query = select(Setting.key, Setting.site_id, Setting.value)
    query = query.where(
        Setting.site_id.is_(None) | (Setting.site_id == site_id)
        if site_id is not None
        else Setting.site_id.is_(None)
    )
    stored: dict[tuple[str, int | None], str] = {
        (row.key, row.site_id): row.value for row in db.session.execute(query)
    }
    result: dict[str, Resolved | SecretKeyError] = {}
    for name, key in KEYS.items():
        scope = None if key.global_only else site_id
        if scope is not None and (name, scope) in stored:
            result[name] = _decoded(key, stored[(name, scope)], "site")
        elif (name, None) in stored:
            result[name] = _decoded(key, stored[(name, None)], "global")
        else:
            result[name] = Resolved(Secret("") if key.secret else key.default, "default")
    return result


def read_global(*names: str) -> dict[str, Any]:
    """The global values of non-secret ``names`` read on a connection of their own.

    For code running while a send is in flight (the failover engine), which must neither
    hold the caller's session open nor touch its unit of work.
    """
    keys = [get_key(name) for name in names]
    with db.engine.connect() as conn:
        rows = conn.execute(select(Setting.key, Setting.value).where(
            Setting.key.in_(names), Setting.site_id.is_(None))).all()
    stored = dict(rows)
    return {k.name: json.loads(stored[k.name]) if k.name in stored else k.default for k in keys
            if not k.secret}


def set_value(name: str, raw: Any, site: Site | int | None = None) -> Any:
    """Store ``raw`` (parsed and checked) for ``site`` or globally; return the clean value.

    The caller commits.
    """
    key = get_key(name)
    site_id = _site_id(site)
    if key.global_only and site_id is not None:
        raise SettingError(f"{name} is global only: it cannot be set for a site")
    try:
        value = key.clean(raw.reveal() if isinstance(raw, Secret) else raw)
    except SettingError as exc:
        raise SettingError(f"{name} {exc}") from None
    row = _stored_row(name, site_id)
    if row is None:
        row = Setting(key=name, site_id=site_id, value="")
        db.session.add(row)
    row.value = _encode(key, value)
    return value


def _stored_row(name: str, site_id: int | None) -> Setting | None:
    """The row holding ``name`` at exactly this scope (a site's, or the global one)."""
    scope = Setting.site_id == site_id if site_id is not None else Setting.site_id.is_(None)
    return db.session.execute(
        select(Setting).where(Setting.key == name, scope)
    ).scalar_one_or_none()


def clear(name: str, site: Site | int | None = None) -> bool:
    """Remove the value of ``name`` at this scope (a site goes back to inheriting)."""
    get_key(name)
    site_id = _site_id(site)
    row = _stored_row(name, site_id)
    if row is None:
        return False
    db.session.delete(row)
    return True
