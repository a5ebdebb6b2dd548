"""The keys of SMTPSITE_SECRET_KEYS against the stored secrets: check them, rotate them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from flask import Flask, current_app
from sqlalchemy import inspect, select, update
from sqlalchemy.exc import SQLAlchemyError

from smtpsite.extensions import db
from smtpsite.models import Setting, Site, SmtpServer
from smtpsite.secrets import SecretBox, SecretKeyError
from smtpsite.settings import KEYS

log = logging.getLogger(__name__)
# Records named in one message; the rest are counted.
MAX_NAMED = 10


@dataclass(frozen=True)
class StoredSecret:
    """One encrypted value in the database and how to name its record to a person."""

    kind: str  # "server" or "setting"
    row_id: int
    label: str
    token: str = field(repr=False)


@dataclass
class KeyCheck:
    """What the configured keys can read: every stored secret was tried."""

    total: int = 0
    unreadable: list[StoredSecret] = field(default_factory=list)
    # Readable only with an older key: ``rotate-secrets`` moves them to the newest.
    old_key: int = 0

    @property
    def ok(self) -> bool:
        """True when every stored secret can be decrypted."""
        return not self.unreadable

    @property
    def message(self) -> str:
        """The problem in one sentence for operators; empty when there is none."""
        if self.ok:
            return ""
        count = len(self.unreadable)
        noun, pronoun = ("secret", "it was") if count == 1 else ("secrets", "they were")
        return (
            f"SMTPSITE_SECRET_KEYS cannot decrypt {count} stored {noun} "
            f"({_name_records(self.unreadable)}): the key is wrong or the key {pronoun} "
            "encrypted with was removed"
        )


@dataclass(frozen=True)
class Rotation:
    """How many stored secrets ``rotate_secrets`` re-encrypted, by kind."""

    servers: int
    settings: int

    @property
    def total(self) -> int:
        """All re-encrypted secrets."""
        return self.servers + self.settings


class RotationError(SecretKeyError):
    """A stored secret cannot be read with any configured key; nothing was changed."""

    def __init__(self, unreadable: list[StoredSecret]) -> None:
        self.unreadable = unreadable
        count = len(unreadable)
        super().__init__(
            f"rotation stopped, nothing was changed: no key of SMTPSITE_SECRET_KEYS can decrypt "
            f"{count} stored secret{'s' if count != 1 else ''} ({_name_records(unreadable)}); "
            "add the key they were encrypted with (after the new one), or enter those "
            "secrets again"
        )


def _name_records(records: list[StoredSecret]) -> str:
    named = ", ".join(r.label for r in records[:MAX_NAMED])
    extra = len(records) - MAX_NAMED
    return named + (f" and {extra} more" if extra > 0 else "")


def stored_secrets(*, for_update: bool = False) -> Iterator[StoredSecret]:
    """Every encrypted value: server secrets, then secret settings (global and per site)."""
    servers = select(SmtpServer.id, SmtpServer.server_name, SmtpServer.secrets).where(
        SmtpServer.secrets.is_not(None), SmtpServer.secrets != ""
    ).order_by(SmtpServer.id)
    secret_keys = sorted(name for name, key in KEYS.items() if key.secret)
    rows = (
        select(Setting.id, Setting.key, Setting.value, Site.code_name)
        .outerjoin(Site, Setting.site_id == Site.id)
        .where(Setting.key.in_(secret_keys), Setting.value != "")
        .order_by(Setting.key, Setting.site_id.is_not(None), Site.code_name)
    )
    if for_update:
        # Rows stay locked until the rotation commits (PostgreSQL; SQLite locks the file).
        servers = servers.with_for_update()
        rows = rows.with_for_update(of=Setting)
    for row in db.session.execute(servers):
        yield StoredSecret("server", row.id, f"server {row.id} {row.server_name!r}", row.secrets)
    for row in db.session.execute(rows):
        scope = f"for site {row.code_name}" if row.code_name else "(global)"
        yield StoredSecret("setting", row.id, f"setting {row.key} {scope}", row.value)


def _keys(box_or_keys: str | list[str] | None) -> list[str]:
    raw = current_app.config["SMTPSITE_SECRET_KEYS"] if box_or_keys is None else box_or_keys
    if isinstance(raw, str):
        raw = raw.split(",")
    return [k.strip() for k in raw if k.strip()]


def check_keys(keys: str | list[str] | None = None) -> KeyCheck:
    """Try to decrypt every stored secret with ``keys`` (default: the app's configured keys).

    Every one is tried, not a sample: a database copied between installations can mix
    secrets of different keys, and one Fernet decryption costs microseconds.
    """
    key_list = _keys(keys)
    box, newest = SecretBox(key_list), SecretBox(key_list[:1])
    result = KeyCheck()
    for stored in stored_secrets():
        result.total += 1
        try:
            newest.decrypt(stored.token)
        except SecretKeyError:
            try:
                box.decrypt(stored.token)
            except SecretKeyError:
                result.unreadable.append(stored)
            else:
                result.old_key += 1
    return result


def rotate_secrets(keys: str | list[str] | None = None) -> Rotation:
    """Re-encrypt every stored secret with the newest key, in one transaction.

    If any secret cannot be read with the configured keys, raise ``RotationError``
    naming every such record and change nothing.
    """
    box = SecretBox(_keys(keys))
    try:
        records = list(stored_secrets(for_update=True))
        rotated, unreadable = [], []
        for stored in records:
            try:
                rotated.append((stored, box.rotate(stored.token)))
            except SecretKeyError:
                unreadable.append(stored)
        if unreadable:
            raise RotationError(unreadable)
        for stored, token in rotated:
            model = SmtpServer if stored.kind == "server" else Setting
            column = "secrets" if stored.kind == "server" else "value"
            # Only the encryption changed, not the value: keep "last changed" as it was.
            db.session.execute(
                update(model)
                .where(model.id == stored.row_id)
                .values({column: token, "updated_at": model.updated_at})
            )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    counts = {"server": 0, "setting": 0}
    for stored, _token in rotated:
        counts[stored.kind] += 1
    log.info("re-encrypted %d server and %d setting secrets with the newest key",
             counts["server"], counts["setting"])
    return Rotation(servers=counts["server"], settings=counts["setting"])


def _tables_exist() -> bool:
    names = set(inspect(db.engine).get_table_names())
    return {SmtpServer.__tablename__, Setting.__tablename__, Site.__tablename__} <= names


def check_at_startup(app: Flask) -> KeyCheck | None:
    """Log (and keep in ``app.extensions``) whether the keys can read the stored secrets.

    Runs when the app is created, so a wrong key is reported when serving starts, not at
    the first send. A database without tables yet (before ``init``) or one that cannot be
    reached is skipped: there is nothing to read, or another error will say so.
    """
    url = str(app.config.get("SQLALCHEMY_DATABASE_URI", ""))
    if url.startswith("sqlite") and (":memory:" in url or url.rstrip("/") == "sqlite:"):
        return None  # a new in-memory database holds no secrets yet
    with app.app_context():
        try:
            result = check_keys() if _tables_exist() else None
        except SQLAlchemyError as exc:
            log.warning("stored secrets not checked: the database cannot be read (%s)",
                        type(exc).__name__)
            result = None
        finally:
            db.session.remove()
            # No connection is kept open by merely creating the app.
            db.engine.dispose()
    app.extensions["smtpsite.keys"] = result
    if result is not None and not result.ok:
        app.logger.error("%s", result.message)
    elif result is not None and result.old_key:
        app.logger.warning(
            "%d stored secrets are encrypted with an older key of SMTPSITE_SECRET_KEYS: "
            "run `flask --app app smtpsite rotate-secrets`", result.old_key
        )
    return result
