"""The failover rules shared by the send helper and the workers: which server, and what next.

One set of rules, for one email sent at once and for a worker's batch alike:

- servers are taken in chain order, servers this email has not tried yet first, passing
  over servers cooling down after a failure and servers whose slots are all held (busy);
- a failure before the server accepted the data moves the email to another server (at
  most ``max_attempts`` attempts per round) and starts the failed server's cool-down;
- a permanent rejection (5xx for every recipient) stops;
- a failure after the final "." stops as *uncertain*: the server may have delivered the
  email, so it is never sent again automatically.

A batch reuses one connection per server, reopened after ``messages_per_connection``
messages, holds the server's slot while it sends (renewing the lease), and takes each
message's turn under the server's rate limit, shared by every process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from smtpsite import availability
from smtpsite.delivery import DeliveryError, DeliveryMethod, OptionsError, OutgoingMessage
from smtpsite.models import utcnow
from smtpsite.pool import ConnectionPool, Pooled
from smtpsite.queue import Attempt
from smtpsite.routing import ChainEntry

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
# Called after each message a server took or failed: ``hook(entry, job, seconds, ok)``.
# The metrics (send latency) and the alerts (fallback rescues) listen; errors are logged.
SEND_HOOKS: list[Callable[[ChainEntry, Job, float, bool], None]] = []
# The staging switches (global settings): simulate sending, or fail every send.
SWITCHES = ("emails.simulate", "emails.fail_all")
# emails.fail_all: the reply every send gets (a temporary failure, so emails wait and retry).
FAIL_ALL_MESSAGE = "emails.fail_all is on: every send fails (a rehearsal)"


@dataclass
class Job:
    """One email going through the failover rules, and what became of it.

    ``status`` ends as one of: ``sent``; ``failed`` (rejected for good); ``uncertain``
    (broken after the whole message was sent); ``deferred`` (failed for now: retry later);
    ``busy`` (never tried: every usable server was busy); ``stopped`` (never tried: the
    sender was asked to stop).
    """

    message: OutgoingMessage
    chain: Sequence[ChainEntry]
    ref: Any = None  # the caller's handle, e.g. the queue row id
    status: str = "pending"
    attempts: list[Attempt] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    server: str | None = None
    error: str | None = None
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)

    def finish(self, status: str, error: str | None = None) -> None:
        """Set the final status (and the reason when it did not go out)."""
        self.status = status
        self.error = error


def make_plugin(entry: ChainEntry) -> DeliveryMethod:
    """An instance of the entry's delivery plugin, with its options checked."""
    state = current_app.extensions["smtpsite"]
    cls = state.registry.get(entry.method)
    options = cls.clean_options(entry.options, state.plugin_context)
    return cls(entry.address, options, state.plugin_context)


def _attempt(entry: ChainEntry, outcome: str, code: int | None, message: str) -> Attempt:
    return Attempt(entry.name, entry.key, outcome, code, message, utcnow())


def _simulate(jobs: Sequence[Job]) -> None:
    """emails.simulate: nothing leaves; every job is recorded as sent by a pseudo server."""
    for job in jobs:
        if job.status == "pending":
            job.attempts.append(Attempt("(simulated)", "simulated", "sent", None,
                                        "simulated: emails.simulate is on, nothing was sent",
                                        utcnow()))
            job.server = "(simulated)"
            job.finish("sent")


def _run_hooks(entry: ChainEntry, job: Job, seconds: float, ok: bool) -> None:
    for hook in SEND_HOOKS:
        try:
            hook(entry, job, seconds, ok)
        except Exception:  # an observer must never break a send
            log.exception("send hook %s failed", getattr(hook, "__name__", hook))


