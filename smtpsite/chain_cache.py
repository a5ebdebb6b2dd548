"""Per-process caches of settings and server chains, emptied when the configuration changes.

The ``config_version`` row holds a token that database triggers renew on every change to
sites, servers, server assignments and settings, made by any process (migration 0004).
Every lookup reads the token first (one indexed one-row read) and uses a cached value only
if it was filled under the same token, so a change is seen by the very next send anywhere.
Reading the token *before* the data is what keeps this safe: data read after the token can
only be newer than the token says, never older.

Cool-downs have a token of their own (``health_token``, migration 0005), so that a failing
server does not empty the caches of chains and settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from flask import current_app
from sqlalchemy import Connection

from smtpsite.extensions import db

T = TypeVar("T")
_UNSET: Any = object()
# The token pinned by ``snapshot()`` for the current thread or task.
_PINNED: ContextVar[Any] = ContextVar("smtpsite_config_token", default=_UNSET)
_TOKEN_SQL = "SELECT token FROM config_version WHERE id = 1"
_HEALTH_TOKEN_SQL = "SELECT health_token FROM config_version WHERE id = 1"
# Enough for every site of a large installation; beyond it the cache starts over.
MAX_ENTRIES = 20000


class ConfigCache:
    """Values filled under one configuration token; shared by the threads of a process."""

    def __init__(self) -> None:
        # (token, values), replaced as a whole so that a reader never mixes two tokens.
        self._state: tuple[int | None, dict[Hashable, Any]] = (None, {})
        self._lock = threading.Lock()

    def get(self, token: int | None, key: Hashable, load: Callable[[], T]) -> T:
        """The cached value of ``key`` under ``token``, else ``load()`` (kept under ``token``)."""
        held, values = self._state
        if token is not None and held == token and key in values:
            return values[key]
        value = load()
        if token is None:
            return value  # no token row (e.g. the table was emptied by hand): never cache
        with self._lock:
            held, values = self._state
            if held != token or len(values) >= MAX_ENTRIES:
                # Start over under this token. Were ours the older token, the next lookup
                # reads the newer one, finds no match and loads again: a value is only ever
                # used under the token it was read after.
                values = {}
                self._state = (token, values)
            values[key] = value
        return value

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._state = (None, {})


def cache(name: str = "config") -> ConfigCache:
    """The current app's cache called ``name`` (one per app: apps on other databases never mix)."""
    extensions = current_app.extensions
    key = f"smtpsite_{name}_cache"
    found = extensions.get(key)
    if found is None:
        found = extensions.setdefault(key, ConfigCache())
    return found


def _read_token(connection: Connection, sql: str) -> int | None:
    # The driver's cursor straight away: a result object costs more than the read itself.
    cursor = connection.connection.driver_connection.cursor()
    try:
        cursor.execute(sql)
        row = cursor.fetchone()
    finally:
        cursor.close()
    return row[0] if row else None


def current_token() -> int | None:
    """The configuration token, read through the session (so its own pending changes count)."""
    session = db.session()
    if session.new or session.deleted or session.dirty:
        session.flush()  # as autoflush would before a query: pending changes renew the token
    return _read_token(session.connection(), _TOKEN_SQL)


def cached_health(connection: Connection, key: Hashable, load: Callable[[], T]) -> T:
    """``load()``'s value for ``key``, cached until a cool-down changes.

    ``connection`` reads the token, and ``load`` must read its data through it too, so
    that both come from the same view of the database. Never pinned by ``snapshot()``: a
    failure recorded during a send is seen by that send's next round.
    """
    return cache("health").get(_read_token(connection, _HEALTH_TOKEN_SQL), key, load)


@contextmanager
def snapshot() -> Iterator[None]:
    """Read the token once for the block (one send): every lookup inside uses it.

    For code that changes no configuration inside the block; a change made elsewhere
    meanwhile is seen by the next block.
    """
    if _PINNED.get() is not _UNSET:
        yield
        return
    reset = _PINNED.set(current_token())
    try:
        yield
    finally:
        _PINNED.reset(reset)


def cached(key: Hashable, load: Callable[[], T]) -> T:
    """``load()``'s value for ``key``, cached until the configuration changes."""
    token = _PINNED.get()
    return cache().get(current_token() if token is _UNSET else token, key, load)
