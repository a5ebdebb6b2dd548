"""The audit log: every change made through the panel or the CLI, who made it, before and after.

One central mechanism, so that views and commands need no audit code of their own:

- the actor (the panel's signed-in user, or ``cli:<OS user>``) is held in a context
  variable, set by a ``before_request`` hook of the admin panel and by the ``smtpsite``
  command group; writes made with no actor (workers, site code's ``send_mail``) are not
  audited;
- SQLAlchemy session events turn the new, changed and deleted sites, servers, settings,
  users and queued emails of each flush into audit rows, written in the same transaction
  (a rolled-back change leaves no entry);
- an engine event records the queue's bulk SQL operations (resend, delete, expire).

Secrets are masked before they are stored: server secret options, secret settings and
password hashes become ``MASK``.
"""

from __future__ import annotations

import contextvars
import getpass
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import click
from flask import current_app
from sqlalchemy import Delete, Update, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, attributes

from smtpsite.extensions import db
from smtpsite.models import AuditEntry, Email, Setting, Site, SmtpServer, User, utcnow

log = logging.getLogger(__name__)
MASK = "********"
AUDIT = AuditEntry.__table__
# Audited models, the object type their entries carry, and fields never worth an entry.
TYPES: dict[type, str] = {Site: "site", SmtpServer: "server", Setting: "setting", User: "user",
                          Email: "email"}
IGNORED = {"id", "created_at", "updated_at", "last_login_at", "code_key"}
# Email rows are large: an entry shows what identifies the queued email.
EMAIL_FIELDS = ("message_id", "site_id", "status", "sender", "to", "cc", "bcc", "subject",
                "last_result")
# Commands that run workers: what they write is the workers', not an operator's.
UNAUDITED_COMMANDS = {"worker", "serve"}


@dataclass(frozen=True)
class Actor:
    """Who is making changes: a signed-in panel user or a CLI user."""

    name: str
    channel: str  # panel / cli


_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("smtpsite_audit_actor",
                                                                      default=None)


def current_actor() -> Actor | None:
    """The actor of the current request or command, if any."""
    return _actor.get()


def set_actor(name: str, channel: str) -> contextvars.Token:
    """Make ``name`` the actor of what follows; pass the token to ``reset_actor``."""
    return _actor.set(Actor(name[:254], channel))


def reset_actor(token: contextvars.Token) -> None:
    """End what ``set_actor`` started."""
    _actor.reset(token)


@contextmanager
def acting_as(name: str, channel: str) -> Iterator[None]:
    """Audit the changes made inside the block as made by ``name``."""
    token = set_actor(name, channel)
    try:
        yield
    finally:
        reset_actor(token)


def cli_actor_name() -> str:
    """``cli:`` and the operating-system user running the command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. in a container)
        user = f"uid {os.getuid()}"
    return f"cli:{user}"


def cli_group_callback(ctx: click.Context) -> None:
    """The ``smtpsite`` group's callback: audit the command's changes as the CLI user."""
    if ctx.invoked_subcommand in UNAUDITED_COMMANDS:
        return
    token = set_actor(cli_actor_name(), "cli")
    ctx.call_on_close(lambda: reset_actor(token))


def record(action: str, object_type: str, object_id: str | None, summary: str, *,
           site_id: int | None = None, before: dict[str, Any] | None = None,
           after: dict[str, Any] | None = None, connection: Connection | None = None) -> bool:
    """Write one audit entry for the current actor; False (nothing written) without one."""
    actor = current_actor()
    if actor is None:
        return False
    row = {"at": utcnow(), "actor": actor.name, "channel": actor.channel, "action": action,
           "object_type": object_type, "object_id": object_id, "site_id": site_id,
           "summary": summary[:2000], "before": before, "after": after}
    if connection is not None:
        connection.execute(AUDIT.insert(), [row])
    else:
        with db.engine.begin() as conn:
            conn.execute(AUDIT.insert(), [row])
    return True


def record_inserted(connection: Connection, obj: Any) -> None:
    """The entry of an object inserted without the session (a queued email), if audited."""
    if current_actor() is None:
        return
    entry = _entry("queue" if isinstance(obj, Email) else "create", obj, None, snapshot(obj))
    record(entry["action"], entry["object_type"], entry["object_id"], entry["summary"],
           site_id=entry["site_id"], after=entry["after"], connection=connection)


# -- what an object looks like in an entry ---------------------------------------------
def _plain(value: Any) -> Any:
    """A JSON-safe copy of a column value."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"({len(value)} bytes)"
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _setting_value(obj: Setting, stored: Any) -> Any:
    from smtpsite.settings import KEYS

    key = KEYS.get(obj.key)
    if stored is None:
        return None
    if key is None or key.secret:
        return MASK
    try:
        return json.loads(stored)
    except (TypeError, ValueError):
        return stored


