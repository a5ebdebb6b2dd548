"""The network plugin against real aiosmtpd servers: TLS, AUTH, refusals, drops and stalls."""

from __future__ import annotations

import re
import time

import pytest

from plugins.network import NetworkDelivery
from smtpsite.delivery import DeliveryError, OptionsError, OutgoingMessage, PluginContext, ServerAddress
from tests.plugins.conftest import SECRET, address_of, outgoing
from tests.smtpd import Behaviour, free_port

CONTEXT = PluginContext()
USERS = {"mailer": SECRET}


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelined"])
def pipelining(request) -> bool:
    """Whether the test server offers PIPELINING: each transaction test runs both ways."""
    return request.param


def make(server, **options) -> NetworkDelivery:
    options.setdefault("security", "none")
    options.setdefault("timeout", 5)
    cleaned = NetworkDelivery.clean_options(options, CONTEXT)
    return NetworkDelivery(address_of(server), cleaned, CONTEXT)


def send_one(server, message: OutgoingMessage | None = None, **options):
    [result] = make(server, **options).send_messages([message or outgoing()])
    return result


def open_error(server, **options) -> DeliveryError:
    plugin = make(server, **options)
    with pytest.raises(DeliveryError) as info:
        plugin.open()
    return info.value


def tls_options(certificate, security: str) -> dict:
    return {"security": security, "username": "mailer", "password": SECRET,
            "ca_file": str(certificate.cert_file)}


def test_plain_message_arrives_byte_for_byte(start_server, pipelining):
    server = start_server(behaviour=Behaviour(pipelining=pipelining))
    # Lines starting with "." are dot-stuffed on the wire and restored by the server.
    message = outgoing(body=".\n.leading dot\n..two dots\nend\n.")
    result = send_one(server, message)
    assert result.ok and result.code == 250 and result.refused == {}
    [received] = server.messages
    assert received.data == message.data
    assert received.mail_from == message.sender and received.rcpt_tos == list(message.recipients)


def test_message_without_a_final_line_break_arrives(start_server, pipelining):
    server = start_server(behaviour=Behaviour(pipelining=pipelining))
    data = b"Subject: raw\r\n\r\nno final newline"
    message = OutgoingMessage("<raw@example.com>", "a@example.com", ("b@example.com",), data)
    assert send_one(server, message).ok
    assert server.messages[0].data == data + b"\r\n"


def test_starttls_with_auth(start_server, certificate):
    server = start_server(tls="starttls", users=USERS)
    result = send_one(server, **tls_options(certificate, "starttls"))
    assert result.ok, result.error
    assert server.messages[0].auth_login == "mailer"


def test_implicit_tls_with_auth_verified_by_ca_file(start_server, certificate):
    server = start_server(tls="ssl", users=USERS)
    message = outgoing()
    result = send_one(server, message, **tls_options(certificate, "ssl"))
    assert result.ok, result.error
    assert server.messages[0].auth_login == "mailer"
    assert server.messages[0].data == message.data


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_untrusted_certificate_is_a_clear_error(start_server, security):
    server = start_server(tls=security)
    error = open_error(server, security=security)
    assert "CERTIFICATE_VERIFY_FAILED" in error.message or "certificate verify failed" in error.message
    assert not error.permanent and not error.after_data
    assert server.messages == []


def test_verification_can_be_turned_off(start_server):
    server = start_server(tls="ssl")
    assert send_one(server, security="ssl", verify_certificate=False).ok


def test_implicit_tls_against_a_plain_port_is_a_clear_error(smtp_server):
    error = open_error(smtp_server, security="ssl")
    assert "is the security mode right for this port?" in error.message


def test_starttls_against_a_server_without_it_is_a_clear_error(smtp_server):
    error = open_error(smtp_server, security="starttls")
    assert "does not offer STARTTLS" in error.message


def test_plain_against_an_implicit_tls_port_is_a_clear_error(start_server):
    server = start_server(tls="ssl")
    error = open_error(server, security="none", timeout=1)
    assert "timed out waiting for the server" in error.message
    assert "if this port expects implicit TLS" in error.message


def test_wrong_password_is_clear_and_never_shows_the_password(start_server, certificate):
    server = start_server(tls="starttls", users={"mailer": "the-right-one"})
    plugin = make(server, **tls_options(certificate, "starttls"))
    with pytest.raises(DeliveryError) as info:
        plugin.open()
    error = info.value
    assert "refused the sign-in: 535" in error.message
    for text in (str(error), repr(error), repr(plugin)):
        assert SECRET not in text
    check = plugin.check("a@example.com", "b@example.com")
    assert not check.ok and SECRET not in " ".join([check.message, *check.transcript])


