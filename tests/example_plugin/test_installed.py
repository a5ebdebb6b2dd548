"""The example plugin installed from examples/smtpsite-maildir: loaded from its real entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

from cryptography.fernet import Fernet
from smtpsite_maildir import MaildirDelivery

from smtpsite.extensions import db
from smtpsite.models import SmtpServer
from smtpsite.registry import ENTRY_POINT_GROUP

PROJECT = Path(__file__).resolve().parents[2]
SOURCE = "smtpsite_maildir:MaildirDelivery (package smtpsite-maildir)"
LISTING = [
    f"maildir  Maildir  ({SOURCE})",
    "    path: Maildir path [path, required]",
    "    create: Create if missing [boolean] default=False",
    "    folder: Folder [string]",
]


def test_the_distribution_declares_the_entry_point():
    dist = distribution("smtpsite-maildir")
    [entry] = [e for e in dist.entry_points if e.group == ENTRY_POINT_GROUP]
    assert (entry.name, entry.value) == ("maildir", "smtpsite_maildir:MaildirDelivery")
    assert entry.load() is MaildirDelivery


def test_create_app_loads_it_from_the_entry_points(entry_point_app):
    registry = entry_point_app.extensions["smtpsite"].registry
    assert {"maildir", "network", "pickup", "sendmail"} <= set(registry.names())
    [loaded] = [p for p in registry if p.cls.name == "maildir"]
    assert loaded.cls is MaildirDelivery and loaded.source == SOURCE


def test_the_plugins_command_lists_it_with_source_and_fields(entry_point_app):
    runner = entry_point_app.test_cli_runner()
    result = runner.invoke(args=["smtpsite", "plugins"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = lines.index(LISTING[0])
    assert lines[start:start + 4] == LISTING
    rows = {r["name"]: r for r in json.loads(runner.invoke(args=["smtpsite", "plugins", "--json"]).output)}
    assert rows["maildir"]["source"] == SOURCE
    assert [(f["name"], f["type"], f["required"], f["default"]) for f in rows["maildir"]["fields"]] == [
        ("path", "path", True, None), ("create", "boolean", False, False), ("folder", "string", False, None)]


def test_the_real_flask_command_lists_it(sqlite_template, tmp_path):
    database = tmp_path / "cli.db"
    shutil.copy(sqlite_template, database)
    env = {**os.environ, "SMTPSITE_DATABASE_URL": f"sqlite:///{database}",
           "SMTPSITE_SECRET_KEYS": Fernet.generate_key().decode(),
           "SMTPSITE_FLASK_SECRET_KEY": "example-plugin-test-key"}
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "smtpsite", "plugins"],
                            cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[lines.index(LISTING[0]):][:4] == LISTING


def test_a_server_is_added_with_it_from_the_cli(entry_point_app, mail_root):
    runner = entry_point_app.test_cli_runner()
    result = runner.invoke(args=["smtpsite", "server", "add", "mail-archive", "--method", "maildir",
                                 "--global", "--option", f"path={mail_root / 'Maildir'}",
                                 "--option", "create=true"])
    assert result.exit_code == 0, result.output
    bad = runner.invoke(args=["smtpsite", "server", "add", "mail-typo", "--method", "maildir",
                              "--global", "--option", f"path={mail_root / 'Mialdir'}"])
    assert bad.exit_code != 0
    assert "options.path: does not exist; create the Maildir first or turn on 'create'" in bad.output
    with entry_point_app.app_context():
        [server] = db.session.query(SmtpServer).all()
        assert (server.server_name, server.method) == ("mail-archive", "maildir")
        assert server.options == {"path": str(mail_root / "Maildir"), "create": True, "folder": None}
