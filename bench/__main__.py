"""Run the benchmarks side by side with their baselines and print one table.

``python -m bench`` runs the full suite and appends the table to bench/RESULTS.md;
``python -m bench --quick`` runs small counts so CI notices when a benchmark breaks (its
figures are not judged).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
from pathlib import Path

from bench import bench_pickup, bench_queue, bench_routing, bench_send
from bench.harness import format_table
from bench.sink import Sink

RESULTS = Path(__file__).parent / "RESULTS.md"


def main(argv: list[str] | None = None) -> int:
    """Run the suite; exit 1 when a full run misses a target."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small counts; targets not judged")
    args = parser.parse_args(argv)
    quick = args.quick
    rounds = 1 if quick else 3
    rows = []
    with tempfile.TemporaryDirectory(prefix="smtpsite-bench-") as tmp:
        folder = Path(tmp)
        sink = Sink(prefer_postfix=not quick)
        try:
            rows += bench_send.run(folder, 50 if quick else 5000, rounds, sink)
        finally:
            sink.stop()
        rows += bench_queue.run(folder, 50 if quick else 20000, rounds)
        rows += bench_pickup.run(folder, 50 if quick else 5000, rounds)
        rows += bench_routing.run(folder, *((20, 200, 50) if quick else (1000, 10000, 2000)))
    table = format_table(rows)
    print(table)
    if quick:
        return 0
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, Python {platform.python_version()}, {platform.system()}"
    with RESULTS.open("a") as out:
        out.write(f"\n## {stamp} — {machine}\n\n{table}\n")
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
