"""Secrets never show: not in logs, exceptions, CLI output, exports, transcripts or repr.

A known password (and the encryption key) is used on every path - successful sends, a
wrong password, a server that is down, a failed TLS handshake, connection checks and the
CLI - with every logger at DEBUG; then every text produced is searched for it.
"""

from __future__ import annotations

import base64
import logging

import pytest
from sqlalchemy import select

from smtpsite import send_mail, settings
from smtpsite.delivery import DeliveryError
from smtpsite.extensions import db
from smtpsite.models import Email, Setting, SmtpServer
from smtpsite.routing import explain_chain
from smtpsite.servers import save_server
from smtpsite.sites import create_site
from tests.smtpd import free_port

PASSWORD = "Pässw0rd-leak-canary-42"
USER = "mailer"
# aiosmtpd is the test's SMTP server, not smtpsite: at DEBUG it logs the AUTH line it received.
SERVER_SIDE_LOGGERS = ("mail.log",)


def needles(app) -> list[str]:
    """The password in every form it could travel in, and the encryption keys."""
    forms = [PASSWORD, PASSWORD.encode("unicode_escape").decode("ascii")]
    for raw in (PASSWORD, f"\0{USER}\0{PASSWORD}"):
        forms.append(base64.b64encode(raw.encode()).decode("ascii"))
    forms += [k for k in app.config["SMTPSITE_SECRET_KEYS"].split(",") if k]
    return forms


@pytest.fixture
def debug_logs(caplog):
    """Every logger at DEBUG for the test; returns a function giving the formatted records."""
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def text() -> str:
        return "\n".join(formatter.format(r) for r in caplog.records
                         if not r.name.startswith(SERVER_SIDE_LOGGERS))

    return text


@pytest.fixture
def shop(app):
    site = create_site("shop", "Shop")
    settings.set_value("emails.queue_enabled", False)
    settings.set_value("emails.server_cooldown", 0)
    db.session.commit()
    return site


def add_server(server_name: str, site, **options) -> SmtpServer:
    record = save_server(None, server_name=server_name, method="network",
                         options={"security": "none", "username": USER, "password": PASSWORD,
                                  "timeout": 5, **options}, sites=[site])
    db.session.commit()
    return record


def everything_shown(app, site, results) -> list[str]:
    """repr and text of every object a send or a check produced, and of the stored state."""
    shown = [repr(app.extensions["smtpsite"]), repr(app.config.get("SMTPSITE_PLUGINS"))]
    for result in results:
        shown += [repr(result), str(result.error), *(repr(a) for a in result.attempts)]
    for entry in explain_chain(site, "a@example.com"):
        shown.append(repr(entry))
        plugin = make_plugin(entry)
        shown.append(repr(plugin))
        check = plugin.check("a@example.com", "b@example.com")
        shown += [repr(check), check.message, *check.transcript]
        try:
            [delivery] = plugin.send_messages([_outgoing()])
        except DeliveryError as exc:  # opening the connection failed
            shown += [repr(exc), str(exc)]
        else:
            shown += [repr(delivery), str(delivery.error)]
    for row in db.session.execute(select(SmtpServer)).scalars():
        shown += [repr(row), str(row), repr(row.options)]
    shown += [repr(row) for row in db.session.execute(select(Setting)).scalars()]
    for email in db.session.execute(select(Email)).scalars():
        shown += [repr(email), email.last_result or "", *(a.message for a in email.attempts)]
    return shown


def make_plugin(entry):
    """The entry's delivery plugin, as the sender builds it."""
    state = app_state()
    cls = state.registry.get(entry.method)
    return cls(entry.address, cls.clean_options(entry.options, state.plugin_context),
               state.plugin_context)


def app_state():
    from flask import current_app

    return current_app.extensions["smtpsite"]


def _outgoing():
    from smtpsite.messages import build_message

    return build_message(sender="a@example.com", to=["b@example.com"], subject="s",
                         text="t").outgoing


def assert_nowhere(app, texts: list[str]) -> None:
    for needle in needles(app):
        for text in texts:
            assert needle not in text, f"a secret shows in: {text[:300]!r}"


