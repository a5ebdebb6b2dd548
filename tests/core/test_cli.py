"""The operator CLI: sites, servers, settings, route and send."""

import pytest

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.models import SmtpServer


def run(runner, *args, ok=True):
    result = runner.invoke(args=["smtpsite", *args])
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result.output


def test_sites_servers_settings_route_and_send(runner, smtp_server):
    assert "site shop added" in run(runner, "site", "add", "shop", "--name", "Shop",
                                    "--domain", "shop.example")
    assert "already exists" in run(runner, "site", "add", "SHOP", "--name", "x", ok=False)
    assert "shop\tShop\tshop.example" in run(runner, "site", "list")
    run(runner, "server", "add", smtp_server.server_name, "--method", "network",
        "--priority", "high", "--site", "shop", "--option", "security=none",
        "--option", "timeout=5")
    run(runner, "server", "add", "backup.example:2525", "--global", "--priority", "low",
        "--max-connections", "3", "--option", "security=starttls")
    listing = run(runner, "server", "list")
    assert f"{smtp_server.server_name}\thigh\tenabled\tnetwork\tmax=1\tshop" in listing
    assert "backup.example:2525\tlow\tenabled\tnetwork\tmax=3\tall sites" in listing

    route = run(runner, "route", "--site", "shop")
    assert route.index(smtp_server.server_name) < route.index("backup.example:2525")
    assert "assigned to shop" in route and "global server (all sites)" in route

    run(runner, "settings", "set", "emails.queue_enabled", "false")
    run(runner, "settings", "set", "emails.default_sender", "shop@example.com", "--site", "shop")
    assert "shop@example.com\t(site)" in run(runner, "settings", "get", "emails.default_sender",
                                               "--site", "shop")
    assert "false\t(global)" in run(runner, "settings", "get", "emails.queue_enabled",
                                      "--site", "shop")

    out = run(runner, "send", "--site", "shop", "--to", "a@example.com", "--subject", "CLI",
              "--text", "hello")
    assert "status: sent" in out and f"server: {smtp_server.server_name}" in out
    message_id = out.split("Message-ID: ")[1].split()[0]
    assert message_id.encode() in smtp_server.messages[0].data

    run(runner, "server", "disable", smtp_server.server_name)
    assert "disabled" in run(runner, "route", "--site", "shop")
    run(runner, "server", "enable", smtp_server.server_name)


def test_bad_input_gets_clear_errors(runner):
    run(runner, "site", "add", "shop", "--name", "Shop")
    assert "outside 1-65535" in run(runner, "server", "add", "host:70000", "--global", ok=False)
    assert "no site with code name 'nope'" in run(runner, "server", "add", "h.example",
                                                   "--site", "nope", ok=False)
    assert "either --global or --site" in run(runner, "server", "add", "h.example", "--global",
                                              "--site", "shop", ok=False)
    assert "'all sites' or at least one site" in run(runner, "server", "add", "h.example",
                                                     ok=False)
    assert "unknown option" in run(runner, "server", "add", "h.example", "--global",
                                   "--option", "colour=blue", ok=False)
    assert "no delivery method named 'carrier-pigeon'" in run(
        runner, "server", "add", "h.example", "--global", "--method", "carrier-pigeon", ok=False)
    assert "global only" in run(runner, "settings", "set", "emails.batch_size", "5", "--site",
                                "shop", ok=False)
    assert "unknown setting" in run(runner, "settings", "get", "emails.colour", ok=False)
    assert "no server named" in run(runner, "server", "disable", "nothing.example", ok=False)
    assert db.session.query(SmtpServer).count() == 0


def test_secret_settings_are_never_printed(runner):
    run(runner, "settings", "set", "emails.smtp_password", "hunter2-secret")
    out = run(runner, "settings", "get")
    assert "hunter2-secret" not in out
    assert "emails.smtp_password\t(set)\t(global)" in out


def test_send_failure_exits_non_zero(runner):
    run(runner, "site", "add", "shop", "--name", "Shop")
    run(runner, "settings", "set", "emails.queue_enabled", "false")
    result = runner.invoke(args=["smtpsite", "send", "--site", "shop", "--to", "a@example.com",
                                 "--subject", "s", "--text", "t"])
    assert result.exit_code == 1
    assert "status: deferred" in result.output and "no server" in result.output


@pytest.mark.parametrize("value", ["1", "on", "yes", "true"])
def test_settings_values_are_parsed_from_text(runner, value):
    run(runner, "settings", "set", "emails.enabled", value)
    assert settings.get("emails.enabled") is True


def test_init_twice_changes_nothing(runner):
    assert "up to date" in run(runner, "init")
    assert "up to date" in run(runner, "init")
