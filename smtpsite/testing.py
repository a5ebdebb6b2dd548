"""A contract test kit for delivery plugins: the checks every plugin, built-in or not, must pass.

Subclass :class:`DeliveryMethodContract` in a pytest test class (its name must start with
``Test``), say which plugin it tests, give options that work and a way to read what was
delivered, and pytest runs every ``test_*`` check of the kit against the plugin::

    import pytest
    from smtpsite.testing import DeliveryMethodContract, ReceivedMail

    class TestMaildirContract(DeliveryMethodContract):
        plugin_class = MaildirDelivery

        @pytest.fixture(autouse=True)
        def _folder(self, tmp_path):
            self.folder = tmp_path

        def valid_options(self):
            return {"folder": str(self.folder), "api_token": "contract-token-1234"}

        def get_mailbox_content(self):
            return [parse(p.read_bytes()) for p in self.folder.iterdir()]

        def flush_mailbox(self):
            for p in self.folder.iterdir():
                p.unlink()

The kit needs no Flask app: plugins are built from :mod:`smtpsite.delivery` alone. Give
secret options distinctive values (at least 8 characters) so that the kit can prove they
never leak into ``repr`` or error messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, localtime, make_msgid
from typing import Any, ClassVar

from smtpsite.delivery import (
    CheckResult,
    DeliveryMethod,
    DeliveryResult,
    Field,
    OptionsError,
    OutgoingMessage,
    PluginContext,
    ServerAddress,
)

__all__ = ["DeliveryMethodContract", "ReceivedMail", "same_message"]

_UNKNOWN_OPTION = "contract_no_such_option"
# A value of the wrong kind for each field type, to provoke a validation message.
_BAD_VALUES: dict[str, Any] = {
    "string": "two\nlines",
    "path": "two\nlines",
    "text": "nul\x00byte",
    "integer": "not a number",
    "float": "not a number",
    "boolean": "perhaps",
    "choice": "contract-no-such-choice",
}
_EOL = re.compile(rb"\r\n|\n|\r")


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the receiving end saw it: the envelope and the bytes."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes


def same_message(sent: bytes, received: bytes) -> bool:
    """Whether two messages are the same bytes, ignoring line-end style and a final newline."""
    return _EOL.sub(b"\n", sent).rstrip(b"\n") == _EOL.sub(b"\n", received).rstrip(b"\n")


class DeliveryMethodContract:
    """Checks a delivery plugin against the contract; subclass it in a ``Test...`` class.

    Set :attr:`plugin_class` and implement :meth:`valid_options`,
    :meth:`get_mailbox_content` and :meth:`flush_mailbox`; override the other hooks where
    the defaults do not fit.
    """

    #: The plugin under test.
    plugin_class: ClassVar[type[DeliveryMethod]]
    #: Envelope used for the messages the kit sends.
    sender: ClassVar[str] = "contract-sender@example.com"
    recipients: ClassVar[tuple[str, ...]] = ("contract-to@example.com", "contract-bcc@example.com")
    #: How many messages the batch check sends.
    batch_size: ClassVar[int] = 3

    # -- hooks -----------------------------------------------------------------------
    def valid_options(self) -> dict[str, Any]:
        """Options with which the plugin delivers to the mailbox the kit reads."""
        raise NotImplementedError("a contract test class must define valid_options()")

    def get_mailbox_content(self) -> list[ReceivedMail]:
        """Every message delivered since the last :meth:`flush_mailbox`."""
        raise NotImplementedError("a contract test class must define get_mailbox_content()")

    def flush_mailbox(self) -> None:
        """Forget every message delivered so far."""
        raise NotImplementedError("a contract test class must define flush_mailbox()")

    def plugin_context(self) -> PluginContext:
        """The context plugins are built with (configuration such as pickup roots)."""
        return PluginContext()

    def server_address(self) -> ServerAddress:
        """The server record's address handed to the plugin."""
        return ServerAddress("localhost:25", "localhost", 25)

    def connections_seen(self) -> int | None:
        """Connections the receiving end has accepted so far; None if that means nothing.

        Return None for a transport without connections (files, one program per message);
        then the kit cannot check that a batch shares one connection.
        """
        return None

    def invalid_options(self) -> Iterable[tuple[dict[str, Any], str, str]]:
        """Plugin-specific bad options: ``(changes to valid_options, field, text in message)``."""
        return ()

    def make_message(self, index: int) -> OutgoingMessage:
        """The ``index``-th test message; a body line starts with a dot, as some always do."""
        msg = EmailMessage(policy=policy.SMTP)
        msg["From"] = self.sender
        msg["To"] = self.recipients[0]
        msg["Subject"] = f"Contract message {index}"
        msg["Message-ID"] = make_msgid(domain="contract.example.com")
        msg["Date"] = format_datetime(localtime())
        msg.set_content(f"Message number {index}.\n.a line that starts with a dot\nThe end.\n",
                        cte="7bit")
        return OutgoingMessage(msg["Message-ID"], self.sender, tuple(self.recipients),
                               msg.as_bytes())

    # -- helpers ---------------------------------------------------------------------
    def clean(self, options: dict[str, Any]) -> dict[str, Any]:
        """Run the plugin's option cleaning with the kit's context."""
        return self.plugin_class.clean_options(options, self.plugin_context())

    def make_plugin(self, **changes: Any) -> DeliveryMethod:
        """A plugin instance built from :meth:`valid_options` with ``changes`` applied."""
        options = self.clean({**self.valid_options(), **changes})
        return self.plugin_class(self.server_address(), options, self.plugin_context())

    def expect_options_error(self, options: dict[str, Any]) -> OptionsError:
        """Clean ``options`` and return the ``OptionsError`` it must raise."""
        try:
            self.clean(options)
        except OptionsError as exc:
            return exc
        raise AssertionError(f"{self.plugin_class.__name__} accepted invalid options")

    def secret_values(self) -> list[str]:
        """The values of secret options in :meth:`valid_options`, as plain strings."""
        options = self.valid_options()
        values = []
        for name in self.plugin_class.secret_fields():
            value = options.get(name)
            value = value.reveal() if hasattr(value, "reveal") else value
            if value:
                values.append(str(value))
        return values

    def assert_no_secret(self, text: str, secrets: Iterable[str], where: str) -> None:
        """Fail if any of ``secrets`` appears in ``text``."""
        for secret in secrets:
            assert secret not in text, f"a secret option value appears in {where}"

    def assert_delivered(self, sent: list[OutgoingMessage]) -> None:
        """Every sent message arrived once, with its envelope and its bytes."""
        received = self.get_mailbox_content()
        assert len(received) == len(sent), f"sent {len(sent)} messages, {len(received)} arrived"
        for message in sent:
            matches = [r for r in received if same_message(message.data, r.data)]
            assert len(matches) == 1, f"{message.message_id} did not arrive exactly once, intact"
            assert matches[0].sender == message.sender, (
                f"{message.message_id}: envelope sender {matches[0].sender!r}, expected {message.sender!r}"
            )
            assert sorted(matches[0].recipients) == sorted(message.recipients), (
                f"{message.message_id}: envelope recipients {matches[0].recipients!r}, "
                f"expected {message.recipients!r}"
            )

    # -- the contract: declarations -------------------------------------------------
    def test_name_and_label(self) -> None:
        cls = self.plugin_class
        assert isinstance(cls.name, str) and re.fullmatch(r"[a-z][a-z0-9_.-]*", cls.name), (
            "name must be a short lower-case identifier, e.g. 'maildir'"
        )
        assert isinstance(cls.label, str) and cls.label.strip(), "label must be set"
        assert isinstance(cls.description, str), "description must be a string"

    def test_fields_are_valid_and_unique(self) -> None:
        fields = self.plugin_class.fields
        assert isinstance(fields, tuple), "fields must be a tuple of Field"
        names = [f.name for f in fields]
        assert all(isinstance(f, Field) for f in fields), "every field must be a Field"
        assert len(names) == len(set(names)), "field names must be unique"
        for fld in fields:
            assert fld.label.strip(), f"field {fld.name!r} needs a label"
            if fld.default is not None:
                assert fld.coerce(fld.default) == fld.default, (
                    f"field {fld.name!r}: the default is not a valid value of the field"
                )
            if fld.show_if is not None:
                assert fld.show_if[0] in names, f"field {fld.name!r}: show_if names no field"
            assert not (fld.secret and fld.default), f"secret field {fld.name!r} has a default"

    def test_valid_options_clean_and_clean_again_unchanged(self) -> None:
        cleaned = self.clean(self.valid_options())
        assert set(cleaned) == {f.name for f in self.plugin_class.fields}, (
            "clean_options must return a value (or the default) for every declared field"
        )
        # Stored options are cleaned again before every send: cleaning must be stable.
        assert self.clean(cleaned) == cleaned, "cleaning cleaned options changed them"

    # -- the contract: option validation -------------------------------------------
    def test_unknown_option_rejected(self) -> None:
        error = self.expect_options_error({**self.valid_options(), _UNKNOWN_OPTION: "1"})
        assert error.errors.get(_UNKNOWN_OPTION), "an unknown option needs a message of its own"

    def test_required_options_enforced(self) -> None:
        for fld in self.plugin_class.fields:
            if not fld.required or fld.show_if is not None:
                continue
            options = {k: v for k, v in self.valid_options().items() if k != fld.name}
            error = self.expect_options_error(options)
            assert error.errors.get(fld.name), f"missing {fld.name!r}: no message for the field"

    def test_each_field_rejects_a_bad_value_with_a_message(self) -> None:
        for fld in self.plugin_class.fields:
            error = self.expect_options_error({**self.valid_options(), fld.name: _BAD_VALUES[fld.type]})
            message = error.errors.get(fld.name)
            assert message and message.strip(), f"bad {fld.name!r}: no message for the field"

    def test_plugin_specific_invalid_options(self) -> None:
        for changes, field_name, text in self.invalid_options():
            error = self.expect_options_error({**self.valid_options(), **changes})
            assert text in error.errors.get(field_name, ""), (
                f"{changes!r}: expected {text!r} in the message for {field_name!r}, "
                f"got {error.errors!r}"
            )

    # -- the contract: secrets ------------------------------------------------------
    def test_secrets_not_in_repr(self) -> None:
        plugin = self.make_plugin()
        self.assert_no_secret(repr(plugin), self.secret_values(), "repr(plugin)")
        self.assert_no_secret(str(plugin), self.secret_values(), "str(plugin)")

    def test_secrets_not_in_option_errors(self) -> None:
        secret_fields = self.plugin_class.secret_fields()
        needle = "contract-secret-value-5f2c"
        bad = {f.name: _BAD_VALUES[f.type] for f in self.plugin_class.fields if not f.secret}
        attempts = [
            {**self.valid_options(), **dict.fromkeys(secret_fields, needle), _UNKNOWN_OPTION: "x"},
            # A secret the plugin itself rejects (a wrong format) must not be echoed either.
            {**self.valid_options(), **dict.fromkeys(secret_fields, needle)},
            {**self.valid_options(), **bad, **dict.fromkeys(secret_fields, needle)},
            # A secret that is itself invalid must not be echoed in its own message.
            {**self.valid_options(), **dict.fromkeys(secret_fields, needle + "\n\x00")},
        ]
        for options in attempts:
            try:
                self.clean(options)
            except OptionsError as exc:
                for text in (str(exc), repr(exc), repr(exc.errors)):
                    self.assert_no_secret(text, [needle, *self.secret_values()], "an OptionsError")

    def test_secrets_not_in_check_result(self) -> None:
        result = self.make_plugin().check(self.sender, self.recipients[0])
        text = " ".join([result.message, *result.transcript, repr(result.details)])
        self.assert_no_secret(text, self.secret_values(), "the check result")

    # -- the contract: sending ------------------------------------------------------
    def test_empty_batch_sends_nothing(self) -> None:
        self.flush_mailbox()
        before = self.connections_seen()
        assert self.make_plugin().send_messages([]) == [], "an empty batch must return []"
        assert self.get_mailbox_content() == [], "an empty batch delivered something"
        assert self.connections_seen() == before, "an empty batch opened a connection"

    def test_batch_over_one_connection(self) -> None:
        self.flush_mailbox()
        before = self.connections_seen()
        messages = [self.make_message(i) for i in range(self.batch_size)]
        plugin = self.make_plugin()
        with plugin:
            results = plugin.send_messages(messages)
            assert plugin.open() is False, "open() on an open connection must return False"
        plugin.close()  # closing twice is harmless
        assert all(isinstance(r, DeliveryResult) for r in results), "results must be DeliveryResult"
        assert [r.message_id for r in results] == [m.message_id for m in messages], (
            "one result per message, in the order of the messages"
        )
        assert all(r.ok for r in results), f"not sent: {[r.error for r in results if not r.ok]}"
        self.assert_delivered(messages)
        if before is not None:
            assert self.connections_seen() - before == 1, "the batch did not share one connection"

    def test_send_without_open_opens_and_closes(self) -> None:
        self.flush_mailbox()
        message = self.make_message(0)
        results = self.make_plugin().send_messages([message])
        assert len(results) == 1 and results[0].ok, f"expected one sent result, got {results!r}"
        self.assert_delivered([message])

    def test_check_sends_nothing(self) -> None:
        self.flush_mailbox()
        result = self.make_plugin().check(self.sender, self.recipients[0])
        assert isinstance(result, CheckResult), "check() must return a CheckResult"
        assert result.ok, f"the check failed with valid options: {result.message}"
        assert result.message.strip(), "the check result needs a message"
        assert self.get_mailbox_content() == [], "the check delivered something"
