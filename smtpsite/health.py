"""Beside each worker: heartbeats, periodic server checks and alert rounds, in a thread.

Every worker notes it is alive in ``worker_beats`` every few seconds (``/healthz`` reads
it) and removes its row when it stops cleanly. Rounds are shared: a round is taken by
moving its row in ``alert_state`` forward in one conditional UPDATE, which only one
process can win per period, on SQLite and PostgreSQL alike. So however many workers run,
each server is checked once per ``emails.health_check_interval`` and alerts are looked
for once per ``SMTPSITE_ALERT_EVERY`` seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta

from flask import Flask, current_app
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from smtpsite import alerts, settings
from smtpsite.delivery import CheckResult
from smtpsite.extensions import db
from smtpsite.models import AlertState, SmtpServer, WorkerBeat, utcnow

log = logging.getLogger(__name__)
BEATS = WorkerBeat.__table__
ALERTS = AlertState.__table__
# Beats of workers that died without a clean stop are removed after this long.
FORGET_AFTER = timedelta(days=1)
NEVER = datetime(2000, 1, 1)


def _insert(table):
    return (pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert)(table)


def beat(worker_id: str, started_at: datetime) -> None:
    """Note that ``worker_id`` is alive now."""
    now = utcnow()
    values = {"hostname": socket.gethostname()[:255], "pid": os.getpid(), "last_seen_at": now}
    with db.engine.begin() as conn:
        conn.execute(_insert(BEATS).values(worker_id=worker_id, started_at=started_at, **values)
                     .on_conflict_do_update(index_elements=["worker_id"], set_=values))
        conn.execute(delete(BEATS).where(BEATS.c.last_seen_at < now - FORGET_AFTER))


def forget(worker_id: str) -> None:
    """Remove the worker's beat (it stopped cleanly)."""
    with db.engine.begin() as conn:
        conn.execute(delete(BEATS).where(BEATS.c.worker_id == worker_id))


def claim_round(name: str, every: float, holder: str) -> bool:
    """Take round ``name`` if none was taken in the last ``every`` seconds; True if taken."""
    key = f"round:{name}"
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(_insert(ALERTS).values(key=key, state="round", changed_at=NEVER)
                     .on_conflict_do_nothing())
        # Of several workers racing here, one moves the row; the others then match nothing.
        taken = conn.execute(update(ALERTS).where(
            ALERTS.c.key == key, ALERTS.c.changed_at <= now - timedelta(seconds=every)
        ).values(changed_at=now, detail=holder))
        return taken.rowcount == 1


def check_servers() -> int:
    """Run the connection check (it sends nothing) of every enabled server; return how many."""
    from smtpsite.admin.checks import check_server, record_check
    from smtpsite.admin.servers import default_sender

    fail_all = settings.read_global("emails.fail_all")["emails.fail_all"]
    servers = db.session.execute(select(SmtpServer).where(SmtpServer.enabled.is_(True))
                                 .order_by(SmtpServer.id)).scalars().all()
    for server in servers:
        if fail_all:  # the rehearsal covers checks too, or they would report recoveries
            record_check(server.key, CheckResult(False, "emails.fail_all is on"))
            continue
        sender = default_sender(server)
        result = check_server(server, sender, sender)
        log.info("health check of %s: %s", server, "ok" if result.ok else result.message)
    return len(servers)


class Monitor:
    """The thread beside a worker: beats, and the shared check and alert rounds."""

    def __init__(self, app: Flask, worker_id: str) -> None:
        self.app = app
        self.worker_id = worker_id
        self.started_at = utcnow()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="smtpsite-health", daemon=True)

    def _run(self) -> None:
        with self.app.app_context():
            every = float(self.app.config["SMTPSITE_HEARTBEAT_SECONDS"])
            while True:
                try:
                    self.tick()
                except Exception:  # a database hiccup: try again at the next beat
                    log.exception("health round failed")
                finally:
                    with suppress(Exception):
                        db.session.remove()
                if self.stop.wait(every):
                    return

    def tick(self) -> None:
        """Beat; then run a check round and/or an alert round if this worker wins them."""
        beat(self.worker_id, self.started_at)
        interval = settings.read_global("emails.health_check_interval")["emails.health_check_interval"]
        checked = bool(interval) and claim_round("health", interval, self.worker_id)
        if checked:
            check_servers()
            db.session.remove()
        if checked or claim_round("alerts", self.app.config["SMTPSITE_ALERT_EVERY"], self.worker_id):
            alerts.run_round()


@contextmanager
def monitor(worker_id: str) -> Iterator[Monitor]:
    """Run a :class:`Monitor` for the life of the block; forget the worker's beat after it."""
    watcher = Monitor(current_app._get_current_object(), worker_id)
    watcher.thread.start()
    try:
        yield watcher
    finally:
        watcher.stop.set()
        # A check in flight ends within its plugin's timeout; do not wait longer than that.
        watcher.thread.join(timeout=float(current_app.config["SMTPSITE_SEND_TIMEOUT"]))
        try:
            forget(worker_id)
        except Exception:
            log.exception("could not remove the heartbeat of worker %s", worker_id)
