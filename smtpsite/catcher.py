"""The built-in mail catcher: an SMTP server on 127.0.0.1 that keeps every message in the database.

It stands in for Papercut or smtp4dev: point a site's default server at it and read what
was sent under Captured mail in the panel. Each message is stored in a database session of
its own; if storing fails, the sender is told 451 (try again later), so nothing is lost
silently. It binds to 127.0.0.1 only: whatever reaches it is read by panel users.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from email import policy
from email.parser import BytesParser
from typing import Any

import click
from aiosmtpd.controller import Controller
from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.models import CapturedMessage, Site, User

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEMO_CODE = "demo"
DEMO_NAME = "Demo site"
DEMO_SENDER = "demo@example.com"


def _header(raw: bytes, name: str) -> str:
    """A decoded header of ``raw`` ('' when missing or unreadable)."""
    try:
        value = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)[name]
        return str(value or "").strip()
    except Exception:  # a malformed header must not cost the message
        return ""


def store_message(engine: Engine, mail_from: str, rcpt_tos: list[str], raw: bytes,
                  peer: str | None) -> int:
    """Store one received message in a session of its own; return its id."""
    record = CapturedMessage(
        mail_from=(mail_from or "")[:320],
        rcpt_tos=list(rcpt_tos),
        subject=_header(raw, "Subject"),
        message_id=_header(raw, "Message-ID")[:300] or None,
        size=len(raw),
        peer=(peer or "")[:100] or None,
        raw=raw,
    )
    with Session(engine) as session, session.begin():
        session.add(record)
        session.flush()
        return record.id


class CatcherHandler:
    """aiosmtpd handler: accept every recipient, store the message, or answer 451."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        peer = session.peer
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        raw = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        try:
            # The database call blocks: keep it off the event loop that serves other senders.
            message_id = await loop.run_in_executor(
                None, store_message, self.engine, envelope.mail_from, envelope.rcpt_tos, raw,
                peer_text)
        except Exception as exc:
            log.error("catcher: could not store a message from %s (%d bytes): %s; answered 451",
                      peer_text, len(raw), type(exc).__name__)
            return "451 4.3.0 Could not store the message; try again later"
        log.info("catcher: stored message %d (%d bytes, %d recipients)", message_id, len(raw),
                 len(envelope.rcpt_tos))
        return f"250 2.0.0 OK: captured as message {message_id}"


class Catcher:
    """The catcher's SMTP server, run by aiosmtpd in a thread of its own."""

    def __init__(self, app: Flask, port: int | None = None, max_size: int | None = None) -> None:
        self.port = int(port if port is not None else app.config["SMTPSITE_CATCHER_PORT"])
        self.max_size = int(max_size if max_size is not None
                            else app.config["SMTPSITE_CATCHER_MAX_SIZE"])
        with app.app_context():
            engine = db.engine
        self.controller = Controller(
            CatcherHandler(engine), hostname=HOST, port=self.port,
            server_hostname="smtpsite-catcher", ident="smtpsite mail catcher",
            data_size_limit=self.max_size, enable_SMTPUTF8=True, ready_timeout=5.0)

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as a server name for settings."""
        return f"{HOST}:{self.port}"

    def start(self) -> Catcher:
        """Start listening; raise ``OSError`` (for example: port in use) if it cannot."""
        try:
            # aiosmtpd reports a port in use only after its start-up timeout: try it first.
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((HOST, self.port))
            self.controller.start()
        except Exception as exc:
            self.controller.stop(no_assert=True)
            self.controller.loop.close()
            raise OSError(f"the mail catcher cannot listen on {self.address}: {exc}") from exc
        log.info("mail catcher listening on %s", self.address)
        return self

    def stop(self) -> None:
        """Stop listening (messages already stored stay)."""
        self.controller.stop()


def start_in_background(app: Flask) -> Catcher | None:
    """The run command's catcher, unless disabled; a failure to start is logged, not fatal."""
    if not app.config["SMTPSITE_CATCHER_ENABLED"]:
        return None
    try:
        return Catcher(app).start()
    except OSError as exc:
        log.error("%s; the panel runs without it (set SMTPSITE_CATCHER_PORT to another port, "
                  "or SMTPSITE_CATCHER_ENABLED=0)", exc)
        return None


@click.command("catcher")
@click.option("--port", type=int, default=None,
              help="Port on 127.0.0.1 (default: SMTPSITE_CATCHER_PORT, 8025).")
def catcher_command(port: int | None) -> None:
    """Run the mail catcher alone, in the foreground, until Ctrl-C or SIGTERM."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        catcher = Catcher(current_app._get_current_object(), port=port).start()
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()

    def handle(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    click.echo(f"mail catcher listening on {catcher.address}: read what it receives under "
               "Captured mail in the panel. Ctrl-C stops it.")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        catcher.stop()
        click.echo("mail catcher stopped")


def ensure_demo_site(app: Flask) -> Site | None:
    """On an empty database (no sites, no users), add a demo site that sends to the catcher.

    Its default server is the catcher, so a new user can send a test email and read it in
    the panel at once. Returns the site, or None when the database was not empty.
    """
    if not app.config["SMTPSITE_CATCHER_ENABLED"]:
        return None
    if db.session.execute(select(Site.id).limit(1)).first() \
            or db.session.execute(select(User.id).limit(1)).first():
        return None
    from smtpsite.sites import create_site

    site = create_site(DEMO_CODE, DEMO_NAME)
    db.session.flush()
    settings.set_value("emails.smtp_server", f"{HOST}:{app.config['SMTPSITE_CATCHER_PORT']}",
                       site)
    settings.set_value("emails.smtp_security", "none", site)
    settings.set_value("emails.smtp_auth", "none", site)  # never an inherited sign-in
    settings.set_value("emails.default_sender", DEMO_SENDER, site)
    db.session.commit()
    return site
