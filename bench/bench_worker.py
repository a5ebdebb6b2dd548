"""Workers draining the queue: against Django's send_messages, 4 workers against 1, memory."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from flask import current_app
from sqlalchemy import func, insert, select

from bench import baselines
from bench.harness import Row, alternate, rate
from bench.messages import RECIPIENT, SENDER, SUBJECT, TEXT
from bench.sink import Sink
from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.messages import Attachment, build_message
from smtpsite.models import Email, EmailAttempt
from smtpsite.queue import new_email
from smtpsite.servers import save_server
from smtpsite.sites import create_site, find_site
from smtpsite.worker import Worker

EMAILS = Email.__table__
CHUNK = 500


def prepare_site(server_names: list[str]) -> None:
    """Site "shop" with one network server per name (each may hold 4 connections)."""
    site = find_site("shop") or create_site("shop", "Shop")
    for name in server_names:
        save_server(None, server_name=name, method="network", options={"security": "none"},
                    sites=[site], max_connections=4)
    settings.set_value("emails.queue_enabled", True)
    settings.set_value("emails.archive_days", 1)  # keep sent rows, so the count can be checked
    db.session.commit()


def fill_queue(count: int, attachment_size: int = 0) -> None:
    """``count`` waiting emails, each its own Message-ID, inserted in chunks (not timed)."""
    files = [Attachment("report.bin", os.urandom(attachment_size))] if attachment_size else []
    prepared = build_message(sender=SENDER, to=[RECIPIENT], subject=SUBJECT, text=TEXT,
                             attachments=files)
    site = find_site("shop")
    email = new_email(prepared, site.id)
    row = {c.name: getattr(email, c.key) for c in EMAILS.columns
           if c.name != "id" and getattr(email, c.key) is not None}
    template, original = prepared.outgoing.data, prepared.outgoing.message_id.encode()
    for start in range(0, count, CHUNK):
        rows = []
        for n in range(start, min(count, start + CHUNK)):
            message_id = f"<bench-{n}-{time.time_ns()}@example.com>"
            rows.append({**row, "message_id": message_id,
                         "raw": template.replace(original, message_id.encode(), 1)})
        with db.engine.begin() as conn:
            conn.execute(insert(EMAILS), rows)
    _postgresql_upkeep("ANALYZE emails")  # the planner sees the filled queue


def _sent() -> int:
    with db.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(EMAILS)
                            .where(EMAILS.c.status.in_(("sent",)))).scalar_one()


def _drain_in_process(count: int) -> float:
    fill_queue(count)
    sent_before = _sent()
    start = time.perf_counter()
    Worker(once=True, idle_poll=0.1).run()
    seconds = time.perf_counter() - start
    sent = _sent() - sent_before
    if sent != count:
        raise RuntimeError(f"the worker sent {sent} of {count} emails")
    return count / seconds


def _clear() -> None:
    """An empty queue for the next round, in the same state each time."""
    with db.engine.begin() as conn:
        conn.execute(EmailAttempt.__table__.delete())
        conn.execute(EMAILS.delete())
    # The rows just deleted (tens of thousands at once, which a live queue never does)
    # would otherwise stay in the indexes the claim scans until autovacuum came by.
    _postgresql_upkeep("VACUUM emails, email_attempts")


def _postgresql_upkeep(sql: str) -> None:
    """Run VACUUM or ANALYZE now, as autovacuum would in time (PostgreSQL only)."""
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(sql)


def drain(app, label: str, count: int, rounds: int, sink: Sink, judge: bool) -> list[Row]:
    """A worker draining ``count`` queued emails against Django send_messages (same messages)."""
    with app.app_context():
        prepare_site([sink.server_name])

        def smtpsite_worker() -> float:
            _clear()
            return _drain_in_process(count)

        medians = alternate({
            "smtpsite": smtpsite_worker,
            "django": lambda: rate(count, lambda: baselines.django_send_messages(
                "127.0.0.1", sink.port, count)),
        }, rounds)
    figure = medians["smtpsite"]
    return [Row(f"worker draining {count:,} queued emails ({label}, {sink.kind})", figure, "msg/s",
                "Django send_messages, one connection", medians["django"], "≥ 1.0×",
                figure >= medians["django"] if judge else None)]


def _spawn_workers(database_url: str, folder: Path, n: int) -> list[subprocess.Popen]:
    env = {**os.environ, "SMTPSITE_DATABASE_URL": database_url,
           "SMTPSITE_PICKUP_ROOTS": str(folder),
           "SMTPSITE_SECRET_KEYS": current_app.config["SMTPSITE_SECRET_KEYS"]}
    return [subprocess.Popen([sys.executable, "-m", "bench.worker_process"], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(n)]


def run_workers(database_url: str, folder: Path, n: int, count: int
                ) -> tuple[float, int, float]:
    """Start ``n`` worker processes, let them go together.

    Returns messages per second, the peak RSS in KB, and the share of the machine's CPU
    time that was busy while they drained.
    """
    workers = _spawn_workers(database_url, folder, n)
    try:
        for worker in workers:
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker process did not start")
        start, cpu_before = time.perf_counter(), _cpu_times()
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        peaks = [int(worker.stdout.readline().split()[1]) for worker in workers]
        seconds, cpu_after = time.perf_counter() - start, _cpu_times()
    finally:
        for worker in workers:
            worker.wait(timeout=600)
    return count / seconds, max(peaks), _busy_share(cpu_before, cpu_after)


def scaling(app, database_url: str, folder: Path, count: int, rounds: int, sinks: list[Sink],
            judge: bool) -> list[Row]:
    """4 worker processes draining ``count`` emails to 4 servers against 1 worker process."""
    with app.app_context():
        prepare_site([s.server_name for s in sinks])

        busy: dict[int, list[float]] = {4: [], 1: []}

        def workers(n: int) -> float:
            _clear()
            fill_queue(count)
            figure, _, busy_share = run_workers(database_url, folder, n, count)
            busy[n].append(busy_share)
            if _sent() != count:
                raise RuntimeError(f"{n} workers sent {_sent()} of {count} emails")
            return figure

        medians = alternate({"four": lambda: workers(4), "one": lambda: workers(1)}, rounds)
    # Whether the CPUs were the limit: how busy the whole machine was during each drain.
    note = (f"CPUs busy: {statistics.median(busy[4]):.0%} with 4 workers, "
            f"{statistics.median(busy[1]):.0%} with 1")
    return [Row(f"4 workers draining {count:,} emails to 4 servers (PostgreSQL)", medians["four"],
                "msg/s", "1 worker", medians["one"], "≥ 1.5×",
                medians["four"] >= 1.5 * medians["one"] if judge else None, note=note)]


def _cpu_times() -> tuple[int, int]:
    """The machine's (busy, total) CPU time so far, in clock ticks (Linux /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0


def memory(app, database_url: str, folder: Path, count: int, sink: Sink, judge: bool) -> list[Row]:
    """Peak RSS of a worker process draining ``count`` emails with a 100 KB attachment each."""
    with app.app_context():
        prepare_site([sink.server_name])
        _clear()
        fill_queue(count, attachment_size=100 * 1024)
        _, peak_kb, _ = run_workers(database_url, folder, 1, count)
        sent = _sent()
        _clear()
    mb = peak_kb / 1024
    note = "" if sent == count else f"(only {sent} of {count} sent)"
    return [Row(f"worker peak RSS draining {count:,} emails with a 100 KB attachment each", mb,
                "MB", target="≤ 200 MB", passed=(mb <= 200 and sent == count) if judge else None,
                note=note)]
