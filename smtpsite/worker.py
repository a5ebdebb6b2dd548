"""The queue worker: claims batches, sends them under the failover rules, records the results.

Any number of workers share a PostgreSQL queue, on any number of machines: claims use
``FOR UPDATE SKIP LOCKED``, and server slots, cool-downs and rate limits live in the
database. Each PostgreSQL worker holds an advisory lock on a connection of its own for its
whole life; when it dies, the lock goes with its connection and the other workers hand
back what it held at once, instead of waiting for its lease to run out. On SQLite one
worker runs at a time: it holds an exclusive lock on a file beside the database (released
by the operating system when the process ends, however it ends).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import select, text

from smtpsite import availability, health, queue, settings
from smtpsite.delivery import OutgoingMessage
from smtpsite.extensions import db
from smtpsite.failover import SWITCHES, Job, Sender
from smtpsite.models import Site, utcnow
from smtpsite.routing import ChainEntry, chain_for

log = logging.getLogger(__name__)
# Longest pause between two rounds of retries of one email (seconds).
MAX_BACKOFF = 900.0
# How often idle workers look for due emails (scheduled or retries) and do upkeep (seconds).
IDLE_POLL = {"postgresql": 5.0, "sqlite": 1.0}
UPKEEP_EVERY = 2.0
# Results are written at least this often during a batch (seconds).
RECORD_EVERY = 0.5


@dataclass
class BatchReport:
    """What one batch did."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retry: int = 0
    handed_back: int = 0
    expired: int = 0
    seconds: float = 0.0

    @property
    def progressed(self) -> bool:
        """Whether anything changed for good (not every email handed back untried)."""
        return self.claimed > self.handed_back


def backoff(first_attempt_at: datetime | None, now: datetime, base: float) -> float:
    """Seconds to wait before the next round: doubles with the time since the first attempt."""
    if first_attempt_at is None:
        return max(base, 1.0)
    elapsed = (now - first_attempt_at).total_seconds()
    return min(max(base, elapsed, 1.0), MAX_BACKOFF)


