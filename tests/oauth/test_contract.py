"""The plugin contract kit (smtpsite.testing) run against the network plugin signing in with OAuth."""

from __future__ import annotations

import pytest

from plugins.network import NetworkDelivery
from smtpsite.delivery import ServerAddress
from smtpsite.testing import DeliveryMethodContract, ReceivedMail
from tests.oauth.conftest import CLIENT_SECRET
from tests.oauth.helpers import google_options, microsoft_options
from tests.smtpd import HOST


class _OAuthContract(DeliveryMethodContract):
    plugin_class = NetworkDelivery
    style = "microsoft"
    mechanisms: tuple[str, ...] = ("XOAUTH2",)

    @pytest.fixture(autouse=True)
    def _servers(self, endpoint, start_oauth_server, certificate, service_account):
        self.endpoint = endpoint
        self.certificate = certificate
        self.service_account = service_account
        # Implicit TLS: a connection is counted once (see tests/plugins/test_contract.py).
        self.server = start_oauth_server(tls="ssl", style=self.style, mechanisms=self.mechanisms)

    def tls(self) -> dict:
        return {"security": "ssl", "ca_file": str(self.certificate.cert_file)}

    def server_address(self):
        return ServerAddress(self.server.server_name, HOST, self.server.port)

    def get_mailbox_content(self) -> list[ReceivedMail]:
        return [ReceivedMail(m.mail_from, tuple(m.rcpt_tos), m.data) for m in self.server.messages]

    def flush_mailbox(self) -> None:
        self.server.handler.messages.clear()

    def connections_seen(self):
        return self.server.handler.connections


class TestMicrosoftOAuthContract(_OAuthContract):
    def valid_options(self):
        return microsoft_options(self.endpoint, **self.tls())

    def invalid_options(self):
        return [({"tenant": "common"}, "tenant", "must be your own tenant"),
                ({"client_secret": ""}, "client_secret", "is required"),
                ({"mailbox": "not-an-address"}, "mailbox", "must be an email address")]

    def test_the_secret_is_among_the_checked_values(self):
        assert self.secret_values() == [CLIENT_SECRET]


class TestGoogleOAuthBearerContract(_OAuthContract):
    style = "google"
    mechanisms = ("OAUTHBEARER",)

    def valid_options(self):
        return google_options(self.endpoint, self.service_account.json_key, **self.tls())

    def invalid_options(self):
        return [({"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"},
                 "private_key", "is not a readable unencrypted PEM private key"),
                ({"client_id": "42"}, "client_id", "differs from the key file's client_email")]