class Sender:
    """Runs jobs through their chains under the failover rules (see the module docstring)."""

    def __init__(
        self,
        *,
        switches: Mapping[str, Any],
        busy_wait: float,
        lease_ttl: float,
        cooldown: float,
        max_attempts: int = MAX_ATTEMPTS,
        messages_per_connection: int = 50,
        rate_wait: float | None = None,
        holder: str | None = None,
        stop: threading.Event | None = None,
        heartbeat: Callable[[], None] | None = None,
        on_progress: Callable[[], None] | None = None,
        beat_every: float | None = None,
        pool: ConnectionPool | None = None,
    ) -> None:
        self.busy_wait = busy_wait
        self.lease_ttl = lease_ttl
        self.cooldown = cooldown
        self.max_attempts = max_attempts
        self.messages_per_connection = max(1, messages_per_connection)
        self.rate_wait = busy_wait if rate_wait is None else rate_wait
        self.holder = holder
        self.stop = stop or threading.Event()
        self.heartbeat = heartbeat
        # Called after every message, so the caller can record finished jobs as it goes.
        self.on_progress = on_progress
        self._failures: dict[str, str] = {}  # server key -> last failure, for the reasons
        # Renew the slot lease (and the caller's claims) this often during a long batch.
        self.beat_every = beat_every or lease_ttl / 3
        self._next_beat = time.monotonic() + self.beat_every
        # Immediate sends keep connections (and their slots) open between calls.
        self.pool = pool
        # The values of SWITCHES, read by the caller with the rest of its settings.
        self.simulate = bool(switches["emails.simulate"])
        self.fail_all = bool(switches["emails.fail_all"])

    # -- the rounds ----------------------------------------------------------------------
    def run(self, jobs: Sequence[Job]) -> None:
        """Send every job it can; each ends with its final status (see :class:`Job`)."""
        if self.simulate:
            _simulate(jobs)
            return
        busy: set[str] = set()
        deadline = time.monotonic() + self.busy_wait
        pause = 0.02
        while True:
            pending = [j for j in jobs if j.status == "pending"]
            if not pending:
                return
            if self.stop.is_set():
                for job in pending:
                    job.finish("stopped" if not job.attempts else "deferred", self._last_error(job))
                return
            cooling = availability.cooling_down({e.key for j in pending for e in j.chain})
            groups: dict[str, tuple[ChainEntry, list[Job]]] = {}
            for job in pending:
                entry = self._pick(job, cooling, busy)
                if entry is not None:
                    groups.setdefault(entry.key, (entry, []))[1].append(job)
            if not groups:
                if not any(j.status == "pending" for j in jobs):
                    return
                # Everything left waits for a busy server.
                if time.monotonic() >= deadline:
                    self._give_up_busy(jobs)
                    return
                self.stop.wait(pause)
                pause = min(pause * 2, 0.5)
                busy.clear()
                continue
            for entry, group in groups.values():
                if self.pool is not None:
                    pooled = self.pool.checkout(entry, self.lease_ttl, self.holder)
                    lease = pooled.lease if pooled is not None else None
                else:
                    pooled = None
                    lease = availability.try_acquire(
                        entry.key, entry.max_connections, self.lease_ttl, self.holder
                    )
                if lease is None:
                    busy.add(entry.key)
                    continue
                try:
                    if not self._send_group(entry, group, lease, pooled):
                        busy.add(entry.key)  # its rate limit has no turn free soon enough
                finally:
                    if pooled is not None:
                        self.pool.checkin(pooled)
                    else:
                        availability.release(lease)
                deadline = time.monotonic() + self.busy_wait
                pause = 0.02

    def _pick(self, job: Job, cooling: set[str], busy: set[str]) -> ChainEntry | None:
        """The server to try next for ``job``, or None (then the job is decided or waits)."""
        if not job.chain:
            job.finish("deferred", "no server is configured for this site")
            return None
        if len(job.attempts) >= self.max_attempts:
            job.finish("deferred", self._last_error(job))
            return None
        candidates = [e for e in job.chain if e.key not in cooling]
        if not candidates:
            reason = self._last_error(job) or self._cooling_reason(job)
            job.finish("deferred", reason)
            return None
        # Servers not tried yet first, each group in chain order (the sort is stable).
        candidates.sort(key=lambda e: e.key in job.tried)
        for entry in candidates:
            if entry.key not in busy:
                return entry
        return None

    def _give_up_busy(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            if job.status != "pending":
                continue
            if job.attempts:
                job.finish("deferred", self._last_error(job))
            else:
                job.finish("busy", "every server is busy; the email was queued")

    def _cooling_reason(self, job: Job) -> str:
        reasons = [f"{e.name}: {self._failures[e.key]}" for e in job.chain if e.key in self._failures]
        if reasons:
            return "every server is cooling down after a failure (" + "; ".join(reasons) + ")"
        return "every server is cooling down after a failure"

    @staticmethod
    def _last_error(job: Job) -> str | None:
        if not job.attempts:
            return None
        last = job.attempts[-1]
        return f"{last.server}: {last.message}"

    # -- one connection --------------------------------------------------------------------
    def _send_group(self, entry: ChainEntry, group: list[Job], lease: availability.Lease,
                    pooled: Pooled | None = None) -> bool:
        """Send ``group`` through ``entry`` over one connection (reopened every N messages).

        Stops at the first failure that makes the server unfit (it then cools down); the
        jobs not reached stay pending for another server. Returns False when the server's
        rate limit gave no turn soon enough (the rest stay pending). With ``pooled``, the
        connection is taken from it and left open in it when every send went well.
        """
        if self.fail_all:
            for job in group:
                job.tried.add(entry.key)
                job.attempts.append(_attempt(entry, "failed", 451, FAIL_ALL_MESSAGE))
            self._cool(entry, FAIL_ALL_MESSAGE)
            return True
        try:
            plugin = pooled.plugin if pooled and pooled.plugin else make_plugin(entry)
        except (OptionsError, LookupError) as exc:
            self._failed_server(entry, group[0], None, f"server misconfigured: {exc}")
            return True
        is_open = pooled.opened if pooled is not None else False
        on_connection = pooled.sent if pooled is not None else 0
        keep = False
        try:
            for job in group:
                if self.stop.is_set():
                    return True
                self._beat(lease)
                if entry.rate_limit and not self._wait_turn(entry):
                    return False
                if self.stop.is_set():
                    return True
                if is_open and on_connection >= self.messages_per_connection:
                    self._close(plugin, entry)
                    is_open, on_connection = False, 0
                if not is_open:
                    try:
                        plugin.open()
                    except DeliveryError as exc:
                        self._failed_server(entry, job, exc.code, exc.message)
                        return True
                    except Exception as exc:  # a plugin bug before anything was sent
                        log.exception("delivery plugin %s failed to open a connection", entry.method)
                        self._failed_server(entry, job, None, f"{type(exc).__name__}: {exc}")
                        return True
                    is_open = True
                fit = self._send_one(plugin, entry, job)
                if self.on_progress is not None:
                    self.on_progress()
                if not fit:
                    self._close(plugin, entry)
                    is_open = False
                    return True
                on_connection += 1
            keep = pooled is not None  # every send went well: the connection stays open
        finally:
            if pooled is not None:
                pooled.plugin, pooled.opened, pooled.sent = plugin, is_open and keep, on_connection
            if is_open and not keep:
                self._close(plugin, entry)
        return True

    def _send_one(self, plugin: DeliveryMethod, entry: ChainEntry, job: Job) -> bool:
        """Send one message on the open connection; False when the server became unfit."""
        job.tried.add(entry.key)
        started = time.monotonic()
        try:
            [result] = plugin.send_messages([job.message])
        except Exception as exc:
            # We cannot tell how far it got: treat it as possibly delivered, never resend.
            log.exception("delivery plugin %s raised while sending", entry.method)
            error = DeliveryError(f"{type(exc).__name__}: {exc}", after_data=True)
        else:
            if result.ok:
                job.attempts.append(_attempt(entry, "sent", result.code, result.reply))
                job.server, job.refused = entry.name, dict(result.refused)
                job.finish("sent")
                _run_hooks(entry, job, time.monotonic() - started, True)
                return True
            error = result.error or DeliveryError("the plugin reported a failure without a reason")
        _run_hooks(entry, job, time.monotonic() - started, False)
        if error.after_data:
            job.attempts.append(_attempt(entry, "uncertain", error.code, error.message))
            job.server = entry.name
            job.finish("uncertain", f"{error.message} (after the message was sent: it may have "
                       "been delivered, so it is not sent again automatically)")
            self._cool(entry, error.message)
            return False
        job.attempts.append(_attempt(entry, "failed", error.code, error.message))
        if error.permanent:
            job.finish("failed", error.message)
            return True
        self._cool(entry, error.message)
        return False

    def _failed_server(self, entry: ChainEntry, job: Job, code: int | None, message: str) -> None:
        """The server could not even take a connection: one attempt for ``job``, cool-down."""
        job.tried.add(entry.key)
        job.attempts.append(_attempt(entry, "failed", code, message))
        self._cool(entry, message)

    def _cool(self, entry: ChainEntry, message: str) -> None:
        self._failures[entry.key] = message
        availability.record_failure(entry.key, message, self.cooldown)

    def _close(self, plugin: DeliveryMethod, entry: ChainEntry) -> None:
        try:
            plugin.close()
        except Exception:
            log.exception("delivery plugin %s failed to close its connection", entry.method)

    def _wait_turn(self, entry: ChainEntry) -> bool:
        """Wait for this message's turn under the server's rate limit; False if too far off."""
        start = availability.reserve_rate(entry.key, entry.rate_limit, self.rate_wait)
        if start is None:
            return False
        delay = start - time.time()
        if delay > 0:
            self.stop.wait(delay)
        return True

    def _beat(self, lease: availability.Lease) -> None:
        """Keep the slot (and the caller's claims) alive during a long batch."""
        if time.monotonic() < self._next_beat:
            return
        self._next_beat = time.monotonic() + self.beat_every
        availability.renew(lease, self.lease_ttl)
        if self.heartbeat is not None:
            self.heartbeat()
