"""The email queue in the database: storing, claiming, recording results, and upkeep.

Every write here is one short transaction. A worker claims a batch (``claim``), sends
it, and records every result of the batch in one transaction (``finish``). An email keeps
its stored bytes and Message-ID for its whole life.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime, localtime, make_msgid
from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, and_, bindparam, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from smtpsite import audit
from smtpsite.addresses import AddressError, check_address, envelope_address
from smtpsite.extensions import db
from smtpsite.messages import PreparedEmail
from smtpsite.models import (
    EMAIL_PRIORITY,
    Email,
    EmailAttachment,
    EmailAttempt,
    ServerStat,
    Setting,
    utcnow,
)

# PostgreSQL channel the send helper notifies when it stores an email; idle workers LISTEN.
NOTIFY_CHANNEL = "smtpsite_queue"
EMAILS = Email.__table__
ATTEMPTS = EmailAttempt.__table__
ATTACHMENTS = EmailAttachment.__table__
# Made once: a statement object keeps its cache key, so each execution skips computing it.
_INSERT_EMAIL, _INSERT_ATTACHMENT, _INSERT_ATTEMPT = (t.insert() for t in (EMAILS, ATTACHMENTS, ATTEMPTS))
STATS = ServerStat.__table__
# Emails sent at once are counted in the statistics together, this often (seconds).
STATS_EVERY = 1.0


@dataclass(frozen=True)
class Attempt:
    """One try at sending through one server."""

    server: str
    server_key: str
    outcome: str  # sent / failed / uncertain
    code: int | None
    message: str
    at: datetime


def _email_row(prepared: PreparedEmail, site_id: int | None) -> dict[str, Any]:
    """The ``emails`` columns of ``prepared``, waiting to be sent."""
    out = prepared.outgoing
    return {
        "message_id": out.message_id, "site_id": site_id, "status": "waiting",
        "priority": EMAIL_PRIORITY[prepared.priority], "sender": prepared.sender,
        "to": prepared.to, "cc": prepared.cc, "bcc": prepared.bcc, "reply_to": prepared.reply_to,
        "subject": prepared.subject, "text_body": prepared.text, "html_body": prepared.html,
        "format": prepared.format, "headers": prepared.headers, "envelope_sender": out.sender,
        "recipients": list(out.recipients), "raw": out.data, "smtputf8": out.smtputf8,
        "created_at": utcnow(),
    }


def _attachment_rows(prepared: PreparedEmail) -> list[dict[str, Any]]:
    return [{"filename": name, "mimetype": mimetype, "size": size, "content_id": cid}
            for name, mimetype, size, cid in prepared.attachments]


def new_email(prepared: PreparedEmail, site_id: int | None) -> Email:
    """An ``Email`` row for ``prepared`` (not yet added to a session)."""
    email = Email(**_email_row(prepared, site_id))
    email.attachments = [EmailAttachment(**row) for row in _attachment_rows(prepared)]
    return email


def store(
    prepared: PreparedEmail,
    site_id: int | None,
    *,
    status: str = "waiting",
    attempts: Sequence[Attempt] = (),
    last_result: str | None = None,
    next_attempt_at: datetime | None = None,
    scheduled_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> int:
    """Write the email to the queue in its own transaction; return its id.

    Its own transaction keeps the caller's unit of work untouched and makes the write
    durable before the caller is told the email is queued. Core inserts, not the ORM's
    unit of work: this is on the path of every queued email (the ORM cost twice as much).
    """
    row = _email_row(prepared, site_id)
    row.update(status=status, last_result=last_result, next_attempt_at=next_attempt_at,
               scheduled_at=scheduled_at, expires_at=expires_at)
    if attempts:
        row.update(first_attempt_at=attempts[0].at, last_attempt_at=attempts[-1].at,
                   attempt_count=len(attempts))
    with db.engine.begin() as conn:
        email_id = conn.execute(_INSERT_EMAIL, row).inserted_primary_key[0]
        attachments = _attachment_rows(prepared)
        if attachments:
            conn.execute(_INSERT_ATTACHMENT, [{**a, "email_id": email_id} for a in attachments])
        if attempts:
            conn.execute(_INSERT_ATTEMPT, _attempt_rows(email_id, attempts))
        if audit.current_actor() is not None:  # queued from the panel or the CLI
            audit.record_inserted(conn, Email(id=email_id, **row))
        if status == "waiting" and _is_postgresql(conn):
            # Delivered at commit: an idle worker wakes at once instead of at its next poll.
            conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
    return email_id


def _attempt_rows(email_id: int, attempts: Iterable[Attempt]) -> list[dict[str, Any]]:
    return [{"email_id": email_id, "at": a.at, "server_key": a.server_key,
             "server_name": a.server, "outcome": a.outcome, "code": a.code,
             "message": a.message[:4000]} for a in attempts]


def _is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


# -- claiming --------------------------------------------------------------------------
@dataclass
class Claimed:
    """A claimed email: what a worker needs to send it."""

    id: int
    message_id: str
    site_id: int | None
    envelope_sender: str
    recipients: list[str]
    raw: bytes
    smtputf8: bool
    priority: int
    expires_at: datetime | None
    first_attempt_at: datetime | None


def _enabled_sites_filter(conn: Connection) -> ColumnElement[bool]:
    """Emails of sites whose ``emails.enabled`` is on (a site's value, else the global one)."""
    rows = conn.execute(
        select(Setting.site_id, Setting.value).where(Setting.key == "emails.enabled")
    ).all()
    values = {row.site_id: json.loads(row.value) for row in rows}
    globally_on = values.pop(None, True)
    if globally_on:
        off = [site_id for site_id, on in values.items() if not on]
        return or_(EMAILS.c.site_id.is_(None), EMAILS.c.site_id.not_in(off)) if off else text("1=1")
    return EMAILS.c.site_id.in_([site_id for site_id, on in values.items() if on])


def claim(worker: str, limit: int, lease_seconds: float) -> list[Claimed]:
    """Claim up to ``limit`` sendable emails for ``worker``: higher priority first, then oldest.

    Sendable: waiting, due (scheduled time and retry time passed), and emails enabled for
    its site. On PostgreSQL rows are locked with ``FOR UPDATE SKIP LOCKED``, so workers
    never claim the same email; on SQLite the single UPDATE runs under the database's
    write lock, which gives the same guarantee.
    """
    now = utcnow()
    until = now + timedelta(seconds=lease_seconds)
    columns = [EMAILS.c[name] for name in Claimed.__dataclass_fields__]
    claimed: list[Claimed] = []
    with db.engine.begin() as conn:
        due = and_(
            EMAILS.c.status == "waiting",
            or_(EMAILS.c.scheduled_at.is_(None), EMAILS.c.scheduled_at <= now),
            or_(EMAILS.c.next_attempt_at.is_(None), EMAILS.c.next_attempt_at <= now),
            _enabled_sites_filter(conn),
        )
        # One index range per priority (status, priority, id): no sort of the whole queue.
        for priority in sorted(set(EMAIL_PRIORITY.values()), reverse=True):
            left = limit - len(claimed)
            if left <= 0:
                break
            ids = (
                select(EMAILS.c.id)
                .where(due, EMAILS.c.priority == priority)
                .order_by(EMAILS.c.id)
                .limit(left)
                .with_for_update(skip_locked=True)
            )
            rows = conn.execute(
                update(EMAILS)
                .where(EMAILS.c.id.in_(ids.scalar_subquery()))
                .values(status="sending", claimed_by=worker, claimed_until=until)
                .returning(*columns)
            ).all()
            claimed.extend(sorted((Claimed(*row) for row in rows), key=lambda c: c.id))
    return claimed


def renew_claims(worker: str, lease_seconds: float) -> int:
    """Extend the lease on every email ``worker`` holds; return how many it still holds."""
    with db.engine.begin() as conn:
        return conn.execute(
            update(EMAILS)
            .where(EMAILS.c.status == "sending", EMAILS.c.claimed_by == worker)
            .values(claimed_until=utcnow() + timedelta(seconds=lease_seconds))
        ).rowcount


# -- results ---------------------------------------------------------------------------
@dataclass
class Outcome:
    """What to record for one claimed email after a batch.

    ``status``: sent, failed, waiting (retry later or handed back), expired, or deleted
    (sent, and not archived). ``last_result`` None keeps the stored one.
    """

    email_id: int
    status: str
    attempts: Sequence[Attempt] = ()
    last_result: str | None = None
    next_attempt_at: datetime | None = None
    sent_by: str | None = None


# Built once: the statement (and its SQLAlchemy cache key) is the same for every batch.
_FINISH = (
    update(EMAILS)
    .where(EMAILS.c.id == bindparam("b_id"), EMAILS.c.claimed_by == bindparam("b_worker"))
    .values(
        status=bindparam("b_status"),
        last_result=func.coalesce(bindparam("b_result"), EMAILS.c.last_result),
        next_attempt_at=bindparam("b_next"),
        first_attempt_at=func.coalesce(EMAILS.c.first_attempt_at, bindparam("b_first")),
        last_attempt_at=func.coalesce(bindparam("b_last"), EMAILS.c.last_attempt_at),
        attempt_count=EMAILS.c.attempt_count + bindparam("b_count"),
        sent_at=bindparam("b_sent_at"),
        sent_by=bindparam("b_sent_by"),
        claimed_by=None,
        claimed_until=None,
    )
)


def finish(worker: str, outcomes: Sequence[Outcome]) -> None:
    """Record a batch's results in one transaction: attempts, statuses, archive, counts.

    Rows another worker took over (this worker's lease ran out) are left alone, except
    for the attempts, which always are history.
    """
    now = utcnow()
    with db.engine.begin() as conn:
        kept = [o for o in outcomes if o.status != "deleted"]
        attempts = [row for o in kept for row in _attempt_rows(o.email_id, o.attempts)]
        if attempts:
            conn.execute(_INSERT_ATTEMPT, attempts)
        if kept:
            conn.execute(
                _FINISH,
                [
                    {
                        "b_worker": worker,
                        "b_id": o.email_id,
                        "b_status": o.status,
                        "b_result": o.last_result,
                        "b_next": o.next_attempt_at,
                        "b_first": o.attempts[0].at if o.attempts else None,
                        "b_last": o.attempts[-1].at if o.attempts else None,
                        "b_count": len(o.attempts),
                        "b_sent_at": now if o.status == "sent" else None,
                        "b_sent_by": o.sent_by,
                    }
                    for o in kept
                ],
            )
        gone = [o.email_id for o in outcomes if o.status == "deleted"]
        if gone:
            conn.execute(delete(EMAILS).where(EMAILS.c.id.in_(gone), EMAILS.c.claimed_by == worker))
        _add_stats(conn, [a for o in outcomes for a in o.attempts])


def _add_stats(conn: Connection, attempts: Iterable[Attempt]) -> None:
    counts: Counter[tuple[str, str, datetime, str]] = Counter()
    for a in attempts:
        minute = a.at.replace(second=0, microsecond=0)
        counts[(a.server_key, a.server, minute, "sent" if a.outcome == "sent" else "failed")] += 1
    merged: dict[tuple[str, datetime], dict[str, Any]] = {}
    for (key, name, minute, kind), n in counts.items():
        row = merged.setdefault(
            (key, minute), {"server_key": key, "minute": minute, "server_name": name, "sent": 0,
                            "failed": 0}
        )
        row[kind] += n
    # Sorted, so that concurrent writers lock the rows in the same order (no deadlock).
    for _, row in sorted(merged.items()):
        insert = (pg_insert if _is_postgresql(conn) else sqlite_insert)(STATS).values(**row)
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["server_key", "minute"],
                set_={"sent": STATS.c.sent + insert.excluded.sent,
                      "failed": STATS.c.failed + insert.excluded.failed,
                      "server_name": insert.excluded.server_name},
            )
        )


