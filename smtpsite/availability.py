"""Which servers are free, across every process: connection slots, cool-downs, rate limits.

All three live in the database, so a server's concurrency limit, a failed server's
cool-down and a server's rate limit hold for every web process and worker together, on
every machine.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from smtpsite import chain_cache
from smtpsite.extensions import db
from smtpsite.models import ServerHealth, ServerRate, ServerSlot, utcnow


@dataclass(frozen=True)
class Lease:
    """A held connection slot of a server; release it when the send is over."""

    server_key: str
    slot: int
    holder: str


def _insert(table):
    return (pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert)(table)


def try_acquire(
    server_key: str, max_connections: int, ttl: float, holder: str | None = None
) -> Lease | None:
    """Take a free slot of the server, or return None when all are held (the server is busy).

    A slot whose lease ran out (its holder died) counts as free. ``holder`` names the
    taker (a worker passes its own id, so that its slots can be freed if it dies).
    """
    holder = holder or uuid.uuid4().hex
    now = utcnow()
    slots = max(1, max_connections)
    with db.engine.begin() as conn:
        slot = _take_free_slot(conn, server_key, slots, holder, now, ttl)
        if slot is None:
            # No free slot: all are held, or their rows do not exist yet (the server's
            # first use, or a raised limit). Make the missing rows and look once more.
            conn.execute(
                _insert(ServerSlot.__table__)
                .values([{"server_key": server_key, "slot": n} for n in range(slots)])
                .on_conflict_do_nothing()
            )
            slot = _take_free_slot(conn, server_key, slots, holder, now, ttl)
    return None if slot is None else Lease(server_key, slot, holder)


_SLOTS = ServerSlot.__table__.c


def _take_free_slot(conn: Connection, server_key: str, slots: int, holder: str,
                    now: datetime, ttl: float) -> int | None:
    """Hold the lowest free slot below ``slots`` in one statement; its number, or None."""
    free = (
        select(_SLOTS.slot)
        .where(_SLOTS.server_key == server_key, _SLOTS.slot < slots,
               or_(_SLOTS.holder.is_(None), _SLOTS.expires_at < now))
        .order_by(_SLOTS.slot)
        .limit(1)
    )
    if conn.dialect.name == "postgresql":
        # Two takers never pick the same row: the second skips the one the first locked.
        # (SQLite runs the whole statement under its database write lock.)
        free = free.with_for_update(skip_locked=True)
    return conn.execute(
        update(ServerSlot.__table__)
        .where(_SLOTS.server_key == server_key, _SLOTS.slot == free.scalar_subquery())
        .values(holder=holder, expires_at=now + timedelta(seconds=ttl))
        .returning(_SLOTS.slot)
    ).scalar_one_or_none()


def renew(lease: Lease, ttl: float) -> bool:
    """Extend a held lease; False if it was lost (it ran out and someone else took it)."""
    with db.engine.begin() as conn:
        return (
            conn.execute(
                update(ServerSlot)
                .where(
                    ServerSlot.server_key == lease.server_key,
                    ServerSlot.slot == lease.slot,
                    ServerSlot.holder == lease.holder,
                )
                .values(expires_at=utcnow() + timedelta(seconds=ttl))
            ).rowcount
            == 1
        )


def release(lease: Lease) -> None:
    """Give the slot back (only if this lease still holds it)."""
    with db.engine.begin() as conn:
        conn.execute(
            update(ServerSlot)
            .where(
                ServerSlot.server_key == lease.server_key,
                ServerSlot.slot == lease.slot,
                ServerSlot.holder == lease.holder,
            )
            .values(holder=None, expires_at=None)
        )


def cooling_down(server_keys: Iterable[str]) -> set[str]:
    """The keys among ``server_keys`` whose cool-down after a failure has not ended."""
    keys = frozenset(server_keys)
    if not keys:
        return set()
    with db.engine.connect() as conn:
        # Cached until any cool-down changes (a token renewed by triggers, migration 0005);
        # an end of a cool-down needs no change: it is compared with the clock below.
        ends = chain_cache.cached_health(conn, ("cooldowns", keys), lambda: dict(conn.execute(
            select(ServerHealth.server_key, ServerHealth.cooldown_until).where(
                ServerHealth.server_key.in_(keys), ServerHealth.cooldown_until.is_not(None)
            )
        ).all()))
    now = utcnow()
    return {key for key, end in ends.items() if end > now}


def record_failure(server_key: str, error: str, cooldown_seconds: float) -> None:
    """Note that the server failed and start its cool-down."""
    now = utcnow()
    values = {
        "last_failure_at": now,
        "last_error": error[:2000],
        "cooldown_until": now + timedelta(seconds=cooldown_seconds),
    }
    with db.engine.begin() as conn:
        conn.execute(
            _insert(ServerHealth.__table__)
            .values(server_key=server_key, **values)
            .on_conflict_do_update(index_elements=["server_key"], set_=values)
        )


def release_holders(holders: Iterable[str]) -> int:
    """Free every slot held by ``holders`` (workers known to be dead); return how many."""
    names = list(holders)
    if not names:
        return 0
    with db.engine.begin() as conn:
        return conn.execute(
            update(ServerSlot).where(ServerSlot.holder.in_(names)).values(holder=None, expires_at=None)
        ).rowcount


def slot_holders(prefix: str) -> set[str]:
    """The holders of slots whose names start with ``prefix``."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(ServerSlot.holder).where(ServerSlot.holder.like(prefix + "%")).distinct()
        )
        return {row.holder for row in rows}


def reserve_rate(server_key: str, per_minute: int, max_wait: float | None = None) -> float | None:
    """Reserve the server's next sending turn under its rate limit; return when it starts.

    Turns are spaced ``60 / per_minute`` seconds apart for every process together: the
    reservation moves the shared "next free turn" forward in one atomic statement. The
    result is a ``time.time()`` value to wait for; ``None`` when the turn would come later
    than ``max_wait`` seconds from now (nothing is reserved then).
    """
    interval = 60.0 / per_minute
    now = time.time()
    table = ServerRate.__table__
    greatest = func.greatest if db.engine.dialect.name == "postgresql" else func.max
    stmt = _insert(table).values(server_key=server_key, next_at=now + interval)
    new_next = greatest(table.c.next_at, now) + interval
    where = None if max_wait is None else table.c.next_at <= now + max_wait
    stmt = stmt.on_conflict_do_update(
        index_elements=["server_key"], set_={"next_at": new_next}, where=where
    ).returning(table.c.next_at)
    with db.engine.begin() as conn:
        row = conn.execute(stmt).first()
    return None if row is None else row.next_at - interval
