"""Fixtures for the queue tests: queued mail, servers that note arrival times, worker processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask, current_app

from smtpsite import queue, send_mail, settings
from smtpsite.extensions import db
from smtpsite.messages import build_message
from smtpsite.models import SmtpServer
from smtpsite.servers import save_server
from smtpsite.worker import BatchReport, Worker
from tests.smtpd import Recorder, TestServer

ROOT = Path(__file__).resolve().parents[2]
MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


class TimedRecorder(Recorder):
    """A recorder that also notes when each message arrived (``time.monotonic()``)."""

    def __init__(self, behaviour=None) -> None:
        super().__init__(behaviour)
        self.arrivals: list[float] = []

    async def handle_DATA(self, server, session, envelope):
        self.arrivals.append(time.monotonic())
        return await super().handle_DATA(server, session, envelope)


def timed(server: TestServer) -> TestServer:
    """Give a not yet started server a recorder that notes arrival times."""
    server.recorder = TimedRecorder(server.recorder.behaviour)
    server.controller.handler = server.recorder
    return server


def received_ids(*servers: TestServer) -> list[str]:
    """The Message-IDs of every message the servers received (duplicates kept)."""
    ids = []
    for server in servers:
        for message in list(server.messages):
            found = MESSAGE_ID.search(message.data)
            assert found, message.data[:200]
            ids.append(found.group(1).decode())
    return ids


@pytest.fixture
def qapp(any_app: Flask) -> Flask:
    """An app (SQLite, then PostgreSQL) with the queue on and short waits."""
    return _prepare(any_app)


@pytest.fixture
def pg_qapp(pg_app: Flask) -> Flask:
    """A PostgreSQL app with the queue on and short waits."""
    return _prepare(pg_app)


@pytest.fixture
def sqlite_qapp(app: Flask) -> Flask:
    """A SQLite app with the queue on and short waits."""
    return _prepare(app)


def _prepare(app: Flask) -> Flask:
    settings.set_value("emails.queue_enabled", True)
    settings.set_value("emails.server_cooldown", 1)
    settings.set_value("emails.sending_timeout", 30)
    db.session.commit()
    app.config["SMTPSITE_BUSY_WAIT"] = 1.0
    return app


def add_server(server: TestServer | str, *, sites=(), priority: str = "normal",
               max_connections: int = 1, rate_limit: int | None = None) -> SmtpServer:
    """A network server record for a test server (global unless sites are given)."""
    name = server if isinstance(server, str) else server.server_name
    record = save_server(None, server_name=name, method="network",
                         options={"security": "none", "timeout": 5}, priority=priority,
                         is_global=not sites, sites=list(sites),
                         max_connections=max_connections, rate_limit=rate_limit)
    db.session.commit()
    return record


def queue_mail(count: int, site=None, **kwargs) -> list[str]:
    """Queue ``count`` emails; return their Message-IDs in order."""
    ids = []
    for n in range(count):
        result = send_mail(site, to=[f"user{n}@example.com"], subject=f"n{n}", text="hello",
                           queue=True, **kwargs)
        assert result.status == "queued", result
        ids.append(result.message_id)
    return ids


def bulk_queue(count: int) -> list[str]:
    """Queue ``count`` global emails in one transaction (quicker than ``send_mail`` per email)."""
    emails = [
        queue.new_email(build_message(sender="shop@example.com", to=[f"user{n}@example.com"],
                                      subject=f"n{n}", text="hello"), None)
        for n in range(count)
    ]
    db.session.add_all(emails)
    db.session.commit()
    ids = [e.message_id for e in emails]
    db.session.remove()
    return ids


def drain(**kwargs) -> BatchReport:
    """Run one worker in this process until nothing is due."""
    report = Worker(once=True, **kwargs).run()
    db.session.remove()
    return report


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


class WorkerProcess:
    """A real ``flask smtpsite worker`` process on the test's database."""

    def __init__(self, popen: subprocess.Popen, log: Path) -> None:
        self.popen = popen
        self.log = log

    def output(self) -> str:
        """What the process logged so far."""
        return self.log.read_text(errors="replace")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker (or other CLI) processes against the current app's database."""
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        config = current_app.config
        environ = {
            **os.environ,
            "SMTPSITE_DATABASE_URL": config["SMTPSITE_DATABASE_URL"],
            "SMTPSITE_SECRET_KEYS": config["SMTPSITE_SECRET_KEYS"],
            "SMTPSITE_FLASK_SECRET_KEY": "queue-tests",
            "SMTPSITE_BUSY_WAIT": str(config["SMTPSITE_BUSY_WAIT"]),
            "SMTPSITE_SEND_TIMEOUT": "10",
            **(env or {}),
        }
        log = tmp_path / f"process-{len(started)}.log"
        handle = open(log, "wb")  # noqa: SIM115 - the process writes to it until it ends
        command = args or ("worker", "--idle-poll", "0.3")
        popen = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", "smtpsite", *command],
            cwd=ROOT, env=environ, stdout=handle, stderr=subprocess.STDOUT,
        )
        handle.close()
        process = WorkerProcess(popen, log)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
            try:
                process.popen.wait(15)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
