"""Building network plugins with OAuth options for the tests."""

from __future__ import annotations

from plugins.network import NetworkDelivery
from smtpsite.delivery import PluginContext, ServerAddress
from tests.oauth.conftest import CLIENT_ID, CLIENT_SECRET, MAILBOX, SA_EMAIL, TENANT
from tests.smtpd import HOST

CONTEXT = PluginContext()


def microsoft_options(endpoint, **changes) -> dict:
    """Options of a Microsoft 365 sender, with the token endpoint pointed at the local one."""
    return {"security": "none", "auth": "oauth2", "provider": "microsoft", "tenant": TENANT,
            "token_endpoint": endpoint.url, "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET, "mailbox": MAILBOX, "timeout": 5, **changes}


def google_options(endpoint, key: str, **changes) -> dict:
    """Options of a Google Workspace sender using a service account key."""
    return {"security": "none", "auth": "oauth2", "provider": "google",
            "token_endpoint": endpoint.google_url, "client_id": SA_EMAIL, "private_key": key,
            "mailbox": MAILBOX, "timeout": 5, **changes}


def make(server, options: dict) -> NetworkDelivery:
    """A network plugin for ``server`` with ``options`` cleaned as smtpsite cleans them."""
    cleaned = NetworkDelivery.clean_options(options, CONTEXT)
    return NetworkDelivery(ServerAddress(server.server_name, HOST, server.port), cleaned, CONTEXT)