def _is_secret(obj: Any, name: str) -> bool:
    """Whether the field holds ciphertext: server secret options or a secret setting."""
    if isinstance(obj, SmtpServer):
        return name == "secrets"
    if isinstance(obj, Setting) and name == "value":
        from smtpsite.settings import KEYS

        return obj.key not in KEYS or KEYS[obj.key].secret
    return False


def _plaintext(value: Any) -> Any:
    """What a ciphertext holds, only to tell whether a secret really changed; never stored."""
    box = current_app.extensions["smtpsite"].secrets
    try:
        return box.decrypt(value) if value else None
    except Exception:  # unreadable with the configured keys: count it as changed
        return object()


def _shown(obj: Any, name: str, value: Any) -> Any:
    """A field's value as an entry shows it: secrets masked, sites by code name."""
    if name == "sites":
        return sorted(s.code_name for s in value or ())
    if isinstance(obj, SmtpServer) and name == "secrets":
        # The names of the secret options that are set, each value masked.
        try:
            names = current_app.extensions["smtpsite"].secrets.decrypt_mapping(value)
        except Exception:  # unreadable with the configured keys
            return MASK if value else None
        return {key: MASK for key in sorted(names)}
    if isinstance(obj, User) and name == "password_hash":
        return MASK if value else None
    if isinstance(obj, Setting) and name == "value":
        return _setting_value(obj, value)
    return _plain(value)


def _fields(obj: Any) -> list[str]:
    if isinstance(obj, Email):
        return list(EMAIL_FIELDS)
    mapper = inspect(type(obj))
    names = [a.key for a in mapper.column_attrs if a.key not in IGNORED]
    if isinstance(obj, SmtpServer | User):
        names.append("sites")
    return names


def snapshot(obj: Any) -> dict[str, Any]:
    """Every audited field of ``obj``, as an entry shows it."""
    return {name: _shown(obj, name, getattr(obj, name)) for name in _fields(obj)}


