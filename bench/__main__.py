"""Run the benchmarks side by side with their baselines and print one table.

``python -m bench`` runs the full suite and appends the table to bench/RESULTS.md;
``python -m bench --quick`` runs small counts so CI notices when a benchmark breaks (its
figures are not judged).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine

from bench import bench_admin, bench_pickup, bench_queue, bench_routing, bench_send, bench_worker
from bench.harness import Row, format_table
from bench.setup import postgres_app, sqlite_app
from bench.sink import Sink

RESULTS = Path(__file__).parent / "RESULTS.md"


PG_ENV = "SMTPSITE_BENCH_DATABASE_URL"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# Full-mode counts (the issue's); quick mode uses the small ones beside them.
FULL = {"send": 5000, "queue": 20000, "pickup": 5000, "routing": (1000, 10000, 2000),
        "drain": 20000, "scaling": 40000, "memory": 10000, "admin": (1000, 10000, 10, 15)}
QUICK = {"send": 50, "queue": 50, "pickup": 50, "routing": (20, 200, 50),
         "drain": 200, "scaling": 400, "memory": 30, "admin": (20, 200, 10, 3)}


def _postgres_reachable(url: str) -> str | None:
    """None when a database answers at ``url``, else why not."""
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # any failure means: no PostgreSQL here
        return str(exc).splitlines()[0][:120]
    return None


def _postgres_rows(folder: Path, counts: dict, rounds: int, quick: bool) -> list[Row]:
    url = os.environ.get(PG_ENV, PG_DEFAULT)
    problem = _postgres_reachable(url)
    if problem is not None:
        if not quick:
            raise SystemExit(f"PostgreSQL is needed for the full run ({PG_ENV}): {problem}")
        return [Row("PostgreSQL rows (worker drain, 4 workers, memory)", 0, "", target="—",
                    note=f"skipped: no PostgreSQL reachable ({problem})")]
    rows = []
    sinks = [Sink(prefer_postfix=not quick) for _ in range(4)]
    try:
        with postgres_app(url, folder) as app:
            rows += bench_worker.drain(app, "PostgreSQL", counts["drain"], rounds, sinks[0],
                                       not quick)
        with postgres_app(url, folder) as app:
            database_url = app.config["SMTPSITE_DATABASE_URL"]
            rows += bench_worker.scaling(app, database_url, folder, counts["scaling"],
                                         rounds, sinks, not quick)
        with postgres_app(url, folder) as app:
            database_url = app.config["SMTPSITE_DATABASE_URL"]
            rows += bench_worker.memory(app, database_url, folder, counts["memory"], sinks[0],
                                        not quick)
    finally:
        for sink in sinks:
            sink.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the suite; exit 1 when a full run misses a target."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small counts; targets not judged")
    args = parser.parse_args(argv)
    quick = args.quick
    counts = QUICK if quick else FULL
    rounds = 1 if quick else 3
    logging.disable(logging.INFO)  # the worker's per-batch lines would bury the table
    started = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="smtpsite-bench-") as tmp:
        folder = Path(tmp)
        sink = Sink(prefer_postfix=not quick)
        try:
            rows += bench_send.run(folder, counts["send"], rounds, sink)
            with sqlite_app(folder) as app:
                rows += bench_worker.drain(app, "SQLite", counts["drain"], rounds, sink,
                                           not quick)
        finally:
            sink.stop()
        rows += _postgres_rows(folder, counts, rounds, quick)
        rows += bench_queue.run(folder, counts["queue"], rounds)
        rows += bench_pickup.run(folder, counts["pickup"], rounds)
        rows += bench_routing.run(folder, *counts["routing"])
        rows += bench_admin.run(folder, *counts["admin"], rounds, not quick)
    if quick:
        for row in rows:  # small counts say nothing about the targets
            row.passed = None
    table = format_table(rows)
    minutes = (time.monotonic() - started) / 60
    print(table)
    print(f"\n({'quick' if quick else 'full'} run, {minutes:.1f} min)")
    if quick:
        return 0
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
               f"{platform.system()}")
    with RESULTS.open("a") as out:
        out.write(f"\n## {stamp} — {machine} ({minutes:.0f} min)\n\n{table}\n")
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
