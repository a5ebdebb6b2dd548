"""The site's default server from the email settings, signing in with OAuth, through send_mail."""

from __future__ import annotations

from sqlalchemy import select

from smtpsite import send_mail, settings
from smtpsite.extensions import db
from smtpsite.models import SmtpServer
from smtpsite.routing import chain_for
from tests.oauth.conftest import CLIENT_ID, CLIENT_SECRET, MAILBOX, SA_EMAIL, TENANT


def use_settings_server(server, **values) -> None:
    settings.set_value("emails.queue_enabled", False)
    settings.set_value("emails.smtp_server", server.server_name)
    settings.set_value("emails.smtp_security", "none")
    for key, value in values.items():
        settings.set_value(f"emails.{key}", value)
    db.session.commit()


def test_settings_server_with_microsoft_oauth(app, endpoint, start_oauth_server):
    server = start_oauth_server()
    use_settings_server(server, smtp_auth="oauth2", smtp_oauth_provider="microsoft",
                        smtp_oauth_tenant=TENANT, smtp_oauth_token_endpoint=endpoint.url,
                        smtp_oauth_client_id=CLIENT_ID, smtp_oauth_client_secret=CLIENT_SECRET,
                        smtp_oauth_mailbox=MAILBOX,
                        # Left from password days: not used with OAuth.
                        smtp_username="old-user", smtp_password="old-Passw0rd-1")
    for _ in range(2):
        result = send_mail(None, sender=MAILBOX, to=["to@example.com"], subject="Hi", text="Hello")
        assert result.status == "sent", result.error
    assert len(endpoint.requests) == 1  # the second email reused the token
    assert [m.auth_login for m in server.messages] == [("XOAUTH2", MAILBOX)] * 2
    [entry] = chain_for(None)
    assert entry.options["auth"] == "oauth2" and "password" not in entry.options
    assert CLIENT_SECRET not in repr(entry)


def test_settings_server_with_google_oauth(app, endpoint, start_oauth_server, service_account):
    server = start_oauth_server(style="google")
    use_settings_server(server, smtp_auth="oauth2", smtp_oauth_provider="google",
                        smtp_oauth_token_endpoint=endpoint.google_url,
                        smtp_oauth_private_key=service_account.json_key, smtp_oauth_mailbox=MAILBOX)
    result = send_mail(None, sender=MAILBOX, to=["to@example.com"], subject="Hi", text="Hello")
    assert result.status == "sent", result.error
    assert endpoint.assertions[0][1]["iss"] == SA_EMAIL


def test_settings_server_with_a_wrong_secret_reports_the_providers_error(app, endpoint,
                                                                        start_oauth_server):
    server = start_oauth_server()
    use_settings_server(server, smtp_auth="oauth2", smtp_oauth_token_endpoint=endpoint.url,
                        smtp_oauth_client_id=CLIENT_ID, smtp_oauth_client_secret="Wr0ng~secret-1",
                        smtp_oauth_mailbox=MAILBOX)
    result = send_mail(None, sender=MAILBOX, to=["to@example.com"], subject="Hi", text="Hello")
    assert result.status != "sent"
    assert "invalid_client: AADSTS7000215" in result.error and "Wr0ng~secret-1" not in result.error
    assert server.messages == []


def test_settings_password_sign_in_is_unchanged(app, start_server):
    server = start_server(users={"mailer": "s3cret-Passw0rd"})
    use_settings_server(server, smtp_username="mailer", smtp_password="s3cret-Passw0rd")
    result = send_mail(None, sender="a@example.com", to=["to@example.com"], subject="Hi", text="x")
    assert result.status == "sent", result.error
    assert server.messages[0].auth_login == "mailer"
    # "none" turns sign-in off even with a user name stored.
    settings.set_value("emails.smtp_auth", "none")
    db.session.commit()
    [entry] = chain_for(None)
    assert entry.options == {"security": "none", "auth": "none", "username": None, "password": None}


def test_the_documented_cli_command_adds_a_working_microsoft_server(app, runner, endpoint,
                                                                   start_oauth_server):
    server = start_oauth_server()
    settings.set_value("emails.queue_enabled", False)
    db.session.commit()
    result = runner.invoke(args=[
        "smtpsite", "server", "add", server.server_name, "--method", "network", "--priority", "high",
        "--global", "--option", "security=none", "--option", "auth=oauth2",
        "--option", "provider=microsoft", "--option", f"tenant={TENANT}",
        "--option", f"token_endpoint={endpoint.url}", "--option", f"client_id={CLIENT_ID}",
        "--option", f"client_secret={CLIENT_SECRET}", "--option", f"mailbox={MAILBOX}"])
    assert result.exit_code == 0, result.output
    assert CLIENT_SECRET not in result.output
    record = db.session.execute(select(SmtpServer)).scalar_one()
    assert record.options["auth"] == "oauth2" and "client_secret" not in record.options
    assert CLIENT_SECRET not in (record.secrets or "")  # encrypted
    result = runner.invoke(args=["smtpsite", "send", "--to", "to@example.com", "--subject", "Hi",
                                 "--text", "Hello", "--sender", MAILBOX])
    assert result.exit_code == 0, result.output
    assert server.messages[0].auth_login == ("XOAUTH2", MAILBOX)
