"""Import refuses a file with any invalid part, whole, naming every place; and reports changes."""

from __future__ import annotations

import textwrap

from smtpsite import settings
from smtpsite.config_export import export_toml
from smtpsite.extensions import db
from smtpsite.models import SmtpServer
from smtpsite.routing import server_options
from smtpsite.sites import find_site
from tests.config_io.conftest import dump_tables

BAD = textwrap.dedent("""\
    colour = "blue"

    [settings]
    "emails.format" = "rich"
    "emails.batch_size" = 10
    "emails.no_such_key" = 1

    [[sites]]
    code_name = "newsite"
    display_name = "A new site"

    [sites.settings]
    "emails.batch_size" = 5

    [[sites]]
    code_name = "bad site!"

    [[servers]]
    server_name = "relay.example.com:99999"
    method = "network"
    global = true

    [[servers]]
    server_name = "ok.example.com"
    method = "network"
    sites = ["newsite", "ghost"]

    [[servers]]
    server_name = "ok2.example.com"
    method = "network"
    global = true
    max_connections = "two"
    [servers.options]
    security = "none"
    port = 25

    [[servers]]
    server_name = "ok3.example.com"
    method = "network"
    global = true
    [servers.options]
    password = "${SMTPSITE_TEST_UNSET_VARIABLE}"

    [[servers]]
    server_name = "ok4.example.com"
    method = "carrier-pigeon"
    global = true
    """)

EXPECTED_PLACES = [
    "colour",
    "settings.emails.format",
    "settings.emails.no_such_key",
    "sites[0].settings.emails.batch_size",
    "sites[1].code_name",
    "servers[0].server_name",
    "servers[1].sites[1]",
    "servers[2].max_connections",
    "servers[3].options.password",
    "servers[4].method",
]


def test_an_invalid_file_is_refused_whole_with_every_place(app, populated, runner, tmp_path,
                                                             monkeypatch):
    monkeypatch.delenv("SMTPSITE_TEST_UNSET_VARIABLE", raising=False)
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    before = dump_tables()
    result = runner.invoke(args=["smtpsite", "import", str(path)])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    places = [line.removeprefix("error: ").split(": ", 1)[0] for line in errors]
    assert places == EXPECTED_PLACES, result.output
    text = result.output
    assert "settings.emails.format: must be one of: html, plaintext, both" in text
    assert "global only" in text
    assert "servers[1].sites[1]: no site with code name 'ghost'" in text
    assert "environment variable SMTPSITE_TEST_UNSET_VARIABLE is not set" in text
    assert "10 error(s): nothing was changed" in text
    assert "added" not in text
    assert dump_tables() == before
    assert find_site("newsite") is None


def test_plugin_option_errors_are_placed_under_the_server(app, runner, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent("""\
        [[servers]]
        server_name = "ok.example.com"
        method = "network"
        global = true
        [servers.options]
        port = 25
        timeout = 9999
        """))
    result = runner.invoke(args=["smtpsite", "import", str(path)])
    assert result.exit_code == 1
    assert "error: servers[0].options.port: unknown option for the network method" in result.output
    assert "error: servers[0].options.timeout: must be at most 300" in result.output
    assert db.session.query(SmtpServer).count() == 0


def test_a_toml_syntax_error_names_the_file_and_line(app, runner, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[[sites]]\ncode_name = "a"\ndisplay_name = "unterminated\n')
    result = runner.invoke(args=["smtpsite", "import", str(path)])
    assert result.exit_code == 1
    assert f"error: {path}: TOML syntax error" in result.output
    assert "line 3" in result.output
    assert find_site("a") is None


def test_changes_are_applied_and_reported(app, populated, runner, tmp_path, monkeypatch):
    text = export_toml()
    text = text.replace('priority = "high"', 'priority = "normal"', 1)
    text = text.replace('display_name = "Blog"', 'display_name = "The Blog"')
    text = text.replace('"emails.batch_size" = 20', '"emails.batch_size" = 30')
    text = text.replace("${SMTPSITE_SECRET_SERVER_RELAY_EXAMPLE_COM_587_PASSWORD}",
                        "${NEW_RELAY_PASSWORD}")
    # Settings may also be written as plain TOML dotted keys; a new site may come with them.
    text += textwrap.dedent("""
        [[sites]]
        code_name = "news"
        display_name = "News"
        [sites.settings]
        emails.format = "plaintext"
        """)
    for name in ("SETTING_EMAILS_SMTP_PASSWORD", "SITE_SHOP_EMAILS_SMTP_PASSWORD",
                 "SERVER_RELAY_EXAMPLE_COM_587_PASSWORD_2", "SITE_SHOP_EMAILS_DKIM_PRIVATE_KEY"):
        monkeypatch.setenv(f"SMTPSITE_SECRET_{name}", "unchanged?")
    monkeypatch.setenv("SMTPSITE_SECRET_SITE_SHOP_EMAILS_DKIM_PRIVATE_KEY", populated["dkim_key"])
    monkeypatch.setenv("NEW_RELAY_PASSWORD", "n3w-Relay-Pass")
    path = tmp_path / "changed.toml"
    path.write_text(text)
    result = runner.invoke(args=["smtpsite", "import", str(path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "site blog: changed (display_name)" in out
    assert "site news: added" in out
    assert "setting emails.format (site news): added" in out
    assert "setting emails.batch_size (global): changed" in out
    assert "setting emails.smtp_password (global): changed" in out
    assert "setting emails.dkim_private_key (site Shop): unchanged" in out
    # Priority is not part of a server's identity: the same server, changed.
    assert ("server relay.example.com:587 [network, global]: changed "
            "(options.password, priority)") in out
    assert "n3w-Relay-Pass" not in out and "unchanged?" not in out
    relay = db.session.query(SmtpServer).order_by(SmtpServer.id).first()
    assert relay.priority == "normal"
    assert server_options(relay)["password"].reveal() == "n3w-Relay-Pass"
    assert settings.get("emails.batch_size") == 30
    assert settings.get("emails.format", find_site("news")) == "plaintext"
    assert db.session.query(SmtpServer).count() == 4


def test_a_plain_text_secret_in_the_file_is_imported_with_a_warning(app, runner, tmp_path):
    path = tmp_path / "plain.toml"
    path.write_text('[settings]\n"emails.smtp_password" = "pl4in-Text-Pass"\n')
    result = runner.invoke(args=["smtpsite", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning: settings.emails.smtp_password: secret written in plain text" in result.output
    assert "pl4in-Text-Pass" not in result.output
    assert settings.get("emails.smtp_password").reveal() == "pl4in-Text-Pass"