class Worker:
    """One queue worker; ``run()`` drains the queue until stopped (or until empty, with once)."""

    def __init__(self, *, once: bool = False, stop: threading.Event | None = None,
                 idle_poll: float | None = None) -> None:
        self.once = once
        self.stop = stop or threading.Event()
        self.dialect = db.engine.dialect.name
        self.idle_poll = idle_poll or IDLE_POLL.get(self.dialect, 1.0)
        self._key = secrets.randbits(62)
        prefix = "pg" if self.dialect == "postgresql" else "w"
        self.id = f"{prefix}:{self._key}:{socket.gethostname()}:{os.getpid()}"[:100]
        self._listener: Any = None
        self._next_upkeep = 0.0

    # -- life --------------------------------------------------------------------------
    def run(self) -> BatchReport:
        """Send until stopped (or, with ``once``, until nothing is due); return the totals."""
        total = BatchReport()
        with self._presence(), self._health():
            if self.stop.is_set():
                return total
            log.info("worker %s started", self.id)
            while not self.stop.is_set():
                self._upkeep()
                report = self.run_batch()
                for name in ("claimed", "sent", "failed", "retry", "handed_back", "expired"):
                    setattr(total, name, getattr(total, name) + getattr(report, name))
                total.seconds += report.seconds
                if report.claimed and report.progressed:
                    continue
                if self.once:
                    break
                self._wait_for_mail()
            log.info("worker %s stopped: %d sent, %d failed", self.id, total.sent, total.failed)
        return total

    def _health(self) -> AbstractContextManager[object]:
        """Heartbeats, server checks and alerts beside the loop (smtpsite/health.py); not --once."""
        return nullcontext() if self.once or self.stop.is_set() else health.monitor(self.id)

    @contextmanager
    def _presence(self) -> Iterator[None]:
        """Announce this worker (PostgreSQL) or take the single-worker lock (SQLite)."""
        if self.dialect == "postgresql":
            with self._postgresql_presence():
                yield
        elif self.dialect == "sqlite":
            with self._sqlite_lock():
                yield
        else:
            yield

    @contextmanager
    def _postgresql_presence(self) -> Iterator[None]:
        import psycopg

        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = psycopg.connect(url, autocommit=True)
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (self._key,))
            conn.execute(f"LISTEN {queue.NOTIFY_CHANNEL}")
            self._listener = conn
            yield
        finally:
            self._listener = None
            conn.close()

    @contextmanager
    def _sqlite_lock(self) -> Iterator[None]:
        database = db.engine.url.database
        if not database or database == ":memory:":
            yield
            return
        path = Path(database).with_name(Path(database).name + ".worker-lock")
        with open(path, "a+b") as handle:
            waiting_logged = False
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waiting_logged:
                        log.info("another worker runs on this SQLite database; waiting for it")
                        waiting_logged = True
                    if self.once or self.stop.wait(0.5):
                        if self.once:
                            log.info("another worker runs on this SQLite database; leaving it be")
                        self.stop.set()
                        yield
                        return
            try:
                # No other worker can be alive now: what workers held is free again.
                handed = queue.release_claims(queue.claim_holders())
                availability.release_holders(availability.slot_holders("w:"))
                if handed:
                    log.warning("handed back %d emails held by a worker that stopped", handed)
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _wait_for_mail(self) -> None:
        """Sleep until new mail is announced (PostgreSQL) or the next poll; wake on stop."""
        deadline = time.monotonic() + self.idle_poll
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._listener is None:
                self.stop.wait(min(left, 0.25))
                continue
            # Short slices, so that a stop request is noticed quickly.
            for _ in self._listener.notifies(timeout=min(left, 0.5), stop_after=1):
                return

    def _upkeep(self) -> None:
        """Hand back what dead workers held, expire due emails, clear old archives."""
        now = time.monotonic()
        if now < self._next_upkeep:
            return
        self._next_upkeep = now + UPKEEP_EVERY
        if self.dialect == "postgresql":
            self._release_dead_workers()
        if queue.requeue_lapsed():
            log.warning("handed back emails whose worker's lease ran out")
        queue.expire_due()
        queue.cleanup_archive()

    def _release_dead_workers(self) -> None:
        holders = {h for h in queue.claim_holders() if h.startswith("pg:")}
        holders |= availability.slot_holders("pg:")
        if not holders:
            return
        with db.engine.connect() as conn:
            alive = {
                row.key
                for row in conn.execute(text(
                    "SELECT (classid::bigint << 32) | objid::bigint AS key FROM pg_locks "
                    "WHERE locktype = 'advisory' AND objsubid = 1 AND granted"
                ))
            }
        dead = [h for h in holders if int(h.split(":")[1]) not in alive]
        if dead:
            handed = queue.release_claims(dead)
            availability.release_holders(dead)
            log.warning("workers gone (%s): handed back %d emails", ", ".join(dead), handed)

    # -- one batch ---------------------------------------------------------------------
    def run_batch(self) -> BatchReport:
        """Claim one batch, send it, record every result in one transaction."""
        started = time.monotonic()
        values = settings.resolve_all(None)
        config = current_app.config
        lease = float(values["emails.sending_timeout"].value)
        claimed = queue.claim(self.id, int(values["emails.batch_size"].value), lease)
        report = BatchReport(claimed=len(claimed))
        if not claimed:
            db.session.remove()
            return report
        now = utcnow()
        window = float(values["emails.retry_window"].value)
        sites = self._sites({c.site_id for c in claimed})
        chains: dict[tuple[int | None, str], list[ChainEntry]] = {}
        archive_days: dict[int | None, int] = {}
        jobs: list[Job] = []
        outcomes: list[queue.Outcome] = []
        for email in claimed:
            if email.expires_at is not None and email.expires_at <= now:
                outcomes.append(queue.Outcome(email.id, "expired",
                                              last_result="expired before it could be sent"))
                continue
            if email.first_attempt_at is not None and (
                now - email.first_attempt_at
            ).total_seconds() > window:
                outcomes.append(queue.Outcome(email.id, "failed", last_result=(
                    f"automatic retries stop {window:.0f} s after the first attempt: "
                    "resend it to try again")))
                continue
            site = sites.get(email.site_id)
            chain_key = (email.site_id, email.envelope_sender)
            if chain_key not in chains:
                chains[chain_key] = chain_for(site, email.envelope_sender)
            if email.site_id not in archive_days:
                archive_days[email.site_id] = settings.get("emails.archive_days", site)
            message = OutgoingMessage(email.message_id, email.envelope_sender,
                                      tuple(email.recipients), email.raw, email.smtputf8)
            jobs.append(Job(message, chains[chain_key], ref=email))
        # End the read transaction: nothing stays open on the database while sending.
        db.session.remove()
        cooldown = float(values["emails.server_cooldown"].value)
        recorder = _Recorder(self.id, report, archive_days, cooldown, window)
        recorder.record(outcomes)
        slot_ttl = config["SMTPSITE_SEND_TIMEOUT"] + 60
        sender = Sender(
            busy_wait=config["SMTPSITE_BUSY_WAIT"],
            lease_ttl=slot_ttl,
            cooldown=cooldown,
            messages_per_connection=int(values["emails.messages_per_connection"].value),
            rate_wait=lease / 2,
            holder=self.id,
            stop=self.stop,
            heartbeat=lambda: queue.renew_claims(self.id, lease),
            on_progress=lambda: recorder.flush(jobs, final=False),
            beat_every=min(slot_ttl, lease) / 3,
            switches={name: values[name].value for name in SWITCHES},
        )
        sender.run(jobs)
        recorder.flush(jobs, final=True)
        report.seconds = time.monotonic() - started
        rate = report.sent / report.seconds if report.seconds else 0.0
        log.info(
            "batch: %d claimed, %d sent, %d failed, %d to retry, %d handed back, %d expired "
            "in %.2f s (%.0f sent/s)", report.claimed, report.sent, report.failed, report.retry,
            report.handed_back, report.expired, report.seconds, rate,
        )
        return report

    @staticmethod
    def _sites(site_ids: set[int | None]) -> dict[int | None, Site | None]:
        ids = [i for i in site_ids if i is not None]
        found: dict[int | None, Site | None] = {None: None}
        if ids:
            found.update({s.id: s for s in db.session.execute(
                select(Site).where(Site.id.in_(ids))).scalars()})
        return found