@pytest.mark.parametrize("reply", ["421 4.3.2 shutting down", "451 4.3.0 try again later"])
def test_temporary_refusal_of_every_recipient_is_not_permanent(start_server, reply, pipelining):
    server = start_server(behaviour=Behaviour(rcpt_reply=reply, pipelining=pipelining))
    result = send_one(server, outgoing(recipients=("a@example.com", "b@example.com")))
    assert not result.ok
    assert not result.error.permanent and not result.error.after_data
    assert reply in result.error.message
    assert server.messages == []


def test_permanent_refusal_of_every_recipient_is_permanent(start_server, pipelining):
    server = start_server(behaviour=Behaviour(rcpt_reply="550 5.1.1 no such user",
                                              pipelining=pipelining))
    result = send_one(server, outgoing(recipients=("a@example.com", "b@example.com")))
    assert not result.ok and result.error.permanent and not result.error.after_data
    assert result.error.code == 550 and "refused every recipient" in result.error.message


def test_mixed_refusals_are_not_permanent(start_server, pipelining):
    server = start_server(behaviour=Behaviour(rcpt_replies={"a@example.com": "550 5.1.1 gone",
                                                            "b@example.com": "451 4.3.0 later"},
                                              pipelining=pipelining))
    result = send_one(server, outgoing(recipients=("a@example.com", "b@example.com")))
    assert not result.ok and not result.error.permanent


def test_some_recipients_refused_the_rest_get_it(start_server, pipelining):
    server = start_server(behaviour=Behaviour(rcpt_replies={"bad@example.com": "550 5.1.1 gone"},
                                              pipelining=pipelining))
    result = send_one(server, outgoing(recipients=("good@example.com", "bad@example.com")))
    assert result.ok
    assert result.refused == {"bad@example.com": (550, "5.1.1 gone")}
    assert server.messages[0].rcpt_tos == ["good@example.com"]


@pytest.mark.parametrize(("reply", "permanent"), [("451 4.3.0 queue full", False),
                                                  ("550 5.7.1 content rejected", True)])
def test_refusal_after_the_data(start_server, reply, permanent, pipelining):
    server = start_server(behaviour=Behaviour(data_reply=reply, pipelining=pipelining))
    result = send_one(server)
    assert not result.ok and result.error.permanent is permanent
    # A definite refusal: the server did not take it, so it is not "after data, uncertain".
    assert not result.error.after_data
    assert reply in result.error.message


def test_drop_before_the_data_is_safe_to_retry(start_server, pipelining):
    server = start_server(behaviour=Behaviour(drop_before_data=True, pipelining=pipelining))
    result = send_one(server)
    assert not result.ok and not result.error.after_data and not result.error.permanent
    assert server.messages == []


def test_drop_after_the_data_may_have_been_delivered(start_server, pipelining):
    server = start_server(behaviour=Behaviour(drop_after_data=True, pipelining=pipelining))
    result = send_one(server)
    assert not result.ok and result.error.after_data
    assert "no answer after the whole message was sent" in result.error.message


def test_stall_after_the_data_may_have_been_delivered(start_server, pipelining):
    server = start_server(behaviour=Behaviour(stall_after_data=3, pipelining=pipelining))
    result = send_one(server, timeout=1)
    assert not result.ok and result.error.after_data
    assert result.error.message.endswith(
        "gave no answer after the whole message was sent: timed out waiting for the server")


def test_silent_server_times_out_after_the_timeout_option(silent_server):
    plugin = make(silent_server, timeout=1)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as info:
        plugin.open()
    # Far below the 30-second default: shows the option is used, without timing anything tightly.
    assert time.monotonic() - started < 15
    assert "timed out waiting for the server" in info.value.message
    assert not info.value.after_data


def test_connection_refused():
    port = free_port()
    options = NetworkDelivery.clean_options({"security": "none", "timeout": 5}, CONTEXT)
    plugin = NetworkDelivery(ServerAddress(f"127.0.0.1:{port}", "127.0.0.1", port), options, CONTEXT)
    with pytest.raises(DeliveryError) as info:
        plugin.open()
    assert info.value.message.startswith(f"connection to 127.0.0.1:{port} failed")
    assert "refused" in info.value.message.lower() and not info.value.after_data


def test_batch_goes_over_one_connection_in_order(start_server, pipelining):
    server = start_server(behaviour=Behaviour(pipelining=pipelining))
    messages = [outgoing() for _ in range(4)]
    plugin = make(server)
    results = plugin.send_messages(messages)
    assert [r.message_id for r in results] == [m.message_id for m in messages]
    assert all(r.ok for r in results)
    assert [r.data for r in server.messages] == [m.data for m in messages]
    assert server.recorder.connections == 1
    # MAIL, RCPT and DATA went out together exactly when the server offered PIPELINING.
    assert server.recorder.pipelined == [pipelining] * 4


