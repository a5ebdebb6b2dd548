"""Fixtures for operations: a webhook receiver, worker threads, servers and the admin panel."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from flask import Flask

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.models import SmtpServer
from smtpsite.servers import save_server
from smtpsite.worker import Worker
from tests.admin.conftest import alice, panel, password_hash, root, world  # noqa: F401
from tests.smtpd import TestServer


class Webhook:
    """A local HTTP server that keeps the JSON bodies POSTed to it."""

    def __init__(self, status: int = 204) -> None:
        self.calls: list[dict] = []
        self.paths: list[str] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.paths.append(self.path)
                outer.calls.append(json.loads(self.rfile.read(length)))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/s3cr3t-token-123"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[str]:
        """The event names received, in order."""
        return [call["event"] for call in self.calls]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A webhook receiver on 127.0.0.1."""
    hook = Webhook()
    yield hook
    hook.close()


def add_server(server: TestServer | str, *, priority: str = "normal", enabled: bool = True,
               sites=()) -> SmtpServer:
    """A global (or per-site) network server record for a test server."""
    name = server if isinstance(server, str) else server.server_name
    record = save_server(None, server_name=name, method="network",
                         options={"security": "none", "timeout": 5}, priority=priority,
                         enabled=enabled, is_global=not sites, sites=list(sites))
    db.session.commit()
    return record


def configure(**values) -> None:
    """Set global settings and commit."""
    for key, value in values.items():
        settings.set_value(key.replace("__", "."), value)
    db.session.commit()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


class WorkerThread:
    """A real queue worker (with its health monitor) running in a thread of this process."""

    def __init__(self, app: Flask) -> None:
        self.stop = threading.Event()
        self.worker_id: str | None = None
        self.error: BaseException | None = None

        def run() -> None:
            with app.app_context():
                try:
                    worker = Worker(stop=self.stop, idle_poll=0.2)
                    self.worker_id = worker.id
                    worker.run()
                except BaseException as exc:  # shown by the test
                    self.error = exc
                finally:
                    db.session.remove()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the worker did not stop"
        assert self.error is None, repr(self.error)


@pytest.fixture
def fast(any_app: Flask) -> Flask:
    """An app (SQLite, then PostgreSQL) whose workers beat and look for alerts quickly."""
    return _fast(any_app)


@pytest.fixture
def sqlite_fast(app: Flask) -> Flask:
    """A SQLite app whose workers beat and look for alerts quickly."""
    return _fast(app)


def _fast(app: Flask) -> Flask:
    app.config.update(SMTPSITE_HEARTBEAT_SECONDS=0.1, SMTPSITE_ALERT_EVERY=0.2,
                      SMTPSITE_BUSY_WAIT=1.0)
    return app


@pytest.fixture
def start_worker(request) -> Iterator[Callable[[Flask], WorkerThread]]:
    """Start worker threads in a test; they are stopped at its end."""
    started: list[WorkerThread] = []

    def start(app: Flask) -> WorkerThread:
        worker = WorkerThread(app)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop.set()
    for worker in started:
        worker.thread.join(30)
