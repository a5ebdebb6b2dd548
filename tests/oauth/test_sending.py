"""OAuth sign-in of the network plugin against a local token endpoint and real aiosmtpd servers."""

from __future__ import annotations

import threading

import pytest

from plugins.oauth_tokens import TOKENS
from smtpsite.delivery import DeliveryError
from tests.oauth.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    GOOGLE_REFUSAL,
    GOOGLE_SCOPE,
    JWT_BEARER,
    MAILBOX,
    MS_REFUSAL,
    MS_SCOPE,
    SA_EMAIL,
    SA_KEY_ID,
)
from tests.oauth.helpers import google_options, make, microsoft_options
from tests.plugins.conftest import outgoing
from tests.smtpd import free_port


def send(server, options):
    [result] = make(server, options).send_messages([outgoing()])
    return result


def refused(server, options) -> DeliveryError:
    """The error raised by a send that fails before any message goes out (at sign-in)."""
    with pytest.raises(DeliveryError) as info:
        make(server, options).send_messages([outgoing()])
    error = info.value
    assert not error.after_data and not error.permanent
    return error


def test_first_send_fetches_a_token_and_later_sends_reuse_it(endpoint, start_oauth_server):
    server = start_oauth_server()
    first, second = outgoing(), outgoing()
    assert make(server, microsoft_options(endpoint)).send_messages([first])[0].ok
    assert len(endpoint.requests) == 1
    request = endpoint.requests[0]
    assert request["grant_type"] == "client_credentials" and request["scope"] == MS_SCOPE
    # Microsoft takes the secret in the form body.
    assert request["client_id"] == CLIENT_ID and request["client_secret"] == CLIENT_SECRET
    # A new plugin and a new connection: the cached token serves it.
    assert make(server, microsoft_options(endpoint)).send_messages([second])[0].ok
    assert len(endpoint.requests) == 1
    assert [m.data for m in server.messages] == [first.data, second.data]
    assert [m.auth_login for m in server.messages] == [("XOAUTH2", MAILBOX)] * 2
    assert server.handler.connections == 2


def test_a_token_about_to_expire_is_renewed(endpoint, start_oauth_server):
    server = start_oauth_server()
    # Within the renewal margin from the start: never reused.
    endpoint.lifetime = 30
    assert send(server, microsoft_options(endpoint)).ok
    assert send(server, microsoft_options(endpoint)).ok
    assert len(endpoint.requests) == 2
    assert len(server.messages) == 2


def test_a_revoked_token_is_renewed_once_and_the_send_retried(endpoint, start_oauth_server):
    server = start_oauth_server()
    assert send(server, microsoft_options(endpoint)).ok
    endpoint.revoke_all()
    result = send(server, microsoft_options(endpoint))
    assert result.ok, result.error
    assert len(endpoint.requests) == 2
    assert [ok for _, _, ok in server.handler.auth_attempts] == [True, False, True]
    assert len(server.messages) == 2


def test_a_new_token_refused_by_the_server_is_not_fetched_again(endpoint, start_oauth_server):
    server = start_oauth_server()
    endpoint.mailbox_access[CLIENT_ID] = set()  # no Add-MailboxPermission for the app
    error = refused(server, microsoft_options(endpoint))
    assert MS_REFUSAL in error.message
    assert "Add-MailboxPermission" in error.message and MAILBOX in error.message
    assert len(endpoint.requests) == 1 and len(server.handler.auth_attempts) == 1
    assert server.messages == []


def test_a_wrong_client_secret_is_the_providers_error_and_sends_nothing(endpoint, start_oauth_server):
    server = start_oauth_server()
    wrong = "Wr0ng~secret-value-3kq9"
    message = refused(server, microsoft_options(endpoint, client_secret=wrong)).message
    assert "invalid_client" in message and "AADSTS7000215" in message
    assert message.startswith(f"no OAuth token for {MAILBOX}: the token endpoint {endpoint.url}")
    assert wrong not in message and CLIENT_SECRET not in message
    # The token comes first: the SMTP server never saw a connection.
    assert server.handler.connections == 0 and server.messages == []


def test_an_unknown_application_and_a_wrong_scope_show_the_providers_error(endpoint, start_oauth_server):
    server = start_oauth_server()
    error = refused(server, microsoft_options(endpoint, client_id="00000000-0000-0000-0000-000000000000"))
    assert "unauthorized_client: AADSTS700016" in error.message
    error = refused(server, microsoft_options(endpoint, scope="https://graph.microsoft.com/mail/.default"))
    assert "invalid_scope: AADSTS1002012" in error.message
    assert server.messages == []


def test_an_unreachable_token_endpoint_is_a_clear_error(endpoint, start_oauth_server):
    server = start_oauth_server()
    url = f"http://127.0.0.1:{free_port()}/t/oauth2/v2.0/token"
    error = refused(server, microsoft_options(endpoint, token_endpoint=url))
    assert f"the token endpoint {url} failed" in error.message
    assert server.handler.connections == 0


def test_an_endpoint_that_echoes_the_secret_is_scrubbed(endpoint, start_oauth_server):
    server = start_oauth_server()
    endpoint.echo_secret = True
    wrong = "Echoed~secret-value-81xz"
    error = refused(server, microsoft_options(endpoint, client_secret=wrong))
    assert "invalid_client" in error.message and "Received: [hidden]" in error.message
    assert wrong not in error.message