class _Recorder:
    """Records a batch's results as they come: at least every ``RECORD_EVERY`` seconds.

    Recording in one transaction per flush keeps the database work small; flushing often
    keeps small what a worker killed mid-batch leaves unrecorded (and so sends twice).
    """

    def __init__(self, worker: str, report: BatchReport, archive_days: dict[int | None, int],
                 cooldown: float, window: float) -> None:
        self.worker = worker
        self.report = report
        self.archive_days = archive_days
        self.cooldown = cooldown
        self.window = window
        self.done: set[int] = set()
        self.last = time.monotonic()

    def flush(self, jobs: list[Job], *, final: bool) -> None:
        """Record finished jobs (every job when ``final``) not recorded yet."""
        if not final and time.monotonic() - self.last < RECORD_EVERY:
            return
        ready = [j for j in jobs if j.ref.id not in self.done
                 and (final or j.status in ("sent", "failed", "uncertain"))]
        self.record([self.outcome(j) for j in ready])

    def record(self, outcomes: list[queue.Outcome]) -> None:
        """Write ``outcomes`` in one transaction and count them in the report."""
        self.last = time.monotonic()
        if not outcomes:
            return
        queue.finish(self.worker, outcomes)
        for outcome in outcomes:
            self.done.add(outcome.email_id)
            if outcome.status in ("sent", "deleted"):
                self.report.sent += 1
            elif outcome.status == "failed":
                self.report.failed += 1
            elif outcome.status == "expired":
                self.report.expired += 1
            elif outcome.attempts:
                self.report.retry += 1
            else:
                self.report.handed_back += 1

    def outcome(self, job: Job) -> queue.Outcome:
        """What to record for a job: archive, give up, retry later, or hand back."""
        email: queue.Claimed = job.ref
        if job.status == "sent":
            note = f"sent through {job.server}"
            if job.refused:
                note += "; refused: " + ", ".join(
                    f"{rcpt} ({code} {reply})" for rcpt, (code, reply) in job.refused.items())
            keep = self.archive_days[email.site_id] > 0
            return queue.Outcome(email.id, "sent" if keep else "deleted", job.attempts, note,
                                 sent_by=job.server)
        if job.status in ("failed", "uncertain"):
            return queue.Outcome(email.id, "failed", job.attempts, job.error)
        if job.status in ("busy", "stopped"):
            # Never tried: back to the queue as it was, for this or another worker.
            return queue.Outcome(email.id, "waiting")
        now = utcnow()
        first = email.first_attempt_at or (job.attempts[0].at if job.attempts else None)
        next_at = now + timedelta(seconds=backoff(first, now, self.cooldown))
        if first is not None and next_at > first + timedelta(seconds=self.window):
            return queue.Outcome(
                email.id, "failed", job.attempts,
                f"{job.error}; automatic retries stop {self.window:.0f} s after the first "
                "attempt: resend it to try again",
            )
        return queue.Outcome(email.id, "waiting", job.attempts, job.error, next_at)


def run_in_thread(app: Any, stop: threading.Event) -> threading.Thread:
    """Start a worker for ``app`` in a daemon thread (the run command's background worker)."""

    def target() -> None:
        with app.app_context():
            while not stop.is_set():
                try:
                    Worker(stop=stop).run()
                except Exception:
                    # Keep the background worker alive through a database hiccup.
                    log.exception("the background worker failed; restarting it in 5 s")
                    with suppress(Exception):
                        db.session.remove()
                    stop.wait(5)

    thread = threading.Thread(target=target, name="smtpsite-worker", daemon=True)
    thread.start()
    return thread
