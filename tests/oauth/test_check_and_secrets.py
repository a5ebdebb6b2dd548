"""The connection check with OAuth, and tokens and secrets kept out of every log, error and repr."""

from __future__ import annotations

import base64
import logging
import re

from plugins.oauth_tokens import TOKENS, config_from_options
from smtpsite.delivery import DeliveryError
from tests.oauth.conftest import CLIENT_SECRET, MAILBOX, MS_REFUSAL
from tests.oauth.helpers import google_options, make, microsoft_options
from tests.plugins.conftest import outgoing


def commands(transcript: list[str]) -> list[str]:
    return [re.sub(r"[ :].*", "", line[2:]) for line in transcript if line.startswith("> ")]


def test_check_fetches_a_new_token_and_signs_in(endpoint, start_oauth_server):
    server = start_oauth_server()
    plugin = make(server, microsoft_options(endpoint))
    plugin.open()  # a token is now cached
    plugin.close()
    result = plugin.check("sender@contoso.example", "to@example.com")
    assert result.ok, result.message
    # The check asks for a new token even though one is cached.
    assert len(endpoint.requests) == 2
    assert commands(result.transcript) == ["OAuth", "connect", "EHLO", "AUTH", "MAIL", "RCPT",
                                           "RSET", "QUIT"]
    text = "\n".join(result.transcript)
    assert f"> OAuth token for {MAILBOX}: client credentials grant at {endpoint.url}" in text
    assert "< new token (hidden), valid for 3600 s" in text
    assert f"> AUTH XOAUTH2 as {MAILBOX} (token hidden)" in text and "< 235" in text
    assert server.messages == []


def test_check_shows_the_token_endpoints_error(endpoint, start_oauth_server):
    server = start_oauth_server()
    result = make(server, microsoft_options(endpoint, client_secret="Wr0ng~secret-value-3kq9")).check(
        "sender@contoso.example", "to@example.com")
    assert not result.ok
    assert "invalid_client: AADSTS7000215: Invalid client secret provided" in result.message
    last = result.transcript[-1]
    assert last.startswith("< the token endpoint") and "AADSTS7000215" in last
    assert server.handler.connections == 0


def test_check_shows_the_servers_refusal(endpoint, start_oauth_server):
    server = start_oauth_server()
    endpoint.mailbox_access.clear()
    result = make(server, microsoft_options(endpoint)).check("sender@contoso.example", "to@example.com")
    assert not result.ok and MS_REFUSAL in result.message
    assert f"> AUTH XOAUTH2 as {MAILBOX} (token hidden)" in result.transcript
    assert "SMTP.SendAsApp" in result.message


def test_no_token_or_secret_in_logs_errors_transcripts_or_reprs(endpoint, start_oauth_server,
                                                               service_account, caplog):
    caplog.set_level(logging.DEBUG)
    ms = start_oauth_server()
    google = start_oauth_server(style="google", mechanisms=("OAUTHBEARER",))
    texts: list[str] = []
    plugin = make(ms, microsoft_options(endpoint))
    results = plugin.send_messages([outgoing()])
    endpoint.revoke_all()  # refused, renewed, retried
    results += plugin.send_messages([outgoing()])
    check = plugin.check("sender@contoso.example", "to@example.com")
    texts += [repr(plugin), str(plugin), repr(results), repr(check), *check.transcript,
              repr(TOKENS), repr(config_from_options(plugin.options))]
    g_plugin = make(google, google_options(endpoint, service_account.pem))
    results = g_plugin.send_messages([outgoing()])
    endpoint.revoke_all()
    results += g_plugin.send_messages([outgoing()])
    g_check = g_plugin.check("sender@contoso.example", "to@example.com")
    texts += [repr(g_plugin), repr(results), repr(g_check), *g_check.transcript,
              repr(config_from_options(g_plugin.options))]
    assert all(r.ok for r in results) and check.ok and g_check.ok
    # Failures: a wrong secret, an echoing endpoint, a token the server refuses.
    endpoint.echo_secret = True
    for options in (microsoft_options(endpoint, client_secret="Wr0ng~secret-value-3kq9"),):
        failing = make(ms, options)
        try:
            failing.send_messages([outgoing()])
        except DeliveryError as exc:
            texts += [str(exc), repr(exc)]
        texts += [failing.check("a@contoso.example", "b@example.com").message]
    endpoint.mailbox_access.clear()
    TOKENS.clear()
    try:
        plugin.send_messages([outgoing()])
    except DeliveryError as exc:
        texts += [str(exc), repr(exc)]
    assert len(texts) > 20 and any("AADSTS7000215" in t for t in texts)

    tokens = list(endpoint.tokens)
    assert len(tokens) >= 6
    sasl = []
    for token in tokens:
        sasl.append(base64.b64encode(f"user={MAILBOX}\x01auth=Bearer {token}\x01\x01".encode()).decode())
    key_lines = [line for line in service_account.pem.splitlines() if not line.startswith("-----")]
    forbidden = [*tokens, *sasl, CLIENT_SECRET, "Wr0ng~secret-value-3kq9", *key_lines]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged  # DEBUG logging did capture the run
    for secret in forbidden:
        assert secret not in logged, "a token or secret was logged"
        for text in texts:
            assert secret not in text, f"a token or secret shows in {text[:60]!r}"