def test_sends_and_checks_never_show_the_password(app, shop, start_server, debug_logs):
    good = start_server(users={USER: PASSWORD})
    wrong = start_server(users={USER: "another password"})
    tls = start_server(tls="starttls", users={USER: PASSWORD})
    add_server(f"127.0.0.1:{free_port()}", shop)  # nothing listens there
    add_server(tls.server_name, shop, security="starttls")  # self-signed: verification fails
    add_server(wrong.server_name, shop)
    add_server(good.server_name, shop)
    settings.set_value("emails.smtp_server", good.server_name, shop)
    settings.set_value("emails.smtp_username", USER, shop)
    settings.set_value("emails.smtp_password", PASSWORD, shop)
    db.session.commit()

    def send():
        result = send_mail("shop", sender="a@example.com", to=["b@example.com"], subject="s",
                           text="t")
        results.append(result)
        return result

    results = []
    # The settings server (password from the settings) takes the first one.
    assert send().status == "sent"
    settings.clear("emails.smtp_server", shop)
    db.session.commit()
    # Down, TLS failure, wrong password: three failed attempts, queued for later.
    failed = send()
    assert failed.status == "deferred"
    messages = [a.message for a in failed.attempts]
    assert "connection to" in messages[0] and "TLS" in messages[1]
    assert "refused the sign-in" in messages[2]
    # With those three disabled, the server record's own password signs in.
    for server in db.session.execute(select(SmtpServer)).scalars():
        server.enabled = server.server_name == good.server_name
    db.session.commit()
    assert send().status == "sent"
    assert [m.auth_login for m in good.messages] == [USER, USER]

    shown = everything_shown(app, shop, results)
    assert_nowhere(app, shown + [debug_logs()])
    # The logs were really captured at DEBUG (SQL included), so the search means something.
    assert "sqlalchemy.engine" in debug_logs()


def test_cli_never_shows_the_password(app, shop, start_server, runner, debug_logs):
    good = start_server(users={USER: PASSWORD})
    down = f"127.0.0.1:{free_port()}"
    outputs = []

    def run(*args: str) -> None:
        result = runner.invoke(args=["smtpsite", *args])
        outputs.extend([result.output, repr(result.exception)])
        if result.exc_info and result.exception and not isinstance(result.exception, SystemExit):
            import traceback

            outputs.append("".join(traceback.format_exception(*result.exc_info)))

    run("server", "add", down, "--site", "shop", "--option", "security=none",
        "--option", f"username={USER}", "--option", f"password={PASSWORD}",
        "--option", "timeout=5")
    run("server", "add", good.server_name, "--site", "shop", "--option", "security=none",
        "--option", f"username={USER}", "--option", f"password={PASSWORD}",
        "--option", "timeout=5")
    run("settings", "set", "emails.smtp_password", PASSWORD, "--site", "shop")
    run("settings", "set", "emails.smtp_password", PASSWORD + "\n")  # refused: not one line
    run("server", "list")
    run("settings", "get")
    run("settings", "get", "emails.smtp_password", "--site", "shop")
    run("route", "--site", "shop")
    run("send", "--site", "shop", "--now", "--sender", "a@example.com", "--to", "b@example.com",
        "--subject", "s", "--text", "t")
    run("export")
    run("check-keys")
    run("rotate-secrets")
    assert any("status: sent" in o for o in outputs), outputs
    assert any("(set)" in o for o in outputs)
    assert len(good.messages) == 1
    assert_nowhere(app, outputs + [debug_logs()])


def test_a_wrong_key_error_never_shows_the_key_or_the_token(app, shop, tmp_path):
    from smtpsite.secrets import SecretKeyError
    from tests.conftest import make_app

    settings.set_value("emails.smtp_password", PASSWORD, shop)
    db.session.commit()
    token = db.session.execute(select(Setting.value).where(
        Setting.key == "emails.smtp_password")).scalar_one()
    other = make_app(app.config["SMTPSITE_DATABASE_URL"], tmp_path)
    with other.app_context():
        with pytest.raises(SecretKeyError) as info:
            settings.get("emails.smtp_password", shop.id)
        text = f"{info.value!r} {info.value}"
        assert_nowhere(app, [text])
        assert_nowhere(other, [text, repr(other.extensions["smtpsite.keys"])])
        assert token not in text
        db.engine.dispose()
