"""Connections kept open between emails sent at once: one pool per app and process.

A pooled connection keeps the server slot (``availability`` lease) it was opened under, so
open connections, idle or busy, never exceed a server's ``max_connections`` across every
process. It is keyed by the server key and a hash of its options, so a changed server
never reuses a connection opened with the old options. An idle connection is closed (and
its slot freed) after ``IDLE_TIMEOUT`` seconds, and checked with the plugin's ``is_alive``
(NOOP for SMTP) before reuse when it has been idle longer than ``ALIVE_CHECK_AFTER``. A
connection on which anything failed is closed, never put back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app

from smtpsite import availability, queue
from smtpsite.delivery import DeliveryMethod
from smtpsite.routing import ChainEntry
from smtpsite.secrets import Secret

log = logging.getLogger(__name__)
IDLE_TIMEOUT = 10.0  # default of SMTPSITE_POOL_IDLE_SECONDS
ALIVE_CHECK_AFTER = 1.0


def _options_hash(entry: ChainEntry) -> str:
    def plain(value: Any) -> Any:
        return value.reveal() if isinstance(value, Secret) else value

    text = json.dumps({k: plain(v) for k, v in entry.options.items()}, sort_keys=True, default=str)
    address = (entry.address.host, entry.address.port) if entry.address else None
    return hashlib.sha256(f"{entry.method}|{address}|{text}".encode()).hexdigest()


@dataclass
class Pooled:
    """One slot of a server, with the plugin (connection) opened under it, if any."""

    key: tuple[str, str]
    lease: availability.Lease
    lease_until: float  # time.monotonic() when the lease runs out
    plugin: DeliveryMethod | None = None
    opened: bool = False  # whether ``plugin`` holds an open connection
    sent: int = 0  # messages sent on the open connection
    last_used: float = field(default_factory=time.monotonic)


class ConnectionPool:
    """Idle connections per (server key, options hash); safe to share between threads."""

    def __init__(self, app: Flask, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.app = app
        self.idle_timeout = idle_timeout
        self.pid = os.getpid()
        self._idle: dict[tuple[str, str], list[Pooled]] = {}
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None

    def checkout(self, entry: ChainEntry, lease_ttl: float, holder: str | None) -> Pooled | None:
        """A slot of ``entry`` (with an open connection when one is idle); None when busy."""
        key = (entry.key, _options_hash(entry))
        while True:
            with self._lock:
                stack = self._idle.get(key)
                pooled = stack.pop() if stack else None
            if pooled is None:
                break
            if self._usable(pooled, lease_ttl):
                return pooled
        # Connections opened with the server's old options are stale: their slots go first.
        with self._lock:
            stale = [k for k in self._idle if k[0] == entry.key and k != key]
            old = [p for k in stale for p in self._idle.pop(k)]
        for pooled in old:
            self.discard(pooled)
        lease = availability.try_acquire(entry.key, entry.max_connections,
                                         lease_ttl + self.idle_timeout, holder)
        if lease is None:
            return None
        return Pooled(key, lease, time.monotonic() + lease_ttl + self.idle_timeout)

    def _usable(self, pooled: Pooled, lease_ttl: float) -> bool:
        """Whether an idle slot can serve one more send (renewing its lease if needed)."""
        now = time.monotonic()
        if now - pooled.last_used > self.idle_timeout:
            self.discard(pooled)
            return False
        if pooled.lease_until - now < lease_ttl:
            if not availability.renew(pooled.lease, lease_ttl + self.idle_timeout):
                # The lease ran out and another process took the slot: not ours to free.
                self._close(pooled)
                return False
            pooled.lease_until = now + lease_ttl + self.idle_timeout
        if pooled.opened and now - pooled.last_used > ALIVE_CHECK_AFTER:
            alive = getattr(pooled.plugin, "is_alive", None)
            if alive is not None and not alive():
                self._close(pooled)  # the slot stays ours: a new connection opens under it
        return True

    def checkin(self, pooled: Pooled) -> None:
        """Put a slot back after a send: kept while its connection is open, else freed."""
        if not pooled.opened:
            self.discard(pooled)
            return
        pooled.last_used = time.monotonic()
        with self._lock:
            self._idle.setdefault(pooled.key, []).append(pooled)
        self._start_reaper()

    def discard(self, pooled: Pooled) -> None:
        """Close the slot's connection and free the slot."""
        self._close(pooled)
        try:
            availability.release(pooled.lease)
        except Exception as exc:  # the lease runs out by itself
            log.warning("could not free the slot of %s (%s); its lease runs out", pooled.key[0],
                        type(exc).__name__)

    def close_all(self) -> None:
        """Close every idle connection and free its slot."""
        with self._lock:
            idle = [p for stack in self._idle.values() for p in stack]
            self._idle.clear()
        for pooled in idle:
            self.discard(pooled)

    def reap(self) -> None:
        """Close the connections idle longer than the idle timeout."""
        now = time.monotonic()
        expired = []
        with self._lock:
            for key, stack in list(self._idle.items()):
                keep = [p for p in stack if now - p.last_used <= self.idle_timeout]
                expired += [p for p in stack if now - p.last_used > self.idle_timeout]
                if keep:
                    self._idle[key] = keep
                else:
                    del self._idle[key]
        for pooled in expired:
            self.discard(pooled)

    @staticmethod
    def _close(pooled: Pooled) -> None:
        plugin, pooled.opened, pooled.sent = pooled.plugin, False, 0
        if plugin is not None:
            try:
                plugin.close()
            except Exception:
                log.exception("closing a pooled connection failed")

    def _start_reaper(self) -> None:
        if self._reaper is not None:
            return
        with self._lock:
            if self._reaper is not None:
                return
            self._reaper = threading.Thread(target=self._reap_loop, name="smtpsite-pool",
                                            daemon=True)
        self._reaper.start()

    def _reap_loop(self) -> None:
        # Runs while connections are idle; a later checkin starts it again.
        while True:
            time.sleep(min(self.idle_timeout / 2, 1.0))
            try:
                with self.app.app_context():
                    self.reap()
                    # Sends through pooled connections count their stats in a buffer: write
                    # it here too, so the last counts land once sending stops.
                    queue.flush_stats()
            except Exception:
                log.exception("the connection pool's clean-up failed")
            with self._lock:
                if not self._idle:
                    self._reaper = None
                    return


def idle_seconds() -> float:
    """``SMTPSITE_POOL_IDLE_SECONDS`` (0: no pooling; each send opens its own connection).

    Default ``IDLE_TIMEOUT``, except under ``TESTING``, where servers come and go with each
    test and a connection left open would outlive its server: tests that pool set it.
    """
    config = current_app.config
    default = 0.0 if config.get("TESTING") else IDLE_TIMEOUT
    return float(config.get("SMTPSITE_POOL_IDLE_SECONDS", default))


def pool() -> ConnectionPool:
    """The current app's pool in this process (a forked child starts its own)."""
    extensions = current_app.extensions
    found = extensions.get("smtpsite_pool")
    if found is None or found.pid != os.getpid():
        with _CREATE:
            found = extensions.get("smtpsite_pool")
            if found is None or found.pid != os.getpid():
                found = ConnectionPool(current_app._get_current_object(),
                                       idle_seconds() or IDLE_TIMEOUT)
                extensions["smtpsite_pool"] = found
    return found


_CREATE = threading.Lock()