def test_google_jwt_grant_with_a_pem_key(endpoint, start_oauth_server, service_account):
    server = start_oauth_server(style="google", mechanisms=("XOAUTH2", "OAUTHBEARER"))
    assert send(server, google_options(endpoint, service_account.pem)).ok
    [request] = endpoint.requests
    assert request["grant_type"] == JWT_BEARER and "client_secret" not in request
    [(header, claims)] = endpoint.assertions
    assert header["alg"] == "RS256"
    assert claims["iss"] == SA_EMAIL and claims["sub"] == MAILBOX
    assert claims["scope"] == GOOGLE_SCOPE and claims["aud"] == endpoint.google_url
    assert 0 < claims["exp"] - claims["iat"] <= 3600
    assert server.messages[0].auth_login == ("XOAUTH2", MAILBOX)


def test_google_jwt_grant_with_the_json_key_file(endpoint, start_oauth_server, service_account):
    server = start_oauth_server(style="google")
    options = google_options(endpoint, service_account.json_key)
    del options["client_id"]  # read from the key file's client_email
    assert send(server, options).ok
    [(header, claims)] = endpoint.assertions
    assert header["kid"] == SA_KEY_ID and claims["iss"] == SA_EMAIL
    # Every fetch signs a new assertion (a fresh jti), never a replay.
    TOKENS.clear()
    assert send(server, options).ok
    assert endpoint.assertions[0][1]["jti"] != endpoint.assertions[1][1]["jti"]


def test_google_refuses_a_mailbox_without_delegation(endpoint, start_oauth_server, service_account):
    server = start_oauth_server(style="google")
    error = refused(server, google_options(endpoint, service_account.pem, mailbox="other@contoso.example"))
    assert "unauthorized_client: Client is unauthorized" in error.message
    assert server.handler.connections == 0


def test_google_style_refusal_shows_the_servers_reason(endpoint, start_oauth_server, service_account):
    server = start_oauth_server(style="google")
    server.handler.refused_mailboxes.add(MAILBOX)
    message = refused(server, google_options(endpoint, service_account.pem)).message
    assert GOOGLE_REFUSAL in message and '"status": "401"' in message
    assert "domain-wide delegation" in message


def test_google_style_revoked_token_is_renewed(endpoint, start_oauth_server, service_account):
    server = start_oauth_server(style="google")
    assert send(server, google_options(endpoint, service_account.pem)).ok
    endpoint.revoke_all()
    assert send(server, google_options(endpoint, service_account.pem)).ok
    assert len(endpoint.requests) == 2 and len(server.messages) == 2


def test_oauthbearer_where_the_server_offers_only_that(endpoint, start_oauth_server):
    server = start_oauth_server(style="google", mechanisms=("OAUTHBEARER",))
    assert send(server, microsoft_options(endpoint)).ok
    endpoint.revoke_all()
    # The refusal is an RFC 7628 error challenge: the client answers ^A, then renews.
    assert send(server, microsoft_options(endpoint)).ok
    assert server.handler.auth_attempts == [("OAUTHBEARER", MAILBOX, True),
                                            ("OAUTHBEARER", MAILBOX, False),
                                            ("OAUTHBEARER", MAILBOX, True)]
    assert len(server.messages) == 2


def test_starttls_then_oauth(endpoint, start_oauth_server, certificate):
    server = start_oauth_server(tls="starttls")
    options = microsoft_options(endpoint, security="starttls", ca_file=str(certificate.cert_file))
    assert send(server, options).ok
    # Exchange Online offers AUTH only after STARTTLS: say so.
    plugin = make(server, microsoft_options(endpoint))
    with pytest.raises(DeliveryError, match="offers no sign-in .*choose security 'starttls'"):
        plugin.open()


def test_a_server_without_oauth_mechanisms_is_a_clear_error(endpoint, start_oauth_server):
    server = start_oauth_server(mechanisms=("LOGIN", "PLAIN"))
    with pytest.raises(DeliveryError) as info:
        make(server, microsoft_options(endpoint)).open()
    assert "offers no OAuth sign-in (XOAUTH2 or OAUTHBEARER), only: LOGIN PLAIN" in info.value.message


def test_connections_opened_together_share_one_token(endpoint, start_oauth_server):
    server = start_oauth_server()
    plugins = [make(server, microsoft_options(endpoint)) for _ in range(4)]
    barrier = threading.Barrier(len(plugins))
    errors: list[BaseException] = []

    def open_and_close(plugin):
        barrier.wait()
        try:
            plugin.open()
            plugin.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_and_close, args=(p,)) for p in plugins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len(endpoint.requests) == 1
    assert [ok for _, _, ok in server.handler.auth_attempts] == [True] * 4


def test_a_changed_client_secret_fetches_a_new_token(endpoint, start_oauth_server):
    server = start_oauth_server()
    assert send(server, microsoft_options(endpoint)).ok
    endpoint.clients[CLIENT_ID] = "Rotated~secret-value-55ab"
    # The new secret is not served by the token cached for the old one.
    assert send(server, microsoft_options(endpoint, client_secret="Rotated~secret-value-55ab")).ok
    assert len(endpoint.requests) == 2