def record_stats(attempts: Sequence[Attempt]) -> None:
    """Count ``attempts`` (of an email sent at once) in the per-server statistics."""
    if attempts:
        with db.engine.begin() as conn:
            _add_stats(conn, attempts)


@dataclass
class _StatsBuffer:
    attempts: list[Attempt] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _stats_buffer() -> _StatsBuffer:
    return current_app.extensions.setdefault("smtpsite_stats_buffer", _StatsBuffer())


def record_stats_soon(attempts: Sequence[Attempt]) -> None:
    """Count ``attempts`` of emails sent at once, written together every ``STATS_EVERY`` s.

    One transaction per second instead of one per email. They are statistics, not the
    emails' history: a process that dies loses at most the last second of counts.
    """
    buffer = _stats_buffer()
    with buffer.lock:
        buffer.attempts.extend(attempts)
        due = time.monotonic() - buffer.since >= STATS_EVERY
    if due:
        flush_stats()


def flush_stats() -> None:
    """Write the counts ``record_stats_soon`` holds in this process."""
    buffer = _stats_buffer()
    with buffer.lock:
        attempts, buffer.attempts, buffer.since = buffer.attempts, [], time.monotonic()
    record_stats(attempts)


# -- upkeep ----------------------------------------------------------------------------
def _hand_back(conn: Connection, where: ColumnElement[bool], reason: str) -> int:
    return conn.execute(
        update(EMAILS)
        .where(EMAILS.c.status == "sending", where)
        .values(status="waiting", claimed_by=None, claimed_until=None, last_result=reason)
    ).rowcount


