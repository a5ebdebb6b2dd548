"""The admin server list with many servers, against the same page with few: time and queries."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event
from werkzeug.security import generate_password_hash

from bench.bench_routing import fill
from bench.harness import Row, alternate
from bench.setup import sqlite_app
from smtpsite.extensions import db
from smtpsite.models import User

EMAIL, PASSWORD = "root@example.com", "bench password"
URL = "/admin/server/"
_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|'
                    r'type="hidden" name="csrf_token" value="([^"]+)"')


@contextmanager
def _signed_in(folder: Path, sites: int, servers: int):
    """A test client signed in as a global administrator, on a database of its own."""
    with sqlite_app(folder) as app:
        app.config["WTF_CSRF_ENABLED"] = True
        with app.app_context():
            fill(sites, servers)
            db.session.add(User(email=EMAIL, active=True, is_global_admin=True,
                                password_hash=generate_password_hash(PASSWORD,
                                                                     method="scrypt:1024:8:1")))
            db.session.commit()
        client = app.test_client()
        page = client.get("/admin/login/").get_data(as_text=True)
        match = _TOKEN.search(page)
        token = match.group(1) or match.group(2)
        response = client.post("/admin/login/", data={"email": EMAIL, "password": PASSWORD,
                                                      "csrf_token": token})
        if response.status_code != 302:
            raise RuntimeError("the benchmark could not sign in")
        yield app, client


def _measure(app, client, requests: int) -> tuple[float, int]:
    """Median milliseconds per page, and SQL statements per page."""
    statements = 0

    def count(*_args) -> None:
        nonlocal statements
        statements += 1

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        times = []
        for _ in range(requests):
            statements = 0
            start = time.perf_counter()
            response = client.get(URL)
            times.append((time.perf_counter() - start) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{URL} answered {response.status_code}")
        per_page = statements
    finally:
        event.remove(engine, "before_cursor_execute", count)
    times.sort()
    return times[len(times) // 2], per_page


def run(folder: Path, sites: int, servers: int, few: int, requests: int, rounds: int,
        judge: bool) -> list[Row]:
    """The server list's time and query count with ``servers`` servers and with ``few``."""
    queries: dict[str, int] = {}
    with _signed_in(folder, sites, servers) as (big_app, big), \
            _signed_in(folder, sites, few) as (small_app, small):
        _measure(big_app, big, 1), _measure(small_app, small, 1)  # warm both up

        def page(name: str, app, client) -> float:
            ms, queries[name] = _measure(app, client, requests)
            return ms

        medians = alternate({"many": lambda: page("many", big_app, big),
                             "few": lambda: page("few", small_app, small)}, rounds)
    ratio_ok = medians["many"] <= 3 * medians["few"]
    same = queries["many"] == queries["few"]
    note = f"({queries['many']} vs {queries['few']} SQL statements per page)"
    return [Row(f"admin server list ({servers:,} servers, {sites:,} sites)", medians["many"], "ms",
                f"same page, {few} servers", medians["few"], "≤ 3×, same SQL count",
                (ratio_ok and same) if judge else None, note)]
