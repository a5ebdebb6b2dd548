"""Export, import into an empty database, export again: the same file; secrets only via variables."""

from __future__ import annotations

import re
import tomllib

from smtpsite import settings
from smtpsite.config_export import export_document, export_toml
from smtpsite.extensions import db
from smtpsite.models import SmtpServer
from smtpsite.routing import server_options
from smtpsite.sites import find_site
from tests.config_io.conftest import SECRETS, dump_tables, empty_tables, populate

VARIABLES = {
    "SMTPSITE_SECRET_SETTING_EMAILS_SMTP_PASSWORD": SECRETS["global_password"],
    "SMTPSITE_SECRET_SITE_SHOP_EMAILS_SMTP_PASSWORD": SECRETS["shop_password"],
    "SMTPSITE_SECRET_SERVER_RELAY_EXAMPLE_COM_587_PASSWORD": SECRETS["relay_password"],
    "SMTPSITE_SECRET_SERVER_RELAY_EXAMPLE_COM_587_PASSWORD_2": SECRETS["relay2_password"],
}
DKIM_VARIABLE = "SMTPSITE_SECRET_SITE_SHOP_EMAILS_DKIM_PRIVATE_KEY"


def set_secrets(monkeypatch, dkim_key: str) -> None:
    for name, value in {**VARIABLES, DKIM_VARIABLE: dkim_key}.items():
        monkeypatch.setenv(name, value)


def test_export_holds_everything_but_no_secret(app, populated, runner):
    result = runner.invoke(args=["smtpsite", "export"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert text == export_toml()
    for secret in [*SECRETS.values(), *populated["dkim_key"].splitlines()[1:-1]]:
        assert secret not in text
    header = [line for line in text.splitlines() if line.startswith("#")]
    for name in [*VARIABLES, DKIM_VARIABLE]:
        assert any(name in line for line in header), name
    doc = tomllib.loads(text)
    assert doc == export_document()[0]
    assert doc["settings"]["emails.smtp_password"] == "${SMTPSITE_SECRET_SETTING_EMAILS_SMTP_PASSWORD}"
    assert doc["settings"]["emails.batch_size"] == 20
    shop = next(s for s in doc["sites"] if s["code_name"] == "Shop")
    assert shop["domains"] == ["shop.example.com", "münchen.example"]
    assert shop["settings"]["emails.dkim_private_key"] == "${" + DKIM_VARIABLE + "}"
    relay = doc["servers"][0]
    assert relay["global"] is True and "sites" not in relay
    assert relay["sender_filter"] == ["@shop.example.com", "alerts@example.com"]
    assert relay["options"]["timeout"] == 12.5
    assert relay["options"]["password"] == (
        "${SMTPSITE_SECRET_SERVER_RELAY_EXAMPLE_COM_587_PASSWORD}"
    )
    assert doc["servers"][2]["sites"] == ["Shop", "blog"]
    assert doc["servers"][2]["enabled"] is False


def test_export_import_export_gives_the_same_file(app, populated, runner, second_app,
                                                  monkeypatch, tmp_path):
    path = tmp_path / "config.toml"
    result = runner.invoke(args=["smtpsite", "export", "--output", str(path)])
    assert result.exit_code == 0, result.output
    first = path.read_text()
    set_secrets(monkeypatch, populated["dkim_key"])
    with second_app.app_context():
        imported = second_app.test_cli_runner().invoke(args=["smtpsite", "import", str(path)])
        assert imported.exit_code == 0, imported.output
        assert "site Shop: added" in imported.output
        assert "server relay.example.com:587 [network, global]: added" in imported.output
        assert "setting emails.dkim_private_key (site Shop): added" in imported.output
        assert re.search(r"^\d+ added, 0 changed, 0 unchanged$", imported.output, re.M)
        assert export_toml() == first
        # The secrets arrived, encrypted with this app's own key.
        shop = find_site("shop")
        assert settings.get("emails.smtp_password").reveal() == SECRETS["global_password"]
        assert settings.get("emails.smtp_password", shop).reveal() == SECRETS["shop_password"]
        assert settings.get("emails.dkim_private_key", shop).reveal() == populated["dkim_key"].strip()
        passwords = [server_options(s).get("password")
                     for s in db.session.query(SmtpServer).order_by(SmtpServer.id)]
        assert [p.reveal() if p else None for p in passwords] == [
            SECRETS["relay_password"], SECRETS["relay2_password"], None, None,
        ]


def test_importing_the_same_file_again_changes_nothing(app, populated, runner, second_app,
                                                      monkeypatch, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(export_toml())
    set_secrets(monkeypatch, populated["dkim_key"])
    # Into the database it came from: already the same.
    before = dump_tables()
    again = runner.invoke(args=["smtpsite", "import", str(path)])
    assert again.exit_code == 0, again.output
    assert "nothing to change" in again.output
    assert ": added" not in again.output and ": changed" not in again.output
    assert dump_tables() == before
    # Into an empty database, twice.
    with second_app.app_context():
        cli = second_app.test_cli_runner()
        assert cli.invoke(args=["smtpsite", "import", str(path)]).exit_code == 0
        after_first = dump_tables()
        second = cli.invoke(args=["smtpsite", "import", str(path)])
        assert second.exit_code == 0, second.output
        assert "nothing to change" in second.output
        assert dump_tables() == after_first


def test_dry_run_reports_and_changes_nothing(app, populated, second_app, monkeypatch, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(export_toml())
    set_secrets(monkeypatch, populated["dkim_key"])
    with second_app.app_context():
        before = dump_tables()
        result = second_app.test_cli_runner().invoke(
            args=["smtpsite", "import", str(path), "--dry-run"]
        )
        assert result.exit_code == 0, result.output
        assert "site Shop: added" in result.output
        assert "dry run: nothing was changed" in result.output
        assert dump_tables() == before
        assert find_site("shop") is None


def test_round_trip_on_postgresql(pg_app, monkeypatch, tmp_path):
    key = populate()["dkim_key"]
    set_secrets(monkeypatch, key)
    path = tmp_path / "config.toml"
    path.write_text(first := export_toml())
    runner = pg_app.test_cli_runner()
    before = dump_tables()
    again = runner.invoke(args=["smtpsite", "import", str(path)])
    assert again.exit_code == 0 and "nothing to change" in again.output, again.output
    assert dump_tables() == before
    empty_tables()
    db.session.expire_all()
    imported = runner.invoke(args=["smtpsite", "import", str(path)])
    assert imported.exit_code == 0 and "0 unchanged" in imported.output, imported.output
    assert export_toml() == first