def requeue_lapsed() -> int:
    """Put emails whose worker's lease ran out (it died or hung) back to waiting."""
    with db.engine.begin() as conn:
        return _hand_back(
            conn, EMAILS.c.claimed_until < utcnow(),
            "the worker sending it stopped (its lease ran out); it will be sent again",
        )


def release_claims(workers: Iterable[str]) -> int:
    """Put the emails held by ``workers`` (known to be gone) back to waiting."""
    names = list(workers)
    if not names:
        return 0
    with db.engine.begin() as conn:
        return _hand_back(
            conn, EMAILS.c.claimed_by.in_(names),
            "the worker sending it stopped; it will be sent again",
        )


def claim_holders() -> set[str]:
    """The workers holding emails right now."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(EMAILS.c.claimed_by).where(EMAILS.c.status == "sending").distinct()
        )
        return {row.claimed_by for row in rows if row.claimed_by}


def expire_due() -> int:
    """Mark waiting emails whose expiry passed as expired; they are never sent."""
    with db.engine.begin() as conn:
        return conn.execute(
            update(EMAILS)
            .where(EMAILS.c.status == "waiting", EMAILS.c.expires_at <= utcnow())
            .values(status="expired", last_result="expired before it could be sent",
                    next_attempt_at=None)
        ).rowcount


def cleanup_archive(batch_size: int = 500) -> int:
    """Delete sent emails kept longer than their site's ``emails.archive_days``, in batches."""
    now = utcnow()
    deleted = 0
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(Setting.site_id, Setting.value).where(Setting.key == "emails.archive_days")
        ).all()
    days = {row.site_id: int(json.loads(row.value)) for row in rows}
    global_days = days.pop(None, 0)
    overridden = list(days)
    scopes: list[tuple[ColumnElement[bool], int]] = [
        (or_(EMAILS.c.site_id.is_(None), EMAILS.c.site_id.not_in(overridden))
         if overridden else text("1=1"), global_days)
    ]
    for value in sorted(set(days.values())):
        scopes.append((EMAILS.c.site_id.in_([s for s, d in days.items() if d == value]), value))
    for scope, keep_days in scopes:
        cutoff = now - timedelta(days=keep_days)
        while True:
            with db.engine.begin() as conn:
                ids = select(EMAILS.c.id).where(
                    EMAILS.c.status == "sent", EMAILS.c.sent_at < cutoff, scope
                ).limit(batch_size)
                count = conn.execute(
                    delete(EMAILS).where(EMAILS.c.id.in_(ids.scalar_subquery()))
                ).rowcount
            deleted += count
            if count < batch_size:
                break
    with db.engine.begin() as conn:
        conn.execute(delete(STATS).where(STATS.c.minute < now - timedelta(days=2)))
    return deleted


