"""Worker heartbeats and the shared server check rounds, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

from sqlalchemy import select

from smtpsite import health
from smtpsite.extensions import db
from smtpsite.models import ServerHealth, SmtpServer, WorkerBeat
from tests.ops.conftest import add_server, configure, wait_for
from tests.smtpd import free_port


def _beats() -> list[WorkerBeat]:
    db.session.remove()
    return db.session.execute(select(WorkerBeat)).scalars().all()


def _health(key: str) -> ServerHealth | None:
    db.session.remove()
    return db.session.get(ServerHealth, key)


def test_worker_beats_checks_enabled_servers_and_forgets_its_beat(fast, smtp_server,
                                                                  start_worker):
    good = add_server(smtp_server)
    down = add_server(f"127.0.0.1:{free_port()}")
    off = add_server(f"127.0.0.1:{free_port()}", enabled=False)
    keys = {"good": good.key, "down": down.key, "off": off.key}
    configure(emails__health_check_interval=1)
    worker = start_worker(fast)
    wait_for(lambda: len(_beats()) == 1, what="the worker's heartbeat")
    [first] = _beats()
    assert first.worker_id == worker.worker_id
    wait_for(lambda: (_health(keys["good"]) or ServerHealth()).last_check_ok is True
             and (_health(keys["down"]) or ServerHealth()).last_check_ok is False,
             what="both enabled servers to be checked")
    assert _health(keys["down"]).last_check_message  # says why
    assert _health(keys["off"]) is None  # a disabled server is never checked
    assert not smtp_server.messages  # the check sends nothing
    # The beat moves on while the worker runs.
    wait_for(lambda: _beats() and _beats()[0].last_seen_at > first.last_seen_at,
             what="a later heartbeat")
    worker.close()
    assert _beats() == []  # a clean stop removes the beat


def test_server_list_shows_the_checks_of_the_worker(panel, root, world, smtp_server):
    with panel.app_context():
        for server in db.session.execute(select(SmtpServer)).scalars():
            server.enabled = False  # the world's servers have names that do not resolve here
        good = add_server(smtp_server)
        down = add_server(f"127.0.0.1:{free_port()}")
        names = (good.server_name, down.server_name)
        assert health.check_servers() == 2
    page = root.get("/admin/server/?search=127.0.0.1").get_data(as_text=True)
    assert names[0] in page and names[1] in page
    assert page.count('badge-success">OK') == 1 and page.count('badge-danger">failed') == 1


def test_one_worker_takes_each_round(any_app):
    """Workers racing for the same round: exactly one wins it per period."""
    app = any_app
    winners: list[str] = []
    barrier = threading.Barrier(6)

    def race(name: str) -> None:
        with app.app_context():
            barrier.wait()
            if health.claim_round("health", 60, name):
                winners.append(name)
            db.session.remove()

    threads = [threading.Thread(target=race, args=(f"w{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(winners) == 1
    assert not health.claim_round("health", 60, "late")  # still within the period
    assert health.claim_round("health", 0, "late")  # a period of 0: due again


def test_two_workers_check_each_server_once_per_interval(fast, smtp_server):
    add_server(smtp_server)
    configure(emails__health_check_interval=3600)
    with health.monitor("one"), health.monitor("two"):
        wait_for(lambda: len(_beats()) == 2, what="two heartbeats")
        wait_for(lambda: _health(f"server:{_server_id()}") is not None, what="the check")
        # Several more beats of both: nobody checks again within the interval.
        seen = {b.worker_id: b.last_seen_at for b in _beats()}
        wait_for(lambda: all(b.last_seen_at > seen[b.worker_id] for b in _beats()),
                 what="more heartbeats")
    assert smtp_server.recorder.connections == 1
    assert _beats() == []


def _server_id() -> int:
    return db.session.execute(select(SmtpServer.id)).scalar_one()
