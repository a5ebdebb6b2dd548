"""Plugin loading from real entry points: installed distributions made in tmp_path, no pip."""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from plugins.network import NetworkDelivery
from plugins.pickup import PickupDelivery
from plugins.sendmail import SendmailDelivery
from smtpsite import create_app
from smtpsite.registry import ENTRY_POINT_GROUP, PluginConflictError, load_entry_point_plugins

PLUGIN_CODE = '''
from smtpsite.delivery import CheckResult, DeliveryMethod, DeliveryResult, Field


class {cls}(DeliveryMethod):
    name = "{name}"
    label = "{label}"
    fields = (
        Field("endpoint", "Endpoint URL", required=True, help="Where each message is posted."),
        Field("api_key", "API key", secret=True),
        Field("retries", "Retries", "integer", default=2, min_value=0),
    )

    def send_messages(self, messages):
        return [DeliveryResult(m.message_id, True) for m in messages]

    def check(self, sender, recipient):
        return CheckResult(True, "reachable; nothing was sent")
'''


class Site:
    """A folder on sys.path where tests 'install' distributions by writing their metadata."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.modules: list[str] = []

    def module(self, code: str) -> str:
        """Write a module with a name of its own; return the name."""
        name = f"smtpsite_test_plugin_{uuid.uuid4().hex[:8]}"
        (self.path / f"{name}.py").write_text(textwrap.dedent(code))
        self.modules.append(name)
        return name

    def plugin(self, name: str, label: str = "HTTP post", cls: str = "HttpDelivery") -> str:
        """A module holding a working plugin class; return ``module:Class``."""
        return f"{self.module(PLUGIN_CODE.format(cls=cls, name=name, label=label))}:{cls}"

    def distribution(self, dist: str, entry_points: dict[str, str]) -> None:
        """Declare an installed distribution ``dist`` with these delivery entry points."""
        info = self.path / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
        importlib.invalidate_caches()


@pytest.fixture
def site(tmp_path: Path, monkeypatch) -> Site:
    folder = tmp_path / "site-packages"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    installed = Site(folder)
    yield installed
    for name in installed.modules:
        sys.modules.pop(name, None)


def test_built_in_plugins_load_from_the_projects_own_entry_points():
    registry = load_entry_point_plugins()
    assert {"network", "pickup", "sendmail"} <= set(registry.names())
    classes = {p.cls.name: (p.cls, p.source) for p in registry}
    assert classes["network"] == (NetworkDelivery,
                                  "plugins.network:NetworkDelivery (package smtpsite)")
    assert classes["pickup"][0] is PickupDelivery and classes["sendmail"][0] is SendmailDelivery


def test_a_third_party_plugin_is_loaded_with_its_source(site):
    target = site.plugin("httppost")
    site.distribution("smtpsite-httppost", {"httppost": target})
    registry = load_entry_point_plugins()
    [loaded] = [p for p in registry if p.cls.name == "httppost"]
    assert loaded.source == f"{target} (package smtpsite-httppost)"
    assert [f.name for f in registry.get("httppost").fields] == ["endpoint", "api_key", "retries"]
    assert "network" in registry  # the built-ins still load beside it


def test_a_plugin_that_fails_to_import_is_logged_and_skipped(site, caplog):
    broken = site.module("raise RuntimeError('missing dependency: requests')\n")
    site.distribution("smtpsite-broken", {"broken": f"{broken}:Broken"})
    site.distribution("smtpsite-fine", {"fine": site.plugin("fine")})
    with caplog.at_level(logging.ERROR, logger="smtpsite.registry"):
        registry = load_entry_point_plugins()
    assert "broken" not in registry and "fine" in registry and "network" in registry
    [record] = [r for r in caplog.records if "'broken'" in r.getMessage()]
    assert "failed to load and is skipped" in record.getMessage()
    assert "package smtpsite-broken" in record.getMessage()
    assert "missing dependency: requests" in str(record.exc_info[1])


def test_an_entry_point_that_is_not_a_plugin_class_is_skipped(site, caplog):
    module = site.module("NotAPlugin = object\n")
    site.distribution("smtpsite-notaplugin", {"notaplugin": f"{module}:NotAPlugin"})
    with caplog.at_level(logging.ERROR, logger="smtpsite.registry"):
        registry = load_entry_point_plugins()
    assert "notaplugin" not in registry
    assert any("is not a DeliveryMethod subclass" in str(r.exc_info[1]) for r in caplog.records)


def test_two_plugins_with_one_name_stop_loading_naming_both(site):
    first, second = site.plugin("twin"), site.plugin("twin", cls="OtherDelivery")
    site.distribution("smtpsite-twin-a", {"twin": first})
    site.distribution("smtpsite-twin-b", {"twin": second})
    with pytest.raises(PluginConflictError) as info:
        load_entry_point_plugins()
    message = str(info.value)
    assert "two delivery plugins are named 'twin'" in message
    assert f"{first} (package smtpsite-twin-a)" in message
    assert f"{second} (package smtpsite-twin-b)" in message


def test_a_third_party_plugin_cannot_take_a_built_in_name(site):
    site.distribution("smtpsite-impostor", {"network": site.plugin("network")})
    with pytest.raises(PluginConflictError, match="package smtpsite-impostor"):
        load_entry_point_plugins()


def test_entry_point_name_must_match_the_class_name(site, caplog):
    site.distribution("smtpsite-mismatch", {"mailer": site.plugin("postman")})
    with caplog.at_level(logging.ERROR, logger="smtpsite.registry"):
        registry = load_entry_point_plugins()
    assert "mailer" not in registry and "postman" not in registry
    assert any("whose name is 'postman'; skipped" in r.getMessage() for r in caplog.records)


def test_plugins_command_lists_name_label_source_and_fields(site, sqlite_template, tmp_path):
    target = site.plugin("httppost", label="HTTP endpoint")
    site.distribution("smtpsite-httppost", {"httppost": target})
    database = tmp_path / "cli.db"
    shutil.copy(sqlite_template, database)
    app = create_app({
        "TESTING": True,
        "SMTPSITE_DATABASE_URL": f"sqlite:///{database}",
        "SMTPSITE_SECRET_KEYS": Fernet.generate_key().decode(),
        "SMTPSITE_PLUGINS": None,  # read the entry points, as in production
    })
    runner = app.test_cli_runner()
    result = runner.invoke(args=["smtpsite", "plugins"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = f"httppost  HTTP endpoint  ({target} (package smtpsite-httppost))"
    start = lines.index(header)
    assert lines[start + 1: start + 4] == [
        "    endpoint: Endpoint URL [string, required]",
        "    api_key: API key [string, secret]",
        "    retries: Retries [integer] default=2",
    ]
    assert "network  Network (SMTP)  (plugins.network:NetworkDelivery (package smtpsite))" in lines
    assert any(line.startswith("pickup  Pickup directory  (") for line in lines)
    assert any(line.startswith("sendmail  Local MTA (sendmail)  (") for line in lines)

    rows = {row["name"]: row for row in json.loads(
        runner.invoke(args=["smtpsite", "plugins", "--json"]).output)}
    assert rows["httppost"]["source"] == f"{target} (package smtpsite-httppost)"
    assert [f["name"] for f in rows["httppost"]["fields"]] == ["endpoint", "api_key", "retries"]
    assert rows["httppost"]["fields"][1]["secret"] is True
    with app.app_context():
        from smtpsite.extensions import db

        db.engine.dispose()
