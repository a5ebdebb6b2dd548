"""A real worker process for the benchmarks: says "ready", waits for "go", drains, reports.

It prints ``done <peak RSS in KB>`` (``resource.getrusage``) when the queue is empty.
"""

from __future__ import annotations

import logging
import resource
import sys

from smtpsite import create_app
from smtpsite.extensions import db
from smtpsite.worker import Worker

if __name__ == "__main__":
    logging.disable(logging.INFO)
    app = create_app()
    with app.app_context():
        db.session.execute(db.select(1))  # connect before the start signal
        db.session.remove()
        print("ready", flush=True)
        sys.stdin.readline()
        Worker(once=True, idle_poll=0.1).run()
        db.engine.dispose()
    print(f"done {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", flush=True)
