"""The send helper: build or take a message, pick a server, fail over safely, or queue it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from typing import Any

from flask import current_app
from sqlalchemy import inspect, select
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.util import identity_key

from smtpsite import chain_cache, dkim, queue, settings
from smtpsite.addresses import envelope_address
from smtpsite.delivery import OutgoingMessage
from smtpsite.extensions import db
from smtpsite.failover import MAX_ATTEMPTS, SWITCHES, Job, Sender
from smtpsite.messages import MessageError, PreparedEmail, build_message, prepare_message
from smtpsite.models import Site, utcnow
from smtpsite.pool import idle_seconds as pool_idle_seconds
from smtpsite.pool import pool as connection_pool
from smtpsite.queue import Attempt
from smtpsite.routing import ChainEntry, chain_for

log = logging.getLogger(__name__)


class UnknownSiteError(LookupError):
    """No site has this code name."""


@dataclass
class SendResult:
    """What became of one email.

    ``status`` is one of: ``sent``; ``queued`` (stored, the worker sends it);
    ``deferred`` (tried, failed for now, queued for a retry); ``failed`` (rejected for
    good); ``uncertain`` (the connection broke after the whole message was sent: it may
    have been delivered, so it is not sent again automatically); ``disabled`` (emails are
    switched off; it waits in the queue).
    """

    message_id: str
    status: str
    server: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    email_id: int | None = None

    @property
    def ok(self) -> bool:
        """True when the email was delivered or safely queued."""
        return self.status in {"sent", "queued"}


@dataclass
class DeliveryOutcome:
    """The result of trying a message against a chain."""

    status: str  # sent / failed / uncertain / deferred
    attempts: list[Attempt]
    server: str | None = None
    error: str | None = None
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)


def resolve_site(site: str | Site | None) -> Site | None:
    """The ``Site`` for a code name (case-insensitive); ``None`` stays global."""
    if site is None or isinstance(site, Site):
        return site
    if not isinstance(site, str):
        raise UnknownSiteError(f"site must be a code name, not {type(site).__name__}")
    cached = chain_cache.cached(("site", site.strip().lower()), lambda: _load_site(site))
    if cached is None:
        raise UnknownSiteError(f"no site with code name {site!r}")
    # The session's own copy: the one it holds already (with its pending changes), or the
    # cached one merged in without a query.
    held = db.session.identity_map.get(identity_key(Site, cached.id))
    return held if held is not None else db.session.merge(cached, load=False)


def _load_site(code_name: str) -> Site | None:
    found = db.session.execute(
        select(Site).where(Site.code_key == code_name.strip().lower())
    ).scalar_one_or_none()
    if found is None:
        return None
    # A detached copy for the cache, shared by every session of the process.
    copy = Site(**{attr.key: getattr(found, attr.key) for attr in inspect(Site).column_attrs})
    make_transient_to_detached(copy)
    return copy


def deliver(
    message: OutgoingMessage,
    chain: Sequence[ChainEntry],
    *,
    max_attempts: int = MAX_ATTEMPTS,
    busy_wait: float | None = None,
) -> DeliveryOutcome:
    """Try ``message`` on the first available server of ``chain``, failing over safely.

    The rules are the workers' (see :mod:`smtpsite.failover`): a failure before the server
    accepted the data moves on, preferring servers not yet tried; a permanent rejection
    stops; a failure after the final "." stops as uncertain.
    """
    config = current_app.config
    sender = Sender(
        busy_wait=config["SMTPSITE_BUSY_WAIT"] if busy_wait is None else busy_wait,
        lease_ttl=config["SMTPSITE_SEND_TIMEOUT"] + 60,
        cooldown=settings.get("emails.server_cooldown"),
        max_attempts=max_attempts,
        messages_per_connection=settings.get("emails.messages_per_connection"),
        # Connections stay open between calls (see smtpsite.pool), unless pooling is off.
        pool=connection_pool() if pool_idle_seconds() > 0 else None,
        switches={name: settings.get(name) for name in SWITCHES},
    )
    job = Job(message, chain)
    sender.run([job])
    if sender.pool is not None:
        queue.record_stats_soon(job.attempts)  # written together; the pool's reaper flushes
    else:
        queue.record_stats(job.attempts)
    status = "deferred" if job.status == "busy" else job.status
    return DeliveryOutcome(
        status, job.attempts, server=job.server, error=job.error, refused=job.refused
    )


def _queue_status(outcome: DeliveryOutcome) -> str:
    # Deferred emails wait for the worker's retries; the others need a person to resend.
    return "waiting" if outcome.status == "deferred" else "failed"


def send_prepared(
    prepared: PreparedEmail,
    site: Site | None,
    *,
    queue_it: bool | None = None,
    scheduled_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> SendResult:
    """Queue or send an already prepared email for ``site``."""
    prepared = override_recipients(prepared, site)  # staging: before signing, so it is signed
    # Headers are final here: sign once, so the queue and every plugin get the signed bytes.
    prepared = replace(prepared, outgoing=dkim.sign_outgoing(prepared.outgoing, site))
    site_id = site.id if site is not None else None
    message_id = prepared.message_id
    if not settings.get("emails.enabled", site):
        email_id = queue.store(
            prepared, site_id, last_result="emails are disabled; waiting until they are enabled",
            scheduled_at=scheduled_at, expires_at=expires_at,
        )
        return SendResult(
            message_id, "disabled", error="emails are disabled for this site; the email waits "
            "in the queue", email_id=email_id,
        )
    if queue_it is None:
        queue_it = settings.get("emails.queue_enabled", site) or scheduled_at is not None
    if queue_it:
        email_id = queue.store(
            prepared, site_id, scheduled_at=scheduled_at, expires_at=expires_at
        )
        return SendResult(message_id, "queued", email_id=email_id)

    chain = chain_for(site, prepared.outgoing.sender)
    outcome = deliver(prepared.outgoing, chain)
    if outcome.status == "sent":
        return SendResult(
            message_id, "sent", server=outcome.server, attempts=outcome.attempts,
            refused=outcome.refused,
        )
    # Not delivered: keep it in the queue so it is never lost.
    retry_at = utcnow() + timedelta(seconds=settings.get("emails.server_cooldown"))
    email_id = queue.store(
        prepared, site_id, status=_queue_status(outcome), attempts=outcome.attempts,
        last_result=outcome.error, next_attempt_at=retry_at if outcome.status == "deferred" else None,
        expires_at=expires_at,
    )
    return SendResult(
        message_id, outcome.status, server=outcome.server, attempts=outcome.attempts,
        error=outcome.error, email_id=email_id,
    )


def override_recipients(prepared: PreparedEmail, site: Site | None) -> PreparedEmail:
    """``emails.override_recipients``: the envelope goes to those addresses instead.

    The original To, Cc and Bcc go in an ``X-Original-Recipients`` header; the queue keeps
    them as they were.
    """
    override = settings.split_addresses(settings.get("emails.override_recipients", site))
    if not override:
        return prepared
    out = prepared.outgoing
    envelope = [envelope_address(address) for address in override]
    smtputf8 = out.smtputf8 or any(needs_utf8 for _, needs_utf8 in envelope)
    original = "; ".join(f"{name}: {', '.join(found)}" for name, found in
                         (("To", prepared.to), ("Cc", prepared.cc), ("Bcc", prepared.bcc)) if found)
    holder = EmailMessage(policy=policy.SMTPUTF8 if smtputf8 else policy.SMTP)
    holder["X-Original-Recipients"] = original or "(none)"
    header = holder.as_bytes().split(b"\r\n\r\n", 1)[0] + b"\r\n"
    outgoing = replace(out, recipients=tuple(address for address, _ in envelope),
                       data=header + out.data, smtputf8=smtputf8)
    return replace(prepared, outgoing=outgoing)


def send_mail(
    site: str | Site | None,
    *,
    to: Iterable[str],
    subject: str,
    text: str | None = None,
    html: str | None = None,
    sender: str | None = None,
    cc: Iterable[str] = (),
    bcc: Iterable[str] = (),
    reply_to: str | None = None,
    attachments: Iterable[Any] = (),
    headers: Mapping[str, str] | None = None,
    priority: str = "normal",
    queue: bool | None = None,
    scheduled_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> SendResult:
    """Build an email in the site's format and send it (or queue it, per the settings).

    ``site`` is a site code name, or None for global email. Bad input raises
    ``MessageError`` (or ``UnknownSiteError``) and sends nothing.
    """
    with chain_cache.snapshot():  # settings and chains checked once for the whole send
        site_obj = resolve_site(site)
        prepared = build_message(
            sender=sender or settings.get("emails.default_sender", site_obj),
            to=_as_list(to, "to"),
            subject=subject,
            text=text,
            html=html,
            cc=_as_list(cc, "cc"),
            bcc=_as_list(bcc, "bcc"),
            reply_to=reply_to,
            attachments=attachments,
            headers=headers,
            priority=priority,
            email_format=settings.get("emails.format", site_obj),
        )
        return send_prepared(
            prepared, site_obj, queue_it=queue, scheduled_at=scheduled_at, expires_at=expires_at
        )


def send_message(
    site: str | Site | None,
    msg: EmailMessage,
    *,
    sender: str | None = None,
    recipients: Sequence[str] | None = None,
    queue: bool | None = None,
    scheduled_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> SendResult:
    """Send a ready ``EmailMessage`` for ``site``; envelope from its headers unless given."""
    with chain_cache.snapshot():
        site_obj = resolve_site(site)
        prepared = prepare_message(
            msg, sender=sender, recipients=_as_list(recipients, "recipients") if recipients else None
        )
        return send_prepared(
            prepared, site_obj, queue_it=queue, scheduled_at=scheduled_at, expires_at=expires_at
        )


def _as_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str | bytes):
        raise MessageError(f"{what} must be a list of addresses, not a single string")
    return list(value or ())

