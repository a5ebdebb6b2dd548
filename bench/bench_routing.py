"""Choosing the server for a message with many sites and servers."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from sqlalchemy import insert, update

from bench.harness import Row
from bench.setup import sqlite_app
from smtpsite.extensions import db
from smtpsite.models import Site, SmtpServer, server_sites
from smtpsite.routing import chain_for
from smtpsite.sites import find_site


def fill(sites: int, servers: int) -> None:
    """``sites`` sites and ``servers`` servers (every 100th global, the rest on one site each)."""
    with db.engine.begin() as conn:
        conn.execute(insert(Site), [
            {"code_name": f"site{n}", "code_key": f"site{n}", "display_name": f"Site {n}",
             "domains": []} for n in range(sites)])
        conn.execute(insert(SmtpServer), [
            {"server_name": f"smtp{n}.example.com", "priority": ("high", "normal", "low")[n % 3],
             "enabled": True, "method": "network", "options": {"security": "none"},
             "is_global": n % 100 == 0, "max_connections": 1} for n in range(servers)])
        conn.execute(insert(server_sites), [
            {"server_id": n + 1, "site_id": (n % sites) + 1}
            for n in range(servers) if n % 100 != 0])


def run(folder: Path, sites: int, servers: int, lookups: int, judge: bool = True) -> list[Row]:
    """Median microseconds per chain lookup after the first call; a change must show at once."""
    with sqlite_app(folder) as app, app.app_context():
        fill(sites, servers)
        site = find_site("site7")
        first = chain_for(site, "shop@example.com")
        samples = []
        for _ in range(lookups):
            start = time.perf_counter()
            chain_for(site, "shop@example.com")
            samples.append((time.perf_counter() - start) * 1e6)
        # A change made by another connection must be seen by the very next lookup.
        with db.engine.begin() as conn:
            conn.execute(update(SmtpServer).where(SmtpServer.id == first[0].server_id)
                         .values(enabled=False))
        seen = first[0].key not in {e.key for e in chain_for(site, "shop@example.com")}
    median = statistics.median(samples)
    note = "" if seen else "(a change was NOT seen by the next lookup)"
    return [Row(f"choosing the server ({sites:,} sites, {servers:,} servers)", median, "µs",
                target="< 50 µs; change seen next", passed=(median < 50 and seen) if judge else None,
                note=note)]
