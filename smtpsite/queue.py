"""Storing emails in the queue, with their attempts, so that none is ever lost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from smtpsite.extensions import db
from smtpsite.messages import PreparedEmail
from smtpsite.models import EMAIL_PRIORITY, Email, EmailAttachment, EmailAttempt, utcnow


@dataclass(frozen=True)
class Attempt:
    """One try at sending through one server."""

    server: str
    server_key: str
    outcome: str  # sent / failed / uncertain
    code: int | None
    message: str
    at: datetime


def new_email(prepared: PreparedEmail, site_id: int | None) -> Email:
    """An ``Email`` row for ``prepared`` (not yet added to a session)."""
    out = prepared.outgoing
    email = Email(
        message_id=out.message_id,
        site_id=site_id,
        status="waiting",
        priority=EMAIL_PRIORITY[prepared.priority],
        sender=prepared.sender,
        to=prepared.to,
        cc=prepared.cc,
        bcc=prepared.bcc,
        reply_to=prepared.reply_to,
        subject=prepared.subject,
        text_body=prepared.text,
        html_body=prepared.html,
        format=prepared.format,
        headers=prepared.headers,
        envelope_sender=out.sender,
        recipients=list(out.recipients),
        raw=out.data,
        smtputf8=out.smtputf8,
        created_at=utcnow(),
    )
    email.attachments = [
        EmailAttachment(filename=name, mimetype=mimetype, size=size, content_id=cid)
        for name, mimetype, size, cid in prepared.attachments
    ]
    return email


def add_attempts(email: Email, attempts: Sequence[Attempt]) -> None:
    """Record ``attempts`` on ``email`` and update its last-attempt fields."""
    for attempt in attempts:
        email.attempts.append(
            EmailAttempt(
                at=attempt.at,
                server_key=attempt.server_key,
                server_name=attempt.server,
                outcome=attempt.outcome,
                code=attempt.code,
                message=attempt.message[:4000],
            )
        )
    if attempts:
        email.first_attempt_at = email.first_attempt_at or attempts[0].at
        email.last_attempt_at = attempts[-1].at
        email.attempt_count = (email.attempt_count or 0) + len(attempts)


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

    Its own session keeps the caller's unit of work untouched and makes the write durable
    before the caller is told the email is queued.
    """
    email = new_email(prepared, site_id)
    email.status = status
    email.last_result = last_result
    email.next_attempt_at = next_attempt_at
    email.scheduled_at = scheduled_at
    email.expires_at = expires_at
    add_attempts(email, attempts)
    with Session(db.engine, expire_on_commit=False) as session, session.begin():
        session.add(email)
    return email.id