def test_a_refused_sender_leaves_the_connection_usable(start_server, pipelining):
    server = start_server(behaviour=Behaviour(mail_reply="451 4.3.0 sender later",
                                              pipelining=pipelining))
    plugin = make(server)
    results = plugin.send_messages([outgoing(), outgoing()])
    assert [r.ok for r in results] == [False, False]
    assert all("refused the sender: 451" in r.error.message for r in results)
    assert not any(r.error.permanent or r.error.after_data for r in results)
    assert server.recorder.connections == 1 and server.messages == []


def test_a_data_accepted_without_recipients_is_ended_empty_and_the_next_message_goes(
        start_server):
    # RFC 2920 says a server must refuse DATA when it accepted no recipient; this one does
    # not. The empty message that ends it delivers nothing, and the connection stays in step.
    server = start_server(behaviour=Behaviour(
        rcpt_replies={"bad@example.com": "550 5.1.1 gone"}, pipelining=True,
        data_without_recipients=True))
    bad, good = outgoing(recipients=("bad@example.com",)), outgoing()
    results = make(server).send_messages([bad, good])
    assert not results[0].ok and results[0].error.permanent and not results[0].error.after_data
    assert results[1].ok, results[1].error
    assert [m.data for m in server.messages] == [good.data]
    assert server.recorder.connections == 1


def test_an_address_that_would_end_the_command_is_refused(smtp_server):
    for sender, recipients in (("a@example.com\r\nRCPT TO:<x@example.com>", ("b@example.com",)),
                               ("a@example.com", ("b@example.com> NOTIFY=NEVER",))):
        message = OutgoingMessage("<hostile@test>", sender, recipients, b"Subject: x\r\n\r\nx\r\n")
        result = send_one(smtp_server, message)
        assert not result.ok and result.error.permanent
    assert smtp_server.messages == [] and smtp_server.recorder.pipelined == []


def test_a_broken_connection_fails_the_rest_of_the_batch_safely(start_server, pipelining):
    server = start_server(behaviour=Behaviour(drop_before_data=True, pipelining=pipelining))
    results = make(server).send_messages([outgoing(), outgoing()])
    assert [r.ok for r in results] == [False, False]
    assert all(not r.error.after_data for r in results)
    assert "connection broke on an earlier message" in results[1].error.message


def test_smtputf8_address_to_a_server_that_offers_it(start_server):
    server = start_server(smtputf8=True)
    message = outgoing(sender="jörg@example.com", recipients=("zoë@example.com",), smtputf8=True,
                       body="Grüße\n")
    result = send_one(server, message)
    assert result.ok, result.error
    [received] = server.messages
    assert received.mail_from == "jörg@example.com" and received.rcpt_tos == ["zoë@example.com"]
    assert "SMTPUTF8" in received.mail_options
    assert received.data == message.data


def test_smtputf8_address_to_a_server_without_it_is_a_clear_error(start_server):
    server = start_server(smtputf8=False)
    message = outgoing(sender="jörg@example.com", recipients=("zoë@example.com",), smtputf8=True)
    result = send_one(server, message)
    assert not result.ok and not result.error.permanent and not result.error.after_data
    assert "does not offer SMTPUTF8" in result.error.message
    assert server.messages == []


def test_check_hides_credentials_and_sends_nothing(start_server, certificate):
    server = start_server(tls="starttls", users=USERS)
    result = make(server, **tls_options(certificate, "starttls")).check("a@example.com",
                                                                        "b@example.com")
    assert result.ok, result.message
    transcript = "\n".join(result.transcript)
    assert SECRET not in transcript and SECRET not in result.message
    assert "AUTH as mailer (credentials hidden)" in transcript
    commands = [line for line in result.transcript if line.startswith("> ")]
    assert [re.sub(r"[ :].*", "", c[2:]) for c in commands] == [
        "connect", "EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "RSET", "QUIT",
    ]
    assert server.messages == []


def test_options_are_validated(tmp_path):
    def errors(options):
        with pytest.raises(OptionsError) as info:
            NetworkDelivery.clean_options(options, CONTEXT)
        return info.value.errors

    assert errors({"security": "tls"}) == {"security": "must be one of: none, starttls, ssl"}
    assert errors({"password": SECRET}) == {"username": "is required when a password is set"}
    assert errors({"ca_file": "relative.pem"}) == {"ca_file": "must be an absolute path"}
    assert errors({"ca_file": str(tmp_path / "none.pem")}) == {
        "ca_file": "does not exist or is not a file"
    }
    assert errors({"timeout": "0.5"}) == {"timeout": "must be at least 1"}
    assert errors({"helo_name": "bad name!"}) == {"helo_name": "must be a host name"}
