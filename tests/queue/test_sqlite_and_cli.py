"""SQLite's one worker at a time, the run command's background worker, the queue CLI, the schema."""

from __future__ import annotations

import signal

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from smtpsite.extensions import db
from smtpsite.models import Email
from tests.queue.conftest import add_server, queue_mail, received_ids, wait_for
from tests.smtpd import Behaviour, free_port


def count(*statuses: str) -> int:
    db.session.remove()
    query = select(func.count()).select_from(Email)
    if statuses:
        query = query.where(Email.status.in_(statuses))
    return db.session.execute(query).scalar_one()


def test_models_and_migrations_agree(any_app):
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == []


def test_sqlite_runs_one_worker_and_a_killed_one_hands_back_at_once(sqlite_qapp, start_server,
                                                                      spawn):
    slow = start_server(behaviour=Behaviour(data_delay=0.3))
    add_server(slow)
    first = spawn()
    wait_for(lambda: "started" in first.output(), what="the first worker")
    # A second worker on the same SQLite file waits for the first; --once leaves at once.
    second = spawn("worker", "--once")
    assert second.popen.wait(30) == 0
    assert "another worker runs on this SQLite database" in second.output()
    ids = queue_mail(30)
    wait_for(lambda: len(slow.messages) >= 2, what="the first worker to be sending")
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(5)
    assert count("sending") > 0
    slow.recorder.behaviour.data_delay = 0
    # The lease is 30 s; the next worker knows it is alone and takes everything back now.
    third = spawn("worker", "--once")
    assert third.popen.wait(30) == 0, third.output()
    assert "handed back" in third.output()
    assert set(received_ids(slow)) == set(ids) and count() == 0


def test_serve_runs_the_panel_and_a_background_worker(sqlite_qapp, smtp_server, spawn):
    import urllib.request

    add_server(smtp_server)
    port = free_port()
    serving = spawn("serve", "--port", str(port))
    [message_id] = queue_mail(1)
    wait_for(lambda: received_ids(smtp_server) == [message_id], what="the background worker")

    def answers() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
        except urllib.error.HTTPError:
            return True  # any HTTP answer: the panel is up
        except OSError:
            return False
        return True

    wait_for(answers, what="the panel")
    serving.popen.send_signal(signal.SIGTERM)
    assert serving.popen.wait(30) == 0, serving.output()
    assert "stopped" in serving.output()


def test_queue_cli_lists_resends_deletes_and_cleans_up(sqlite_qapp, runner):
    queue_mail(3)
    db.session.execute(Email.__table__.update().where(Email.id == 1).values(status="failed"))
    db.session.commit()
    out = runner.invoke(args=["smtpsite", "queue", "list"])
    assert out.exit_code == 0 and "waiting=2" in out.output and "failed=1" in out.output
    out = runner.invoke(args=["smtpsite", "queue", "resend", "--failed"])
    assert "1 emails will be sent again" in out.output
    assert count("waiting") == 3
    out = runner.invoke(args=["smtpsite", "queue", "resend"])
    assert out.exit_code != 0 and "choose exactly one" in out.output
    out = runner.invoke(args=["smtpsite", "queue", "delete", "--id", "2"], input="n\n")
    assert out.exit_code != 0 and count() == 3  # not confirmed: nothing deleted
    out = runner.invoke(args=["smtpsite", "queue", "delete", "--id", "2", "--yes"])
    assert "1 emails deleted" in out.output and count() == 2
    out = runner.invoke(args=["smtpsite", "queue", "cleanup"])
    assert out.exit_code == 0 and "0 expired" in out.output


def test_worker_once_from_the_cli(sqlite_qapp, smtp_server, runner):
    add_server(smtp_server)
    queue_mail(2)
    out = runner.invoke(args=["smtpsite", "worker", "--once"])
    assert out.exit_code == 0, out.output
    assert "sent 2, failed 0" in out.output and len(smtp_server.messages) == 2
