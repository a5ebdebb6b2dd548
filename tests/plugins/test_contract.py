"""The plugin contract kit (smtpsite.testing) run against every built-in delivery plugin."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from plugins.network import NetworkDelivery
from plugins.pickup import PickupDelivery
from plugins.sendmail import SendmailDelivery
from smtpsite.delivery import (
    CheckResult,
    DeliveryMethod,
    DeliveryResult,
    Field,
    PluginContext,
    ServerAddress,
)
from smtpsite.testing import DeliveryMethodContract, ReceivedMail
from tests.plugins.conftest import SECRET
from tests.smtpd import HOST, TestServer


class _ServerMailbox:
    """Reads the mailbox of an aiosmtpd test server started by the test class."""

    server: TestServer

    def get_mailbox_content(self) -> list[ReceivedMail]:
        return [ReceivedMail(m.mail_from, tuple(m.rcpt_tos), m.data) for m in self.server.messages]

    def flush_mailbox(self) -> None:
        self.server.recorder.messages.clear()


class TestNetworkContract(_ServerMailbox, DeliveryMethodContract):
    plugin_class = NetworkDelivery

    @pytest.fixture(autouse=True)
    def _server(self, start_server, certificate):
        self.certificate = certificate
        # Implicit TLS: tests/smtpd.py counts a STARTTLS connection twice (the upgrade calls
        # connection_made again), which would spoil the one-connection check.
        self.server = start_server(tls="ssl", users={"mailer": SECRET})

    def valid_options(self):
        return {"security": "ssl", "username": "mailer", "password": SECRET,
                "ca_file": str(self.certificate.cert_file), "timeout": 5}

    def server_address(self):
        return ServerAddress(self.server.server_name, HOST, self.server.port)

    def connections_seen(self):
        return self.server.recorder.connections

    def invalid_options(self):
        return [({"password": SECRET, "username": ""}, "username", "is required"),
                ({"ca_file": "cert.pem"}, "ca_file", "absolute")]


class TestPickupContract(DeliveryMethodContract):
    plugin_class = PickupDelivery

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path):
        self.root = tmp_path / "root"
        self.folder = self.root / "mail"
        self.folder.mkdir(parents=True)
        (tmp_path / "outside").mkdir()
        self.outside = tmp_path / "outside"

    def plugin_context(self):
        return PluginContext(config={"SMTPSITE_PICKUP_ROOTS": (self.root,)})

    def valid_options(self):
        return {"directory": str(self.folder)}

    def get_mailbox_content(self) -> list[ReceivedMail]:
        mails = []
        for path in self.folder.iterdir():
            assert path.suffix == ".eml" and not path.name.startswith("."), f"stray file {path}"
            data = path.read_bytes()
            sender, recipients = "", []
            while data.startswith((b"X-Sender: ", b"X-Receiver: ")):
                line, data = data.split(b"\r\n", 1)
                name, value = line.decode().split(": ", 1)
                if name == "X-Sender":
                    sender = value
                else:
                    recipients.append(value)
            mails.append(ReceivedMail(sender, tuple(recipients), data))
        return mails

    def flush_mailbox(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()

    def invalid_options(self):
        return [({"directory": str(self.outside)}, "directory", "allowed pickup roots"),
                ({"directory": "mail"}, "directory", "absolute"),
                ({"use_ssl": "true"}, "use_ssl", "does not use TLS")]


class TestSendmailContract(_ServerMailbox, DeliveryMethodContract):
    plugin_class = SendmailDelivery

    @pytest.fixture(autouse=True)
    def _relay(self, smtp_server, msmtp_wrapper):
        self.server = smtp_server
        self.program = msmtp_wrapper(smtp_server)

    def valid_options(self):
        return {"path": str(self.program), "timeout": 20}

    def invalid_options(self):
        return [({"path": "sendmail"}, "path", "absolute"),
                ({"path": str(self.program.parent / "missing")}, "path", "does not exist")]


# -- the kit itself must catch broken plugins ---------------------------------------------
class MemoryDelivery(DeliveryMethod):
    """A correct in-memory plugin: a mailbox list and a connection counter."""

    name = "memory"
    label = "Memory"
    fields = (Field("token", "Token", required=True, secret=True),
              Field("limit", "Limit", "integer", default=10, min_value=1))
    mailbox: ClassVar[list[ReceivedMail]] = []
    connections: ClassVar[int] = 0

    def __init__(self, server, options, context):
        super().__init__(server, options, context)
        self.connected = False

    def open(self):
        if self.connected:
            return False
        MemoryDelivery.connections += 1
        self.connected = True
        return True

    def close(self):
        self.connected = False

    def send_messages(self, messages):
        if not messages:
            return []
        opened = self.open()
        try:
            for m in messages:
                self.mailbox.append(ReceivedMail(m.sender, m.recipients, m.data))
            return [DeliveryResult(m.message_id, True) for m in messages]
        finally:
            if opened:
                self.close()

    def check(self, sender, recipient):
        return CheckResult(True, "fine")


class MemoryContract(DeliveryMethodContract):
    """Not collected (no Test prefix): the tests below call its checks one by one."""

    plugin_class = MemoryDelivery

    def valid_options(self):
        return {"token": "memory-token-7c1d"}

    def get_mailbox_content(self):
        return list(MemoryDelivery.mailbox)

    def flush_mailbox(self):
        MemoryDelivery.mailbox.clear()

    def connections_seen(self):
        return MemoryDelivery.connections


class LeakyRepr(MemoryDelivery):
    # Options hold secrets as Secret objects, so only an explicit reveal() can leak one.
    def __repr__(self):
        return f"<LeakyRepr token={self.options['token'].reveal()}>"


class ConnectionPerMessage(MemoryDelivery):
    def send_messages(self, messages):
        results = []
        for m in messages:
            MemoryDelivery.connections += 1
            self.mailbox.append(ReceivedMail(m.sender, m.recipients, m.data))
            results.append(DeliveryResult(m.message_id, True))
        return results


class CheckThatSends(MemoryDelivery):
    def check(self, sender, recipient):
        self.mailbox.append(ReceivedMail(sender, (recipient,), b"Subject: check\r\n\r\n"))
        return CheckResult(True, "sent a test message")


class EchoingValidation(MemoryDelivery):
    @classmethod
    def validate(cls, options, context):
        token = options["token"].reveal()
        if not token.startswith("memory-"):
            return {"token": f"{token!r} does not look like a memory token"}
        return {}


class EmptyBatchConnects(MemoryDelivery):
    def send_messages(self, messages):
        self.open()
        return super().send_messages(messages)


class ReorderedResults(MemoryDelivery):
    def send_messages(self, messages):
        return list(reversed(super().send_messages(messages)))


class DuplicateField(MemoryDelivery):
    fields = (*MemoryDelivery.fields, Field("limit", "Limit again", "integer"))


class AcceptsAnything(MemoryDelivery):
    @classmethod
    def clean_options(cls, options, context):
        return {"token": options.get("token"), "limit": 10}


def run_check(plugin_class, check: str) -> None:
    MemoryDelivery.mailbox.clear()
    contract = type("Contract", (MemoryContract,), {"plugin_class": plugin_class})()
    getattr(contract, check)()


def test_the_kit_passes_a_correct_plugin():
    for check in [n for n in dir(DeliveryMethodContract) if n.startswith("test_")]:
        run_check(MemoryDelivery, check)


@pytest.mark.parametrize(("plugin_class", "check", "complaint"), [
    (LeakyRepr, "test_secrets_not_in_repr", "secret option value appears in repr"),
    (ConnectionPerMessage, "test_batch_over_one_connection", "did not share one connection"),
    (CheckThatSends, "test_check_sends_nothing", "the check delivered something"),
    (EchoingValidation, "test_secrets_not_in_option_errors", "appears in an OptionsError"),
    (EmptyBatchConnects, "test_empty_batch_sends_nothing", "an empty batch opened a connection"),
    (ReorderedResults, "test_batch_over_one_connection", "in the order of the messages"),
    (DuplicateField, "test_fields_are_valid_and_unique", "field names must be unique"),
    (AcceptsAnything, "test_unknown_option_rejected", "accepted invalid options"),
    (AcceptsAnything, "test_required_options_enforced", "accepted invalid options"),
])
def test_the_kit_catches_a_broken_plugin(plugin_class, check, complaint):
    with pytest.raises(AssertionError, match=complaint):
        run_check(plugin_class, check)
