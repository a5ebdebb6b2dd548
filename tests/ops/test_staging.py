"""Staging switches on real servers: override recipients, simulate, fail every send."""

from __future__ import annotations

from email import message_from_bytes, policy

from sqlalchemy import select

from smtpsite import alerts, send_mail
from smtpsite.extensions import db
from smtpsite.models import Email
from smtpsite.worker import Worker
from tests.ops.conftest import add_server, configure


def _email(message_id: str) -> Email:
    db.session.remove()
    return db.session.execute(select(Email).where(Email.message_id == message_id)).scalar_one()


def test_override_sends_only_to_the_override_and_keeps_the_originals(any_app, smtp_server):
    add_server(smtp_server)
    configure(emails__override_recipients="qa@example.com, tester@example.org",
              emails__archive_days=1)
    queued = send_mail(None, to=["eve@example.com"], subject="later", text="x", queue=True)
    assert queued.status == "queued" and Worker(once=True).run().sent == 1
    now = send_mail(None, to=["ann@example.com", "bob@example.com"], cc=["cat@example.com"],
                    bcc=["dan@example.com"], subject="now", text="x", queue=False)
    assert now.status == "sent"
    assert len(smtp_server.messages) == 2
    for message in smtp_server.messages:
        assert sorted(message.rcpt_tos) == ["qa@example.com", "tester@example.org"]
    second, first = (message_from_bytes(m.data, policy=policy.default)
                     for m in smtp_server.messages)
    assert first["X-Original-Recipients"] == (
        "To: ann@example.com, bob@example.com; Cc: cat@example.com; Bcc: dan@example.com")
    assert first["To"] == "ann@example.com, bob@example.com" and first["Bcc"] is None
    assert second["X-Original-Recipients"] == "To: eve@example.com"
    # The queue keeps what the site asked for, and the envelope that was used.
    stored = _email(queued.message_id)
    assert stored.to == ["eve@example.com"]
    assert stored.recipients == ["qa@example.com", "tester@example.org"]


def test_override_can_be_set_for_one_site(any_app, smtp_server):
    from smtpsite import settings
    from smtpsite.sites import create_site

    staging = create_site("staging", "Staging shop")
    create_site("live", "Live shop")
    db.session.commit()
    add_server(smtp_server)
    settings.set_value("emails.override_recipients", "qa@example.com", staging)
    db.session.commit()
    send_mail("staging", to=["ann@example.com"], subject="s", text="x", queue=False)
    send_mail("live", to=["ann@example.com"], subject="l", text="x", queue=False)
    assert [m.rcpt_tos for m in smtp_server.messages] == [["qa@example.com"], ["ann@example.com"]]


def test_simulate_sends_nothing_and_records_it_as_sent(any_app, smtp_server):
    add_server(smtp_server)
    configure(emails__simulate=True, emails__archive_days=1)
    now = send_mail(None, to=["ann@example.com"], subject="now", text="x", queue=False)
    assert now.status == "sent" and now.server == "(simulated)"
    assert [(a.server, a.outcome) for a in now.attempts] == [("(simulated)", "sent")]
    assert "simulated" in now.attempts[0].message
    queued = send_mail(None, to=["ann@example.com"], subject="later", text="x", queue=True)
    report = Worker(once=True).run()
    assert report.sent == 1
    stored = _email(queued.message_id)
    assert stored.status == "sent" and stored.sent_by == "(simulated)"
    assert [(a.server_name, a.message) for a in stored.attempts] == [
        ("(simulated)", "simulated: emails.simulate is on, nothing was sent")]
    assert smtp_server.messages == [] and smtp_server.recorder.connections == 0


def test_fail_all_defers_and_stores_every_email_and_rehearses_alerts(any_app, smtp_server,
                                                                     webhook):
    add_server(smtp_server)
    configure(emails__fail_all=True, emails__alert_webhook=webhook.url)
    result = send_mail(None, to=["ann@example.com"], subject="now", text="x", queue=False)
    assert result.status == "deferred" and result.email_id is not None
    assert result.attempts and all(a.outcome == "failed" and a.code == 451
                                   for a in result.attempts)
    stored = _email(result.message_id)
    assert stored.status == "waiting" and "emails.fail_all" in stored.last_result
    assert smtp_server.messages == [] and smtp_server.recorder.connections == 0
    assert [a.event for a in alerts.run_round()] == ["server_failing"]
    assert webhook.events() == ["server_failing"]
