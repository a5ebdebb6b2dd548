"""Real worker processes (``flask smtpsite worker``) sharing one queue."""

from __future__ import annotations

import signal
from collections import Counter

from sqlalchemy import func, select

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.models import Email
from tests.queue.conftest import add_server, bulk_queue, queue_mail, received_ids, timed, wait_for
from tests.smtpd import Behaviour, TestServer


def count(*statuses: str) -> int:
    db.session.remove()
    query = select(func.count()).select_from(Email)
    if statuses:
        query = query.where(Email.status.in_(statuses))
    return db.session.execute(query).scalar_one()


def test_many_workers_send_every_email_exactly_once(pg_qapp, start_server, spawn):
    single = start_server()
    double = start_server()
    spare = start_server()
    add_server(single, priority="high", max_connections=1)
    add_server(double, max_connections=2)
    add_server(spare, priority="low", max_connections=1)
    settings.set_value("emails.batch_size", 25)
    db.session.commit()
    ids = bulk_queue(1500)
    workers = [spawn() for _ in range(4)]
    servers = (single, double, spare)
    wait_for(lambda: sum(len(s.messages) for s in servers) >= 1500 and count() == 0,
             timeout=60, what="the workers to drain the queue")
    delivered = received_ids(*servers)
    assert Counter(delivered) == Counter(ids)  # every email, each exactly once
    assert single.recorder.peak_active == 1
    assert double.recorder.peak_active <= 2 and spare.recorder.peak_active == 1
    for worker in workers:
        worker.popen.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.popen.wait(15) == 0, worker.output()
        assert "batch:" in worker.output()


def test_a_worker_killed_mid_batch_loses_nothing(pg_qapp, start_server, spawn):
    # The default lease (30 minutes): what the dead worker held comes back because its
    # database connection died with it, not because the lease ran out.
    settings.set_value("emails.sending_timeout", 1800)
    settings.set_value("emails.batch_size", 40)
    settings.set_value("emails.archive_days", 1)
    db.session.commit()
    slow = start_server(behaviour=Behaviour(data_delay=0.01))
    add_server(slow, max_connections=2)
    ids = bulk_queue(200)
    victim = spawn()
    wait_for(lambda: len(slow.messages) >= 20, what="the first worker to be mid-batch")
    victim.popen.send_signal(signal.SIGKILL)
    victim.popen.wait(5)
    assert count("sending") > 0  # it died holding emails
    survivor = spawn()
    wait_for(lambda: count("sent") == 200, timeout=60, what="the survivor to send the rest")
    delivered = Counter(received_ids(slow))
    assert set(delivered) == set(ids)
    # Sent twice at most: what the killed worker had sent but not yet recorded.
    assert sum(n - 1 for n in delivered.values()) <= 40
    survivor.popen.send_signal(signal.SIGTERM)
    assert survivor.popen.wait(15) == 0
    assert "handed back" in survivor.output()


def test_sigterm_finishes_the_message_in_flight_and_hands_back_the_rest(pg_qapp, start_server,
                                                                        spawn):
    slow = start_server(behaviour=Behaviour(data_delay=0.2))
    add_server(slow)
    queue_mail(30)
    worker = spawn()
    wait_for(lambda: len(slow.messages) >= 1, what="the first message")
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.popen.wait(15) == 0, worker.output()
    sent = len(slow.messages)
    assert sent < 30
    assert count("sending") == 0 and count("waiting") == 30 - sent
    db.session.remove()
    waiting = db.session.execute(select(Email).where(Email.status == "waiting")).scalars().all()
    assert all(e.attempts == [] and e.claimed_by is None for e in waiting)


def test_the_rate_limit_holds_across_two_workers(pg_qapp, spawn):
    server = timed(TestServer()).start()
    try:
        add_server(server, max_connections=2, rate_limit=300)  # one message every 0.2 s
        queue_mail(8)
        spawn()
        spawn()
        wait_for(lambda: len(server.messages) == 8, what="eight messages")
        arrivals = sorted(server.recorder.arrivals)
        # Two workers sending on their own would need about half of this.
        assert arrivals[-1] - arrivals[0] >= 7 * 0.2 - 0.1
    finally:
        server.stop()


def test_new_mail_wakes_an_idle_worker(pg_qapp, smtp_server, spawn):
    add_server(smtp_server)
    worker = spawn("worker", "--idle-poll", "60")
    wait_for(lambda: "started" in worker.output(), what="the worker to start")
    [message_id] = queue_mail(1)
    # Far sooner than its next poll: the send helper's NOTIFY woke it.
    wait_for(lambda: received_ids(smtp_server) == [message_id], timeout=20, what="the email")
