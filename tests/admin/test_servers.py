"""SMTP servers: plugin-built forms, secrets kept, validation next to fields, actions, checks."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

import pytest

from smtpsite.delivery import CheckResult, DeliveryMethod, DeliveryResult, Field, OutgoingMessage
from smtpsite.extensions import db
from smtpsite.models import ServerHealth, SmtpServer
from smtpsite.routing import server_options
from tests.admin.conftest import SERVER_SECRET, post, sign_in, text
from tests.conftest import BUILTIN_PLUGINS, make_app


class RegionalApiDelivery(DeliveryMethod):
    """A third-party plugin the panel has never heard of."""

    name = "regional_api"
    label = "Regional HTTP API"
    description = "Posts mail to a made-up API."
    fields = (
        Field("region", "Region", "choice", required=True, default="eu",
              choices=(("eu", "Europe"), ("us", "United States")), help="Where the API runs."),
        Field("api_key", "API key", secret=True, required=True),
        Field("batch", "Batch size", "integer", default=10, min_value=1, max_value=500),
        Field("sandbox", "Sandbox mode", "boolean", default=False),
    )

    @classmethod
    def validate(cls, options: dict[str, Any], context) -> dict[str, str]:
        if options["region"] == "us" and options["batch"] > 100:
            return {"batch": "the US API takes at most 100 per batch"}
        return {}

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[DeliveryResult]:
        return [DeliveryResult(m.message_id, True) for m in messages]

    def check(self, sender: str, recipient: str) -> CheckResult:
        return CheckResult(True, "the API answered", [f"GET /ping region={self.options['region']}"])


def network_form(server_name: str, **overrides) -> dict[str, Any]:
    """A filled-in network server form."""
    data = {"method": "network", "server_name": server_name, "priority": "high", "enabled": "y",
            "scope": "all", "max_connections": "2", "options-security": "none",
            "options-username": "", "options-password": "", "options-verify_certificate": "y",
            "options-timeout": "5"}
    data.update(overrides)
    return data


def test_create_starts_with_the_method_then_shows_its_fields(root, world):
    choose = text(root.get("/admin/server/new/"))
    assert "Choose the delivery method" in choose
    assert "Network (SMTP)" in choose and "Pickup directory" in choose
    form = text(root.get("/admin/server/new/?method=network"))
    for label in ("Security", "User name", "Password", "Verify the certificate", "CA file",
                  "HELO name", "Timeout (seconds)", "Implicit TLS (port 465)"):
        assert label in form
    pickup = text(root.get("/admin/server/new/?method=pickup"))
    assert "Directory (required)" in pickup and "HELO name" not in pickup


def test_create_network_server(panel, root, world):
    response = post(root, "/admin/server/new/?method=network",
                    network_form("smtp.example.org:587", **{"options-security": "starttls",
                                 "options-auth": "password", "options-username": "u1",
                                 "options-password": "pw-123456"}))
    assert response.status_code == 302, text(response)
    with panel.app_context():
        server = db.session.query(SmtpServer).filter_by(server_name="smtp.example.org:587").one()
        assert server.is_global and server.priority == "high" and server.max_connections == 2
        assert server.options["security"] == "starttls" and "password" not in server.options
        assert server_options(server)["password"].reveal() == "pw-123456"


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"server_name": "bad host!"}, "server_name", "server_name"),
    ({"server_name": "mail.example.org:70000"}, "server_name", "port"),
    ({"options-auth": "password", "options-password": "lonely-pw"}, "options-username",
     "is required when a password is set"),
    ({"options-timeout": "abc"}, "options-timeout", "must be a number"),
    ({"scope": "sites"}, "sites", "or at least one site"),
    ({"max_connections": "0"}, "max_connections", "Number must be at least 1"),
])
def test_validation_errors_show_next_to_the_field(panel, root, world, overrides, field, message):
    response = post(root, "/admin/server/new/?method=network",
                    {**network_form("ok.example.org"), **overrides})
    page = text(response)
    assert response.status_code == 200
    # The message sits in the field's own block, right after the input with that name.
    block = page[page.index(f'name="{field}"'):]
    end = block.find('class="form-group')
    block = block[:end] if end != -1 else block[:3000]
    assert "invalid-feedback" in block and message in block, block
    assert "lonely-pw" not in page


def test_pickup_directory_outside_the_allowed_roots(panel, root, world, tmp_path):
    response = post(root, "/admin/server/new/?method=pickup",
                    {"method": "pickup", "server_name": "localhost", "priority": "normal",
                     "scope": "all", "max_connections": "1", "options-directory": str(tmp_path)})
    assert response.status_code == 200
    assert "SMTPSITE_PICKUP_ROOTS" in text(response) or "allowed" in text(response)
    with panel.app_context():
        assert db.session.query(SmtpServer).count() == 4


def test_edit_prefills_and_keeps_the_secret_when_left_empty(panel, root, world):
    page = text(root.get(f"/admin/server/edit/?id={world.server_a}"))
    assert "alpha-relay.example.net:2525" in page and 'value="mailer"' in page
    assert "A value is set: leave empty to keep it." in page
    assert SERVER_SECRET not in page
    response = post(root, f"/admin/server/edit/?id={world.server_a}",
                    network_form("alpha-relay.example.net:2526", scope="sites",
                                 sites=[world.site_a],
                                 **{"options-auth": "password", "options-username": "mailer"}))
    assert response.status_code == 302, text(response)
    with panel.app_context():
        server = db.session.get(SmtpServer, world.server_a)
        assert server.server_name == "alpha-relay.example.net:2526"
        assert server_options(server)["password"].reveal() == SERVER_SECRET
    post(root, f"/admin/server/edit/?id={world.server_a}",
         network_form("alpha-relay.example.net:2526", scope="sites", sites=[world.site_a],
                      **{"options-auth": "password", "options-username": "mailer",
                         "options-password": "new-pw-000"}))
    with panel.app_context():
        server = db.session.get(SmtpServer, world.server_a)
        assert server_options(server)["password"].reveal() == "new-pw-000"


def test_choosing_all_sites_drops_the_site_list(panel, root, world):
    response = post(root, f"/admin/server/edit/?id={world.server_ab}",
                    network_form("shared-relay.example.net", scope="all",
                                 sites=[world.site_a, world.site_b],
                                 **{"options-auth": "password", "options-username": "mailer"}))
    assert response.status_code == 302
    with panel.app_context():
        server = db.session.get(SmtpServer, world.server_ab)
        assert server.is_global and server.sites == []


def test_list_columns_filters_search_and_bulk_enable(panel, root, world):
    page = text(root.get("/admin/server/"))
    for name in ("global-relay.example.net", "alpha-relay.example.net:2525", "shared-relay"):
        assert name in page
    assert "all sites" in page and "Alpha shop, Bravo news" in page and "never checked" in page
    found = text(root.get("/admin/server/?search=bravo"))
    assert "bravo-relay" in found and "alpha-relay" not in found
    # The site filter: its choices are sites, and it keeps only that site's servers.
    assert "Alpha shop" in page
    filtered = text(root.get(f"/admin/server/?flt0_3={world.site_b}"))
    assert "bravo-relay" in filtered and "shared-relay" in filtered
    assert "alpha-relay" not in filtered and "global-relay" not in filtered
    post(root, "/admin/server/action/", {"action": "disable",
                                         "rowid": [world.server_a, world.server_b]},
         token_page="/admin/server/")
    with panel.app_context():
        assert not db.session.get(SmtpServer, world.server_a).enabled
        assert not db.session.get(SmtpServer, world.server_b).enabled
        assert db.session.get(SmtpServer, world.global_server).enabled
    disabled = text(root.get("/admin/server/?flt0_1=0"))
    assert "bravo-relay" in disabled
    assert "global-relay" in text(root.get("/admin/server/?flt0_0=normal&flt1_2=network"))
    assert "global-relay" not in text(root.get("/admin/server/?flt0_0=high"))
    assert "alpha-relay" in disabled and "global-relay" not in disabled
    post(root, "/admin/server/action/", {"action": "enable", "rowid": [world.server_a]},
         token_page="/admin/server/")
    with panel.app_context():
        assert db.session.get(SmtpServer, world.server_a).enabled


def test_test_connection_runs_the_check_and_records_it(panel, root, world, smtp_server):
    with panel.app_context():
        server = db.session.get(SmtpServer, world.server_a)
        server.server_name = smtp_server.server_name
        server.options = {**server.options, "security": "none", "auth": "none", "username": None}
        server.secrets = None
        db.session.commit()
    page = text(root.get(f"/admin/server/test/?id={world.server_a}"))
    assert "no-reply@localhost.local" in page  # the site's default sender, pre-filled
    response = post(root, f"/admin/server/test/?id={world.server_a}",
                    {"sender": "from@example.com", "recipient": "to@example.com"})
    page = text(response)
    assert "the server accepted the sender and the recipient" in page
    assert "&gt; MAIL FROM:&lt;from@example.com&gt;" in page and "&lt; 250" in page
    assert smtp_server.messages == []  # nothing sent
    with panel.app_context():
        health = db.session.get(ServerHealth, f"server:{world.server_a}")
        assert health.last_check_ok is True and health.last_check_at is not None
    assert "badge-success" in text(root.get("/admin/server/"))


def test_test_connection_failure_and_bulk_check(panel, root, world, silent_server):
    from tests.smtpd import free_port

    with panel.app_context():
        server = db.session.get(SmtpServer, world.server_b)
        server.server_name = f"127.0.0.1:{free_port()}"
        db.session.commit()
    bad = text(post(root, f"/admin/server/test/?id={world.server_b}",
                    {"sender": "from@example.com", "recipient": "not an address"}))
    assert "is not a valid email address" in bad
    response = post(root, "/admin/server/action/", {"action": "test", "rowid": [world.server_b]},
                    token_page="/admin/server/")
    page = text(response)
    assert response.status_code == 200 and "FAILED" in page and "connection to 127.0.0.1" in page
    with panel.app_context():
        health = db.session.get(ServerHealth, f"server:{world.server_b}")
        assert health.last_check_ok is False and "failed" in health.last_check_message


def test_delete_server(panel, root, world):
    post(root, "/admin/server/delete/", {"id": world.server_b}, token_page="/admin/server/")
    with panel.app_context():
        assert db.session.get(SmtpServer, world.server_b) is None


@pytest.fixture
def plugin_panel(sqlite_template, tmp_path, password_hash):
    """An app that also has a third-party plugin installed."""
    path = tmp_path / "plugins.db"
    shutil.copy(sqlite_template, path)
    app = make_app(f"sqlite:///{path}", tmp_path,
                   SMTPSITE_PLUGINS=[*BUILTIN_PLUGINS, RegionalApiDelivery])
    from tests.admin.conftest import add_user

    with app.app_context():
        add_user("root@example.com", password_hash, is_global=True)
        db.session.commit()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_a_third_party_plugin_gets_its_own_form(plugin_panel):
    client = plugin_panel.test_client()
    sign_in(client, "root@example.com")
    assert "Regional HTTP API" in text(client.get("/admin/server/new/"))
    form = text(client.get("/admin/server/new/?method=regional_api"))
    for label in ("Region (required)", "Europe", "United States", "API key (required)",
                  "Batch size", "Sandbox mode", "Where the API runs."):
        assert label in form
    data = {"method": "regional_api", "server_name": "api.example.com:443", "priority": "normal",
            "scope": "all", "max_connections": "1", "options-region": "us",
            "options-api_key": "", "options-batch": "200"}
    assert "is required" in text(post(client, "/admin/server/new/?method=regional_api", data))
    data["options-api_key"] = "key-abc-123"
    page = text(post(client, "/admin/server/new/?method=regional_api", data))
    assert "the US API takes at most 100 per batch" in page and "key-abc-123" not in page
    data.update({"options-api_key": "key-abc-123", "options-batch": "50", "options-sandbox": "y"})
    assert post(client, "/admin/server/new/?method=regional_api", data).status_code == 302
    with plugin_panel.app_context():
        server = db.session.query(SmtpServer).one()
        assert server.options == {"region": "us", "batch": 50, "sandbox": True}
        assert server_options(server)["api_key"].reveal() == "key-abc-123"
        server_id = server.id
    edit = text(client.get(f"/admin/server/edit/?id={server_id}"))
    assert "key-abc-123" not in edit and "A value is set" in edit and 'value="50"' in edit
    result = text(post(client, f"/admin/server/test/?id={server_id}",
                       {"sender": "a@example.com", "recipient": "b@example.com"}))
    assert "the API answered" in result and "GET /ping region=us" in result
