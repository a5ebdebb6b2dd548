"""The connection pool of immediate sends: reuse, slots, failures, idle checks."""

from __future__ import annotations

import time

from smtpsite import availability, pool, send_mail
from smtpsite.extensions import db
from tests.perf.conftest import add_network_server
from tests.smtpd import Behaviour


def _send(n: int = 0):
    result = send_mail("shop", to=["a@example.com"], subject=f"n{n}", text="hello\n",
                       sender="shop@example.com")
    db.session.remove()  # as at the end of a web request
    return result


def test_sends_at_once_reuse_one_connection(at_once, smtp_server):
    add_network_server(smtp_server)
    results = [_send(n) for n in range(5)]
    assert [r.status for r in results] == ["sent"] * 5
    assert len(smtp_server.messages) == 5
    assert smtp_server.recorder.connections == 1


def test_an_idle_pooled_connection_keeps_its_slot_until_closed(at_once, smtp_server):
    server = add_network_server(smtp_server, max_connections=1)
    assert _send().status == "sent"
    # The open connection holds the server's only slot: nobody else may connect.
    assert availability.try_acquire(server.key, 1, 60, "someone-else") is None
    pool.pool().close_all()
    lease = availability.try_acquire(server.key, 1, 60, "someone-else")
    assert lease is not None
    availability.release(lease)


def test_idle_connections_are_closed_after_the_idle_timeout(at_once, smtp_server):
    server = add_network_server(smtp_server, max_connections=1)
    connections = pool.pool()
    connections.idle_timeout = 0.05
    assert _send().status == "sent"
    time.sleep(0.1)
    connections.reap()
    assert smtp_server.recorder.active == 0 or _wait_closed(smtp_server)
    lease = availability.try_acquire(server.key, 1, 60, "someone-else")
    assert lease is not None
    availability.release(lease)


def _wait_closed(server) -> bool:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if server.recorder.active == 0:
            return True
        time.sleep(0.02)
    return False


def test_a_connection_the_server_dropped_is_replaced_before_use(at_once, smtp_server,
                                                                monkeypatch):
    add_network_server(smtp_server)
    monkeypatch.setattr(pool, "ALIVE_CHECK_AFTER", 0.0)
    assert _send(1).status == "sent"
    [pooled] = [p for stack in pool.pool()._idle.values() for p in stack]
    pooled.plugin._smtp.sock.close()  # the connection is gone while idle
    result = _send(2)
    assert result.status == "sent"
    assert [a.outcome for a in result.attempts] == ["sent"]  # no failed attempt, no cool-down
    assert len(smtp_server.messages) == 2


def test_a_failure_closes_the_connection_and_frees_the_slot(at_once, start_server):
    server = start_server(behaviour=Behaviour(data_reply="451 4.3.0 try later"))
    record = add_network_server(server, max_connections=1)
    result = _send()
    assert result.status == "deferred"
    assert not any(pool.pool()._idle.values())
    lease = availability.try_acquire(record.key, 1, 60, "someone-else")
    assert lease is not None
    availability.release(lease)


def test_a_changed_server_never_reuses_the_old_connection(at_once, start_server):
    first, second = start_server(), start_server()
    record = add_network_server(first)
    assert _send(1).status == "sent"
    record = db.session.get(type(record), record.id)
    record.server_name = second.server_name
    db.session.commit()
    assert _send(2).status == "sent"
    assert len(first.messages) == 1 and len(second.messages) == 1


def test_pooled_messages_are_the_bytes_built(at_once, smtp_server):
    add_network_server(smtp_server)
    for n in range(3):
        _send(n)
    subjects = [m.data.split(b"Subject: ")[1].split(b"\r\n")[0] for m in smtp_server.messages]
    assert subjects == [b"n0", b"n1", b"n2"]