def changes(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The changed fields of ``obj``: their values before and after (from attribute history)."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for name in _fields(obj):
        history = attributes.get_history(obj, name)
        if not history.has_changes():
            continue
        if name == "sites":
            old = list(history.unchanged or ()) + list(history.deleted or ())
            new = list(history.unchanged or ()) + list(history.added or ())
        else:
            old = history.deleted[0] if history.deleted else (
                history.unchanged[0] if history.unchanged else None)
            new = history.added[0] if history.added else None
            # Ciphertexts differ at every save: compare what they hold.
            if _is_secret(obj, name) and old is not None and _plaintext(old) == _plaintext(new):
                continue
        before[name], after[name] = _shown(obj, name, old), _shown(obj, name, new)
    # A secret option or a password replaced by another shows as masked on both sides.
    return before, after


def _label(obj: Any) -> str:
    if isinstance(obj, Site):
        return obj.code_name
    if isinstance(obj, SmtpServer):
        return obj.server_name
    if isinstance(obj, Setting):
        return obj.key + (f" (site {obj.site_id})" if obj.site_id else " (global)")
    if isinstance(obj, User):
        return obj.email
    return obj.message_id


def _object_id(obj: Any) -> str | None:
    if isinstance(obj, Setting):
        return obj.key
    return None if obj.id is None else str(obj.id)


def _site_id(obj: Any, sites: list[Site] | None = None) -> int | None:
    """The site an entry belongs to (its site administrators see it); None: global only."""
    if isinstance(obj, Site):
        return obj.id
    if isinstance(obj, Setting | Email):
        return obj.site_id
    if isinstance(obj, SmtpServer):
        sites = obj.sites if sites is None else sites
        return sites[0].id if not obj.is_global and len(sites) == 1 else None
    return None


def _entry(action: str, obj: Any, before: dict | None, after: dict | None) -> dict[str, Any]:
    kind = TYPES[type(obj)]
    changed = ", ".join(sorted((after or before or {}).keys()))
    verb = {"create": "created", "update": "changed", "delete": "deleted",
            "queue": "queued"}[action]
    summary = f"{kind} {_label(obj)} {verb}" + (f": {changed}" if action == "update" else "")
    return {"action": action, "object_type": kind, "object_id": _object_id(obj),
            "site_id": _site_id(obj), "summary": summary, "before": before, "after": after}


# -- session events: sites, servers, settings, users, queued emails ---------------------
@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    """Note the changed and deleted objects (their history is complete only now)."""
    if current_actor() is None:
        return
    pending = session.info.setdefault("smtpsite_audit", {"rows": [], "new": [], "gone": set()})
    pending["gone"].update(obj.id for obj in session.deleted if isinstance(obj, Site))
    for obj in session.deleted:
        if type(obj) in TYPES and not isinstance(obj, Email):
            pending["rows"].append(_entry("delete", obj, snapshot(obj), None))
    for obj in session.dirty:
        if type(obj) in TYPES and not isinstance(obj, Email) and session.is_modified(obj):
            before, after = changes(obj)
            if before or after:
                pending["rows"].append(_entry("update", obj, before, after))
    pending["new"].extend(obj for obj in session.new if type(obj) in TYPES)


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: Any) -> None:
    """Write the entries in the flush's transaction (new objects have their ids now)."""
    pending = session.info.pop("smtpsite_audit", None)
    actor = current_actor()
    if pending is None or actor is None:
        return
    rows = list(pending["rows"])
    for obj in pending["new"]:
        action = "queue" if isinstance(obj, Email) else "create"
        rows.append(_entry(action, obj, None, snapshot(obj)))
    if not rows:
        return
    now = utcnow()
    for row in rows:
        row.update(at=now, actor=actor.name, channel=actor.channel)
        if row["site_id"] in pending["gone"]:
            row["site_id"] = None  # the site is deleted with this flush: keep the entry
        row["summary"] = row["summary"][:2000]
    session.connection().execute(AUDIT.insert(), rows)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop("smtpsite_audit", None)


# -- engine events: the queue's bulk operations ----------------------------------------
@event.listens_for(Engine, "after_execute")
def _after_execute(conn: Connection, statement: Any, _multiparams: Any, _params: Any,
                   _options: Any, result: Any) -> None:
    """Record a bulk resend / delete / expiry of queued emails made by an actor."""
    if current_actor() is None or not isinstance(statement, Update | Delete):
        return
    if getattr(statement.table, "name", None) != "emails" or not result.rowcount:
        return
    if isinstance(statement, Delete):
        action = "delete"
    else:
        status = statement.compile().params.get("status")
        action = {"waiting": "resend", "expired": "expire"}.get(status, "update")
    try:
        where = str(statement.whereclause.compile(dialect=conn.dialect,
                                                  compile_kwargs={"literal_binds": True}))
    except Exception:  # a selection that cannot be shown as text: the count still is
        where = ""
    summary = f"{action}: {result.rowcount} email(s)" + (f" where {where}" if where else "")
    record(action, "email", None, summary, connection=conn)
