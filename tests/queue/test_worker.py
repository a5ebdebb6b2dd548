"""The worker in this process, on SQLite and PostgreSQL, against real SMTP servers."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from smtpsite import queue, send_mail, settings
from smtpsite.extensions import db
from smtpsite.models import Email, EmailAttempt, utcnow
from smtpsite.sites import create_site
from tests.queue.conftest import add_server, drain, queue_mail, received_ids, wait_for
from tests.smtpd import Behaviour, TestServer, free_port


def emails() -> list[Email]:
    db.session.expire_all()
    return db.session.execute(select(Email).order_by(Email.id)).scalars().all()


def test_queued_email_goes_out_unchanged_and_is_archived(qapp, smtp_server):
    add_server(smtp_server)
    settings.set_value("emails.archive_days", 3)
    db.session.commit()
    [message_id] = queue_mail(1)
    [stored] = emails()
    assert stored.status == "waiting" and stored.message_id == message_id
    raw = stored.raw
    report = drain()
    assert report.sent == 1 and report.failed == 0
    [received] = smtp_server.messages
    assert received.data.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    [archived] = emails()
    assert archived.status == "sent" and archived.sent_by == smtp_server.server_name
    assert archived.message_id == message_id and archived.raw == raw
    assert archived.claimed_by is None and archived.sent_at is not None
    assert [(a.outcome, a.code) for a in archived.attempts] == [("sent", 250)]


def test_archive_days_zero_deletes_after_sending(qapp, smtp_server):
    add_server(smtp_server)
    queue_mail(3)
    assert drain().sent == 3
    assert emails() == [] and len(smtp_server.messages) == 3
    assert db.session.execute(select(EmailAttempt)).first() is None
    # The counts survive the emails: they feed the admin home page.
    [counts] = queue.server_counts({"hour": timedelta(hours=1)})
    assert counts.server_name == smtp_server.server_name and counts.counts["hour"] == (3, 0)


def test_higher_priority_first_then_oldest(qapp, smtp_server):
    add_server(smtp_server)
    low = queue_mail(2, priority="low")
    normal = queue_mail(2, priority="normal")
    high = queue_mail(2, priority="high")
    drain()
    assert received_ids(smtp_server) == high + normal + low


def test_one_connection_per_batch_reopened_after_the_limit(qapp, smtp_server):
    add_server(smtp_server)
    settings.set_value("emails.messages_per_connection", 4)
    db.session.commit()
    queue_mail(10)
    assert drain().sent == 10
    assert smtp_server.recorder.connections == 3  # 4 + 4 + 2
    assert smtp_server.recorder.peak_active == 1


def test_scheduled_waits_and_expired_is_never_sent(qapp, smtp_server):
    add_server(smtp_server)
    now = utcnow()
    later = queue_mail(1, scheduled_at=now + timedelta(hours=1))
    due = queue_mail(1, scheduled_at=now - timedelta(seconds=1))
    expired = queue_mail(1, expires_at=now - timedelta(seconds=1))
    fresh = queue_mail(1, expires_at=now + timedelta(hours=1))
    drain()
    assert sorted(received_ids(smtp_server)) == sorted(due + fresh)
    status = {e.message_id: e.status for e in emails()}
    assert status == {later[0]: "waiting", expired[0]: "expired"}
    # Once its time comes, the scheduled one goes out.
    db.session.execute(update(Email).values(scheduled_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    drain()
    assert later[0] in received_ids(smtp_server)


def test_a_site_with_emails_off_waits_while_others_go(qapp, smtp_server):
    add_server(smtp_server)
    shop = create_site("shop", "Shop")
    db.session.commit()
    shop = shop.id
    settings.set_value("emails.enabled", False, shop)
    db.session.commit()
    global_ids = queue_mail(1)
    # Stored while off: the send helper says so and keeps it.
    settings.set_value("emails.enabled", True, shop)
    db.session.commit()
    shop_ids = queue_mail(2, site="shop")
    settings.set_value("emails.enabled", False, shop)
    db.session.commit()
    drain()
    assert received_ids(smtp_server) == global_ids
    settings.set_value("emails.enabled", True, shop)
    db.session.commit()
    drain()
    assert received_ids(smtp_server) == global_ids + shop_ids


def test_failover_inside_a_batch(qapp, start_server):
    first = start_server(behaviour=Behaviour(rcpt_reply="451 4.3.0 try later"))
    second = start_server()
    add_server(first, priority="high")
    add_server(second)
    ids = queue_mail(5)
    assert drain().sent == 5
    assert sorted(received_ids(second)) == sorted(ids) and first.messages == []
    # Only the first email met the failing server; it cooled down for the others.
    attempts = [[(a.server_name, a.outcome) for a in e.attempts] for e in emails()]
    assert attempts == []  # archive_days 0: sent emails are gone
    [counts] = [c for c in queue.server_counts({"hour": timedelta(hours=1)})
                if c.server_name == first.server_name]
    assert counts.counts["hour"] == (0, 1)


def test_permanent_rejection_and_uncertain_are_not_retried(qapp, start_server):
    rejecting = start_server(behaviour=Behaviour(rcpt_reply="550 5.1.1 no such user"))
    dropping = start_server(behaviour=Behaviour(drop_after_data=True))
    shop, blog = create_site("shop", "Shop"), create_site("blog", "Blog")
    add_server(rejecting, sites=[shop])
    add_server(dropping, sites=[blog])
    [rejected] = queue_mail(1, site="shop")
    [uncertain] = queue_mail(1, site="blog")
    report = drain()
    assert report.failed == 2
    by_id = {e.message_id: e for e in emails()}
    assert by_id[rejected].status == "failed" and "550" in by_id[rejected].last_result
    assert by_id[uncertain].status == "failed"
    assert "may have been delivered" in by_id[uncertain].last_result
    assert [a.outcome for a in by_id[uncertain].attempts] == ["uncertain"]
    # Nothing is tried again automatically, even once the servers are fine.
    db.session.execute(update(Email).values(next_attempt_at=None))
    db.session.commit()
    drain()
    assert len(dropping.messages) == 1
    assert [a.outcome for a in emails()[1].attempts] == ["uncertain"]


def test_server_down_then_back_is_delivered_after_the_back_off(qapp):
    server = TestServer()  # its port is chosen, nothing listens yet
    add_server(server)
    [message_id] = queue_mail(1)
    report = drain()
    assert report.retry == 1 and report.sent == 0
    [email] = emails()
    assert email.status == "waiting" and "refused" in email.last_result.lower()
    assert email.next_attempt_at > email.last_attempt_at  # backed off
    assert drain().claimed == 0  # not due yet
    server.start()
    try:
        def delivered() -> bool:
            drain()
            return message_id in received_ids(server)

        wait_for(delivered, what="delivery after the back-off")
        assert emails() == []
    finally:
        server.stop()


def test_retries_stop_after_the_retry_window(qapp):
    add_server(f"127.0.0.1:{free_port()}")  # nothing listens: connection refused
    settings.set_value("emails.retry_window", 0)
    db.session.commit()
    queue_mail(1)
    drain()
    [email] = emails()
    assert email.status == "failed" and "automatic retries stop" in email.last_result
    assert [a.outcome for a in email.attempts] == ["failed"]
    # Resending starts the window again: same Message-ID, same bytes.
    raw, message_id = email.raw, email.message_id
    assert queue.resend(queue.by_status("failed")) == 1
    [again] = emails()
    assert again.status == "waiting" and again.first_attempt_at is None
    assert again.raw == raw and again.message_id == message_id


def test_an_old_failure_past_the_window_is_not_retried(qapp, smtp_server):
    add_server(smtp_server)
    queue_mail(1)
    db.session.execute(update(Email).values(first_attempt_at=utcnow() - timedelta(hours=2),
                                            attempt_count=1))
    db.session.commit()
    drain()
    assert smtp_server.messages == []
    [email] = emails()
    assert email.status == "failed" and "automatic retries stop" in email.last_result


def test_a_lapsed_lease_makes_the_email_claimable_again(qapp, smtp_server):
    add_server(smtp_server)
    [message_id] = queue_mail(1)
    # A worker that claimed it and died without a trace but its lease.
    [claimed] = queue.claim("pg:1:gone:1", 10, lease_seconds=-1)
    assert claimed.message_id == message_id
    assert queue.claim("other", 10, 30) == []  # held: no one else claims it
    drain()
    assert received_ids(smtp_server) == [message_id]


def test_the_send_helper_failure_lands_in_the_queue_and_the_worker_sends_it(qapp):
    server = TestServer()
    add_server(server)
    settings.set_value("emails.queue_enabled", False)
    db.session.commit()

    result = send_mail(None, to=["a@example.com"], subject="s", text="t")
    assert result.status == "deferred" and result.email_id
    assert emails()[0].status == "waiting"
    server.start()
    try:
        def delivered() -> bool:
            drain()
            return received_ids(server) == [result.message_id]

        wait_for(delivered, what="the worker's retry")
    finally:
        server.stop()


def test_cleanup_removes_archives_past_their_days_in_batches(qapp, smtp_server):
    shop = create_site("shop", "Shop")
    add_server(smtp_server)
    settings.set_value("emails.archive_days", 5)
    settings.set_value("emails.archive_days", 1, shop)
    db.session.commit()
    queue_mail(3)
    queue_mail(2, site="shop")
    drain()
    assert [e.status for e in emails()] == ["sent"] * 5
    # Three days later: the shop's archive (1 day) is due, the global one (5 days) is not.
    db.session.execute(update(Email).values(sent_at=utcnow() - timedelta(days=3)))
    db.session.commit()
    assert queue.cleanup_archive(batch_size=1) == 2
    assert [e.site_id for e in emails()] == [None] * 3
    db.session.execute(update(Email).values(sent_at=utcnow() - timedelta(days=6)))
    db.session.commit()
    assert queue.cleanup_archive(batch_size=2) == 3
    assert emails() == []


def test_delete_and_counts(qapp):
    queue_mail(3)
    ids = [e.id for e in emails()]
    assert queue.status_counts() == {"waiting": 3}
    assert queue.delete_emails(queue.by_ids(ids[:1])) == 1
    queue.claim("someone", 1, 30)
    # The email being sent is left alone.
    assert queue.delete_emails(queue.by_status("waiting", "sending")) == 1
    assert queue.status_counts() == {"sending": 1}
