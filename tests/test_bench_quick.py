"""The benchmark suite's quick mode runs in CI, so no benchmark silently rots."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmarks_run_every_row():
    done = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    names = "\n".join(table)
    for row in ("send_mail at once", "worker draining", "queueing", "pickup",
                "choosing the server", "admin server list", "peak RSS"):
        assert row in names, f"the quick run printed no {row!r} row:\n{done.stdout}"
