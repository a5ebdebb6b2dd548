"""Database models: sites, SMTP servers, settings, users, the email queue and server state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from smtpsite.extensions import db

PRIORITIES = ("high", "normal", "low")
# Sort rank of each priority: lower goes first.
PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}
EMAIL_PRIORITY = {"low": 0, "normal": 1, "high": 2}  # higher is sent first
EMAIL_STATUSES = ("created", "waiting", "sending", "sent", "failed", "expired")


def utcnow() -> datetime:
    """The current time in UTC, naive (as stored in every DateTime column)."""
    return datetime.now(UTC).replace(tzinfo=None)


server_sites = Table(
    "server_sites",
    db.metadata,
    Column("server_id", ForeignKey("smtp_servers.id", ondelete="CASCADE"), primary_key=True),
    Column("site_id", ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True),
)

user_sites = Table(
    "user_sites",
    db.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("site_id", ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True),
)


class Site(db.Model):
    """A website whose mail smtpsite sends."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    code_name: Mapped[str] = mapped_column(String(100))
    # Lower-cased code name: uniqueness is case-insensitive.
    code_key: Mapped[str] = mapped_column(String(100), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    domains: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    servers: Mapped[list[SmtpServer]] = relationship(
        secondary=server_sites, back_populates="sites"
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.code_name:
            self.code_key = self.code_name.lower()

    def __repr__(self) -> str:
        return f"<Site {self.code_name!r}>"

    def __str__(self) -> str:
        return self.display_name or self.code_name


class SmtpServer(db.Model):
    """An SMTP server record: where and how mail goes, for all sites or chosen ones."""

    __tablename__ = "smtp_servers"

    id: Mapped[int] = mapped_column(primary_key=True)
    server_name: Mapped[str] = mapped_column(String(300))
    display_name: Mapped[str | None] = mapped_column(String(200))
    priority: Mapped[str] = mapped_column(String(10), default="normal")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    method: Mapped[str] = mapped_column(String(100), default="network")
    # Plain options of the delivery plugin; secret ones live encrypted in ``secrets``.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets: Mapped[str | None] = mapped_column(Text)
    is_global: Mapped[bool] = mapped_column(Boolean, default=False)
    max_connections: Mapped[int] = mapped_column(Integer, default=1)
    rate_limit: Mapped[int | None] = mapped_column(Integer)  # messages per minute
    # Addresses and/or domains, one per line; empty means the server takes any sender.
    sender_filter: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    sites: Mapped[list[Site]] = relationship(secondary=server_sites, back_populates="servers")

    def __repr__(self) -> str:
        # Never include options or secrets.
        return f"<SmtpServer {self.id} {self.server_name!r} {self.method}>"

    def __str__(self) -> str:
        return self.display_name or self.server_name

    @property
    def key(self) -> str:
        """The key under which this server's busy slots and health are kept."""
        return f"server:{self.id}"


class Setting(db.Model):
    """One settings value: global (``site_id`` NULL) or a site's override."""

    __tablename__ = "settings"
    __table_args__ = (
        UniqueConstraint("key", "site_id", name="uq_settings_key_site"),
        # NULLs are distinct in unique constraints: one global row per key needs its own index.
        Index(
            "uq_settings_key_global",
            "key",
            unique=True,
            sqlite_where=text("site_id IS NULL"),
            postgresql_where=text("site_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(100))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    # JSON text of the value; for secret keys a Fernet token.
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class User(db.Model):
    """Someone who signs in to the panel: a global administrator or a site administrator."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    is_global_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime)

    sites: Mapped[list[Site]] = relationship(secondary=user_sites)

    def __repr__(self) -> str:
        return f"<User {self.email!r}>"


class Email(db.Model):
    """One email in the queue (or its archive), with the exact bytes that go out."""

    __tablename__ = "emails"
    __table_args__ = (Index("ix_emails_claim", "status", "priority", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[str] = mapped_column(String(300), unique=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(10), default="waiting")
    priority: Mapped[int] = mapped_column(Integer, default=1)
    sender: Mapped[str] = mapped_column(String(320))
    to: Mapped[list[str]] = mapped_column(JSON, default=list)
    cc: Mapped[list[str]] = mapped_column(JSON, default=list)
    bcc: Mapped[list[str]] = mapped_column(JSON, default=list)
    reply_to: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text, default="")
    text_body: Mapped[str | None] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(10), default="html")
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Envelope and serialised message, fixed when the email is created.
    envelope_sender: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    smtputf8: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    first_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_result: Mapped[str | None] = mapped_column(Text)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    sent_by: Mapped[str | None] = mapped_column(String(300))
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)

    attachments: Mapped[list[EmailAttachment]] = relationship(
        back_populates="email", cascade="all, delete-orphan", passive_deletes=True
    )
    attempts: Mapped[list[EmailAttempt]] = relationship(
        back_populates="email",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="EmailAttempt.id",
    )

    def __repr__(self) -> str:
        return f"<Email {self.id} {self.message_id!r} {self.status}>"


class EmailAttachment(db.Model):
    """What an email carries (the content itself is inside ``Email.raw``)."""

    __tablename__ = "email_attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_id: Mapped[int] = mapped_column(ForeignKey("emails.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(300))
    mimetype: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(Integer)
    content_id: Mapped[str | None] = mapped_column(String(300))

    email: Mapped[Email] = relationship(back_populates="attachments")


class EmailAttempt(db.Model):
    """One try at sending an email through one server."""

    __tablename__ = "email_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_id: Mapped[int] = mapped_column(ForeignKey("emails.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    server_key: Mapped[str] = mapped_column(String(100))
    server_name: Mapped[str] = mapped_column(String(300))
    outcome: Mapped[str] = mapped_column(String(20))  # sent / failed / uncertain
    code: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")

    email: Mapped[Email] = relationship(back_populates="attempts")


class ServerSlot(db.Model):
    """A lease on one of a server's connection slots, shared by every sending process."""

    __tablename__ = "server_slots"

    server_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(100))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)


class ServerHealth(db.Model):
    """What every process knows of a server: cool-down after a failure, last check."""

    __tablename__ = "server_health"

    server_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    cooldown_until: Mapped[datetime | None] = mapped_column(DateTime)
    last_failure_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_check_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_check_ok: Mapped[bool | None] = mapped_column(Boolean)
    last_check_message: Mapped[str | None] = mapped_column(Text)



class ServerRate(db.Model):
    """When a rate-limited server may take its next message, shared by every sending process."""

    __tablename__ = "server_rates"

    server_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    # Seconds since the epoch: a float keeps the arithmetic in SQL the same on every database.
    next_at: Mapped[float] = mapped_column(Float)


class ServerStat(db.Model):
    """Messages sent and failed through a server in one minute (for the admin home page)."""

    __tablename__ = "server_stats"

    server_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    minute: Mapped[datetime] = mapped_column(DateTime, primary_key=True)
    server_name: Mapped[str] = mapped_column(String(300))
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)


class CapturedMessage(db.Model):
    """A message received by the built-in mail catcher, kept for reading in the panel."""

    __tablename__ = "captured_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    mail_from: Mapped[str] = mapped_column(String(320))
    rcpt_tos: Mapped[list[str]] = mapped_column(JSON, default=list)
    subject: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str | None] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(Integer)
    peer: Mapped[str | None] = mapped_column(String(100))
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class AuditEntry(db.Model):
    """One change made through the panel or the CLI: who, when, what, before and after."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(254))
    channel: Mapped[str] = mapped_column(String(10))  # panel / cli
    action: Mapped[str] = mapped_column(String(50))
    object_type: Mapped[str] = mapped_column(String(50))
    object_id: Mapped[str | None] = mapped_column(String(100))
    site_id: Mapped[int | None] = mapped_column(
        ForeignKey("sites.id", ondelete="SET NULL"), index=True
    )
    summary: Mapped[str] = mapped_column(Text, default="")
    # Secrets are masked before they get here.
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class WorkerBeat(db.Model):
    """A worker's last sign of life, for health checks and the admin home page."""

    __tablename__ = "worker_beats"

    worker_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class AlertState(db.Model):
    """The last state an alert was sent for (a server's health, the queue's backlog)."""

    __tablename__ = "alert_state"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    state: Mapped[str] = mapped_column(String(20))
    changed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    detail: Mapped[str | None] = mapped_column(Text)


class ConfigVersion(db.Model):
    """Tokens that change with every change to the configuration, or to a cool-down (one row).

    Database triggers (migrations 0004, 0005) set a new random ``token`` on every insert,
    update or delete of sites, servers, their assignments and settings, and a new
    ``health_token`` on every change of a server's cool-down, by any process and any
    writer; the caches compare them to the token they were filled under.
    """

    __tablename__ = "config_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)
    health_token: Mapped[int] = mapped_column(BigInteger, server_default="0")