# -- operators: resend, delete, counts -------------------------------------------------
def by_ids(ids: Iterable[int]) -> ColumnElement[bool]:
    """Selects the emails with these ids."""
    return EMAILS.c.id.in_(list(ids))


def by_status(*statuses: str) -> ColumnElement[bool]:
    """Selects the emails in any of ``statuses``."""
    return EMAILS.c.status.in_(statuses)


def resend(where: ColumnElement[bool], note: str = "resent by an operator") -> int:
    """Send the selected emails again (same bytes, same Message-ID); return how many.

    Emails being sent right now are left alone. The retry window starts again.
    """
    with db.engine.begin() as conn:
        count = conn.execute(
            update(EMAILS)
            .where(where, EMAILS.c.status.in_(("waiting", "failed", "sent", "expired")))
            .values(status="waiting", next_attempt_at=None, first_attempt_at=None,
                    expires_at=None, sent_at=None, sent_by=None, last_result=note)
        ).rowcount
        if count and _is_postgresql(conn):
            conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
    return count


def resend_to(email_id: int, address: str) -> int:
    """Queue a copy of a stored email for ``address`` alone; return the copy's id.

    The copy carries the original bytes under ``Resent-Date``, ``Resent-To`` and
    ``Resent-Message-ID`` headers (RFC 5322, 3.6.6); the original stays as it was.
    Raises ``AddressError`` for an address that cannot be used.
    """
    address = check_address(address)
    envelope, needs_utf8 = envelope_address(address)
    if needs_utf8:
        raise AddressError(f"{address!r}: resending to a non-ASCII local part is not supported")
    with Session(db.engine, expire_on_commit=False) as session, session.begin():
        original = session.get(Email, email_id)
        if original is None:
            raise LookupError(f"no email with id {email_id}")
        new_id = make_msgid(domain=original.message_id.rpartition("@")[2].rstrip(">") or None)
        resent = (f"Resent-Date: {format_datetime(localtime())}\r\nResent-To: {envelope}\r\n"
                  f"Resent-Message-ID: {new_id}\r\n").encode("ascii")
        copy = Email(
            message_id=new_id, site_id=original.site_id, status="waiting",
            priority=original.priority, sender=original.sender, to=[address], cc=[], bcc=[],
            reply_to=original.reply_to, subject=original.subject, text_body=original.text_body,
            html_body=original.html_body, format=original.format, headers=original.headers,
            envelope_sender=original.envelope_sender, recipients=[envelope],
            raw=resent + original.raw, smtputf8=original.smtputf8, created_at=utcnow(),
            last_result=f"copy of {original.message_id}, resent to {address}",
        )
        copy.attachments = [
            EmailAttachment(filename=a.filename, mimetype=a.mimetype, size=a.size,
                            content_id=a.content_id)
            for a in original.attachments
        ]
        session.add(copy)
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
    return copy.id


