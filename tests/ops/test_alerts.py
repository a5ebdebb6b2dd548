"""Alerts on real servers: one per change, by email through a working server and by webhook."""

from __future__ import annotations

import logging
from email import message_from_bytes

from sqlalchemy import func

from smtpsite import alerts, health, queue, send_mail
from smtpsite.extensions import db
from smtpsite.models import ServerHealth, WorkerBeat
from tests.ops.conftest import add_server, configure, wait_for
from tests.smtpd import Behaviour, free_port

REFUSE = "451 4.3.0 not now"


def _round() -> list[str]:
    found = alerts.run_round()
    db.session.remove()
    return [a.event for a in found]


def _subjects(server) -> list[str]:
    return [message_from_bytes(m.data)["Subject"] for m in server.messages]


def test_server_failing_then_recovering_alerts_once_each(fast, start_server, webhook):
    relay = start_server()
    flaky = start_server()
    add_server(relay, priority="high")
    add_server(flaky)
    configure(emails__alert_recipients="ops@example.com, oncall@example.com",
              emails__alert_webhook=webhook.url)
    health.check_servers()
    assert _round() == [] and _round() == []  # both work: quiet
    flaky.recorder.behaviour = Behaviour(mail_reply=REFUSE)
    for _ in range(3):
        health.check_servers()
    assert _round() == ["server_failing"]
    health.check_servers()
    assert _round() == []  # still failing: nothing new to say
    flaky.recorder.behaviour = Behaviour()
    health.check_servers()
    assert _round() == ["server_recovered"]
    assert _round() == []
    assert webhook.events() == ["server_failing", "server_recovered"]
    assert webhook.paths == ["/hook/s3cr3t-token-123"] * 2
    failing = webhook.calls[0]
    assert failing["server"] == flaky.server_name and "451" in failing["detail"]
    # The emails went through the working server, to both recipients.
    assert _subjects(relay) == [f"[smtpsite] server {flaky.server_name} is failing",
                                f"[smtpsite] server {flaky.server_name} recovered"]
    assert sorted(relay.messages[0].rcpt_tos) == ["oncall@example.com", "ops@example.com"]
    assert not flaky.messages


def test_a_failing_high_priority_server_is_passed_over_for_the_alert(fast, start_server,
                                                                     webhook):
    broken = start_server(behaviour=Behaviour(mail_reply=REFUSE))
    relay = start_server()
    add_server(broken, priority="high")
    add_server(relay)
    configure(emails__alert_recipients="ops@example.com")
    health.check_servers()
    assert _round() == ["server_failing"]  # first seen failing: worth an alert
    assert _subjects(relay) == [f"[smtpsite] server {broken.server_name} is failing"]
    assert not broken.messages


def test_the_worker_sends_alerts_on_its_own(fast, start_server, webhook, start_worker):
    relay = start_server()
    add_server(relay)
    down = add_server(f"127.0.0.1:{free_port()}").key  # down from the start
    configure(emails__alert_webhook=webhook.url, emails__health_check_interval=1)
    worker = start_worker(fast)
    wait_for(lambda: webhook.events() == ["server_failing"], what="the failing alert")
    # Another check round, and the alert round after it, pass without a second alert.
    first = _checked_at(down)
    wait_for(lambda: _checked_at(down) > first, what="another check round")
    second = _checked_at(down)
    wait_for(lambda: _last_beat() > second, what="the alert round after it")
    worker.close()
    assert webhook.events() == ["server_failing"]


def _checked_at(key: str):
    db.session.remove()
    return db.session.get(ServerHealth, key).last_check_at


def _last_beat():
    db.session.remove()
    return db.session.query(func.max(WorkerBeat.last_seen_at)).scalar()


def test_fallback_rescue_alerts_once_per_cooldown(fast, start_server, webhook):
    primary = start_server(behaviour=Behaviour(mail_reply=REFUSE))
    fallback = start_server()
    add_server(primary, priority="high")
    add_server(fallback)
    configure(emails__alert_webhook=webhook.url, emails__server_cooldown=0,
              emails__alert_recipients="ops@example.com")
    result = send_mail(None, to=["user@example.com"], subject="order 1", text="hi", queue=False)
    assert result.status == "sent" and result.server == fallback.server_name
    assert [a.outcome for a in result.attempts] == ["failed", "sent"]
    assert sorted(_round()) == ["fallback_rescue", "server_failing"]
    rescue = next(c for c in webhook.calls if c["event"] == "fallback_rescue")
    assert rescue["failed"] == primary.server_name and rescue["rescuer"] == fallback.server_name
    assert rescue["message_id"] == result.message_id
    # More rescues within the cool-down: no further alert.
    for n in range(3):
        assert send_mail(None, to=["user@example.com"], subject=f"order {n + 2}", text="hi",
                         queue=False).server == fallback.server_name
    assert _round() == []
    configure(emails__alert_rescue_cooldown=0)
    send_mail(None, to=["user@example.com"], subject="order 9", text="hi", queue=False)
    assert _round() == ["fallback_rescue"]
    subjects = [s for s in _subjects(fallback) if s.startswith("[smtpsite]")]
    assert len(subjects) == 3 and sum("delivered instead" in s for s in subjects) == 2


def test_queue_backlog_alerts_when_it_crosses_the_threshold_and_when_back(fast, smtp_server,
                                                                          webhook):
    add_server(smtp_server)
    configure(emails__alert_webhook=webhook.url, emails__alert_queue_threshold=3)
    for n in range(3):
        send_mail(None, to=["a@example.com"], subject=f"n{n}", text="x", queue=True)
    assert _round() == []  # at the threshold, not past it
    send_mail(None, to=["a@example.com"], subject="n4", text="x", queue=True)
    assert _round() == ["queue_backlog"]
    assert webhook.calls[-1]["depth"] == 4 and webhook.calls[-1]["threshold"] == 3
    send_mail(None, to=["a@example.com"], subject="n5", text="x", queue=True)
    assert _round() == []
    assert queue.delete_emails(queue.by_status("waiting")) == 5
    assert _round() == ["queue_normal"]
    assert webhook.events() == ["queue_backlog", "queue_normal"]


def test_alert_delivery_failures_are_logged_and_never_raise(fast, caplog):
    add_server(f"127.0.0.1:{free_port()}")  # the only server is down
    hook = f"http://127.0.0.1:{free_port()}/hook/t0ken-never-logged"
    configure(emails__alert_recipients="ops@example.com", emails__alert_webhook=hook)
    health.check_servers()
    with caplog.at_level(logging.INFO):
        assert _round() == ["server_failing"]
    messages = caplog.text
    assert "could not be emailed" in messages and "the alert webhook failed" in messages
    assert "t0ken-never-logged" not in messages
