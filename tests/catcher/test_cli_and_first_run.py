"""``smtpsite catcher`` in a real process, and the demo site of the first run."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from smtpsite import routing, settings
from smtpsite.catcher import Catcher, start_in_background
from smtpsite.config import from_environment
from smtpsite.extensions import db
from smtpsite.models import CapturedMessage, Setting, Site
from smtpsite.sending import send_mail
from smtpsite.sites import create_site, find_site
from tests.conftest import make_app
from tests.smtpd import HOST, free_port

PROJECT = Path(__file__).resolve().parents[2]


def cli_env(app: Flask, **extra: str) -> dict[str, str]:
    """The environment of a ``flask --app app`` process on ``app``'s database and key."""
    return {**os.environ, "SMTPSITE_DATABASE_URL": app.config["SMTPSITE_DATABASE_URL"],
            "SMTPSITE_SECRET_KEYS": app.config["SMTPSITE_SECRET_KEYS"],
            "SMTPSITE_FLASK_SECRET_KEY": "test-only-session-key", **extra}


def wait_for_port(port: int, process: subprocess.Popen, limit: float = 20.0) -> None:
    """Wait until something accepts connections on ``port`` (or the process ended)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}: {process.poll()=}")


def test_catcher_command_runs_alone_until_sigterm(app, tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "flask", "--app", "app", "smtpsite", "catcher", "--port",
               str(port)]
    process = subprocess.Popen(command, cwd=PROJECT, env=cli_env(app), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, process)
        with smtplib.SMTP(HOST, port, timeout=10) as smtp:
            smtp.sendmail("cli@example.com", ["reader@example.com"],
                          b"Subject: from the CLI test\r\n\r\nhello\r\n")
        # A second catcher on the same port says why it cannot start.
        busy = app.test_cli_runner().invoke(args=["smtpsite", "catcher", "--port", str(port)])
        assert busy.exit_code == 1
        assert f"cannot listen on 127.0.0.1:{port}" in busy.output
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"mail catcher listening on 127.0.0.1:{port}" in output
    assert "mail catcher stopped" in output
    [message] = db.session.execute(select(CapturedMessage)).scalars()
    assert message.subject == "from the CLI test"
    assert message.rcpt_tos == ["reader@example.com"]


def test_serve_goes_on_without_a_catcher_that_cannot_start(app, caplog):
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        app.config["SMTPSITE_CATCHER_PORT"] = taken.getsockname()[1]
        assert start_in_background(app) is None
    assert "cannot listen on 127.0.0.1:" in caplog.text and "SMTPSITE_CATCHER_PORT" in caplog.text
    app.config["SMTPSITE_CATCHER_ENABLED"] = False
    assert start_in_background(app) is None


def _state() -> tuple[list, list]:
    db.session.rollback()
    sites = [(s.id, s.code_name, s.display_name) for s in db.session.execute(select(Site)).scalars()]
    rows = [(r.site_id, r.key, r.value) for r in db.session.execute(
        select(Setting).order_by(Setting.id)).scalars()]
    return sites, rows


def test_the_first_run_creates_a_demo_site_once(tmp_path):
    port = free_port()
    app = make_app(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path, SMTPSITE_CATCHER_PORT=port)
    runner = app.test_cli_runner()
    first = runner.invoke(args=["smtpsite", "init"])
    assert first.exit_code == 0, first.output
    assert "Created the site 'demo'" in first.output
    password = re.search(r"password: (\S+)", first.output)
    assert password
    with app.app_context():
        demo = find_site("demo")
        assert demo.display_name == "Demo site"
        assert settings.get("emails.smtp_server", demo) == f"127.0.0.1:{port}"
        assert settings.get("emails.smtp_security", demo) == "none"
        assert settings.get("emails.smtp_auth", demo) == "none"
        # The catcher is the first server of the demo site's chain.
        assert routing.chain_for(demo)[0].name == f"127.0.0.1:{port}"
        before = _state()

    second = runner.invoke(args=["smtpsite", "init"])
    assert second.exit_code == 0, second.output
    assert "demo" not in second.output and "password" not in second.output
    with app.app_context():
        assert _state() == before
        # Deleted by its owner: it stays deleted (the database has users now).
        db.session.delete(find_site("demo"))
        db.session.commit()
    assert "demo" not in runner.invoke(args=["smtpsite", "init"]).output
    with app.app_context():
        assert find_site("demo") is None
        db.engine.dispose()


def test_no_demo_site_on_a_database_in_use(app):
    create_site("shop", "Shop")
    db.session.commit()
    result = app.test_cli_runner().invoke(args=["smtpsite", "init"])
    assert result.exit_code == 0 and "password:" in result.output  # the first admin still
    assert find_site("demo") is None


def test_no_demo_site_without_the_catcher(tmp_path):
    off = make_app(f"sqlite:///{tmp_path / 'off.db'}", tmp_path, SMTPSITE_CATCHER_ENABLED=False)
    result = off.test_cli_runner().invoke(args=["smtpsite", "init"])
    assert result.exit_code == 0 and "demo" not in result.output
    with off.app_context():
        assert db.session.execute(select(Site)).first() is None
        db.engine.dispose()


def test_mail_of_the_demo_site_reaches_the_catcher(tmp_path):
    port = free_port()
    app = make_app(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path, SMTPSITE_CATCHER_PORT=port)
    assert app.test_cli_runner().invoke(args=["smtpsite", "init"]).exit_code == 0
    catcher = Catcher(app).start()
    try:
        with app.app_context():
            result = send_mail("demo", to=["new.user@example.com"], subject="Hello from demo",
                               text="It works.", queue=False)
            assert result.status == "sent", result
            [message] = db.session.execute(select(CapturedMessage)).scalars()
            assert message.subject == "Hello from demo"
            assert message.mail_from == "demo@example.com"
            assert message.message_id == result.message_id
            db.engine.dispose()
    finally:
        catcher.stop()


def test_catcher_settings_from_the_environment():
    values = from_environment({"SMTPSITE_CATCHER_ENABLED": "off", "SMTPSITE_CATCHER_PORT": "2526",
                               "SMTPSITE_CATCHER_MAX_SIZE": "1000"})
    assert values == {"SMTPSITE_CATCHER_ENABLED": False, "SMTPSITE_CATCHER_PORT": 2526,
                      "SMTPSITE_CATCHER_MAX_SIZE": 1000}
    assert from_environment({"SMTPSITE_CATCHER_ENABLED": "Yes"})["SMTPSITE_CATCHER_ENABLED"]
    with pytest.raises(ValueError, match="SMTPSITE_CATCHER_ENABLED='maybe' is not a valid boolean"):
        from_environment({"SMTPSITE_CATCHER_ENABLED": "maybe"})
