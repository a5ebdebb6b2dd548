"""Real SMTP servers for the tests: aiosmtpd on 127.0.0.1, plain, TLS, AUTH and faulty ones."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for localhost / 127.0.0.1 and its key, as PEM files."""

    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for a server presenting this certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificate(folder: Path) -> Certificate:
    """Create a self-signed certificate (SAN DNS:localhost, IP:127.0.0.1) under ``folder``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_file, key_file)


@dataclass
class Received:
    """One message as the server received it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]
    auth_login: str | None


@dataclass
class Behaviour:
    """How a test server misbehaves; the defaults accept everything."""

    mail_reply: str | None = None
    rcpt_reply: str | None = None
    # Per-recipient replies, e.g. {"bad@example.com": "550 5.1.1 no such user"}.
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    drop_before_data: bool = False
    # Keep the message, then drop the connection without answering the final ".".
    drop_after_data: bool = False
    # Keep the message, then wait this long before answering the final ".".
    stall_after_data: float = 0.0
    # Wait this long inside DATA before answering (counts towards concurrency).
    data_delay: float = 0.0
    # Offer PIPELINING (RFC 2920) in the EHLO reply.
    pipelining: bool = False
    # Accept DATA even when no recipient was accepted (a server RFC 2920 says must not).
    data_without_recipients: bool = False


class Recorder:
    """An aiosmtpd handler that keeps what it receives and misbehaves on request."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.active = 0
        self.peak_active = 0
        self.connections = 0
        # Per MAIL command: whether the commands after it had already arrived (pipelined).
        self.pipelined: list[bool] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.behaviour.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # Commands sent together arrive in one segment on loopback: DATA is already buffered.
        self.pipelined.append(b"DATA" in bytes(server._reader._buffer))
        if self.behaviour.mail_reply:
            return self.behaviour.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.behaviour.rcpt_replies:
            return self.behaviour.rcpt_replies[address]
        if self.behaviour.rcpt_reply:
            return self.behaviour.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        b = self.behaviour
        if b.data_delay:
            await asyncio.sleep(b.data_delay)
        if b.data_reply:
            return b.data_reply
        with self.lock:
            self.messages.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.original_content,
                    list(envelope.mail_options),
                    session.auth_data if session.authenticated else None,
                )
            )
        if b.drop_after_data:
            server.transport.close()
            return "250 OK"
        if b.stall_after_data:
            await asyncio.sleep(b.stall_after_data)
        return "250 OK"


class _CountingSMTP(SMTP):
    """aiosmtpd's SMTP, counting connections open at once."""

    def __init__(self, recorder: Recorder, *args, **kwargs) -> None:
        super().__init__(recorder, *args, **kwargs)
        self._recorder = recorder

    def connection_made(self, transport) -> None:
        # aiosmtpd calls this again after STARTTLS on the same connection: count it once.
        if not getattr(self, "_counted", False):
            self._counted = True
            with self._recorder.lock:
                self._recorder.connections += 1
                self._recorder.active += 1
                self._recorder.peak_active = max(self._recorder.peak_active,
                                                 self._recorder.active)
        super().connection_made(transport)

    def connection_lost(self, exc) -> None:
        if getattr(self, "_counted", False) and not getattr(self, "_uncounted", False):
            self._uncounted = True
            with self._recorder.lock:
                self._recorder.active -= 1
        super().connection_lost(exc)

    async def smtp_DATA(self, arg):
        if self._recorder.behaviour.data_without_recipients and not self.envelope.rcpt_tos:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            while await self._reader.readuntil(b"\r\n") != b".\r\n":
                pass
            await self.push("554 5.5.1 no valid recipients")
            return
        await super().smtp_DATA(arg)

    async def smtp_RCPT(self, arg):
        if self._recorder.behaviour.drop_before_data:
            self.transport.close()
            return
        await super().smtp_RCPT(arg)


class _Controller(Controller):
    def factory(self):
        return _CountingSMTP(self.handler, **self.SMTP_kwargs)


def _authenticator(users: dict[str, str]):
    def authenticate(server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if users.get(user) == password:
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    return authenticate


class TestServer:
    """A running aiosmtpd server on 127.0.0.1 and what it received."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        behaviour: Behaviour | None = None,
        tls: str = "none",  # none / starttls / ssl
        certificate: Certificate | None = None,
        users: dict[str, str] | None = None,
        smtputf8: bool = True,
    ) -> None:
        self.recorder = Recorder(behaviour)
        self.port = free_port()
        self.tls = tls
        kwargs: dict = {"enable_SMTPUTF8": smtputf8}
        if users is not None:
            kwargs.update(
                authenticator=_authenticator(users), auth_required=True, auth_require_tls=False
            )
        if tls == "starttls":
            kwargs.update(tls_context=certificate.server_context(), require_starttls=True)
        elif tls == "ssl":
            kwargs["ssl_context"] = certificate.server_context()
        self.controller = _Controller(self.recorder, hostname=HOST, port=self.port, **kwargs)

    @property
    def server_name(self) -> str:
        """The server name to store in an SMTP server record."""
        return f"{HOST}:{self.port}"

    @property
    def messages(self) -> list[Received]:
        """Messages received so far."""
        return self.recorder.messages

    def start(self) -> TestServer:
        """Start serving; counters start at zero after aiosmtpd's own readiness probe."""
        self.controller.start()
        with self.recorder.lock:
            self.recorder.connections = 0
            self.recorder.peak_active = self.recorder.active
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.controller.stop()


class SilentServer:
    """Accepts connections and never says a word: a server that stalls."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def server_name(self) -> str:
        """The server name to store in an SMTP server record."""
        return f"{HOST}:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def stop(self) -> None:
        """Close the listening socket and every accepted connection."""
        self.sock.close()
        for conn in self.accepted:
            conn.close()