def delete_emails(where: ColumnElement[bool]) -> int:
    """Delete the selected emails (not those being sent right now); return how many."""
    with db.engine.begin() as conn:
        return conn.execute(
            delete(EMAILS).where(where, EMAILS.c.status != "sending")
        ).rowcount


def status_counts(where: ColumnElement[bool] | None = None) -> dict[str, int]:
    """How many emails are in each status (optionally among ``where``)."""
    query = select(EMAILS.c.status, func.count()).group_by(EMAILS.c.status)
    if where is not None:
        query = query.where(where)
    with db.engine.connect() as conn:
        return {status: n for status, n in conn.execute(query)}


@dataclass
class ServerCounts:
    """Messages sent and failed through one server over recent periods."""

    server_key: str
    server_name: str
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # period -> (sent, failed)


def server_counts(periods: dict[str, timedelta]) -> list[ServerCounts]:
    """Sent and failed counts per server for each period (e.g. last hour, last day)."""
    flush_stats()  # this process's counts of emails sent at once, so they show at once
    now = utcnow()
    result: dict[str, ServerCounts] = {}
    with db.engine.connect() as conn:
        for label, span in periods.items():
            rows = conn.execute(
                select(STATS.c.server_key, func.max(STATS.c.server_name),
                       func.sum(STATS.c.sent), func.sum(STATS.c.failed))
                .where(STATS.c.minute >= (now - span).replace(second=0, microsecond=0))
                .group_by(STATS.c.server_key)
            )
            for key, name, sent, failed in rows:
                entry = result.setdefault(key, ServerCounts(key, name))
                entry.counts[label] = (int(sent or 0), int(failed or 0))
    for entry in result.values():
        for label in periods:
            entry.counts.setdefault(label, (0, 0))
    return sorted(result.values(), key=lambda e: e.server_name)
