"""Fixtures for the delivery plugin tests: contexts, messages, pickup folders and msmtp."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, localtime, make_msgid
from pathlib import Path

import pytest

from smtpsite.delivery import OutgoingMessage, PluginContext, ServerAddress
from tests.smtpd import HOST, TestServer

SECRET = "s3cret-Passw0rd-9d1e"


def outgoing(
    *,
    sender: str = "sender@example.com",
    recipients: tuple[str, ...] = ("to@example.com",),
    body: str = "Hello.\n.a line that starts with a dot\n..and one with two\nBye.\n",
    smtputf8: bool = False,
    bcc: tuple[str, ...] = (),
) -> OutgoingMessage:
    """A serialised message; ``bcc`` recipients are in the envelope only, as smtpsite sends them."""
    msg = EmailMessage(policy=policy.SMTPUTF8 if smtputf8 else policy.SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = "Plugin test"
    msg["Message-ID"] = make_msgid(domain="test.example.com")
    msg["Date"] = format_datetime(localtime())
    msg.set_content(body, cte="8bit" if smtputf8 else "7bit")
    return OutgoingMessage(msg["Message-ID"], sender, (*recipients, *bcc), msg.as_bytes(),
                           smtputf8=smtputf8)


def address_of(server) -> ServerAddress:
    """The ServerAddress of a test server."""
    return ServerAddress(server.server_name, HOST, server.port)


@pytest.fixture
def pickup_root(tmp_path: Path) -> Path:
    """An allowed pickup root with a ``mail`` folder inside it."""
    root = tmp_path / "pickup-root"
    (root / "mail").mkdir(parents=True)
    return root


@pytest.fixture
def pickup_context(pickup_root: Path) -> PluginContext:
    """A plugin context allowing writes under ``pickup_root`` only."""
    return PluginContext(config={"SMTPSITE_PICKUP_ROOTS": (pickup_root,)})


@pytest.fixture(scope="session")
def msmtp() -> str:
    """Path of Debian's msmtp; missing on CI is a failure, not a skip."""
    path = shutil.which("msmtp")
    if path is None:
        message = "msmtp is not installed (apt-get install msmtp); the sendmail tests need it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def msmtp_wrapper(msmtp: str, tmp_path: Path) -> Callable[[TestServer], Path]:
    """Make a sendmail-compatible program that relays through msmtp to a test server."""

    def make(server: TestServer) -> Path:
        config = tmp_path / f"msmtprc-{server.port}"
        config.write_text(
            "defaults\n"
            "auth off\ntls off\nsyslog off\n"
            "account default\n"
            f"host {HOST}\nport {server.port}\n"
            "from fallback@example.com\n"
            "timeout 10\n"
        )
        config.chmod(0o600)  # msmtp refuses a config file others can read
        program = tmp_path / f"sendmail-{server.port}"
        program.write_text(f'#!/bin/sh\nexec {msmtp} -C {config} "$@"\n')
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
        return program

    return make


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write an executable shell script: ``script("name", "body")``."""

    def make(name: str, body: str) -> Path:
        path = tmp_path / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return path

    return make
