"""Delivery over the network: SMTP with STARTTLS or implicit TLS, AUTH, and safe failure flags."""

from __future__ import annotations

import base64
import functools
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from plugins import oauth_tokens
from plugins.oauth_tokens import PROVIDERS, AccessToken, TokenError
from smtpsite.delivery import (
    CheckResult,
    DeliveryError,
    DeliveryMethod,
    DeliveryResult,
    Field,
    OutgoingMessage,
    PluginContext,
    Secret,
)

_OAUTH = ("auth", ("oauth2",))
_SIGN_IN_OPTIONS = frozenset({"username", "password", "provider", "tenant", "token_endpoint",
                              "client_id", "client_secret", "private_key", "scope", "mailbox"})
_EOL = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")


@functools.cache
def _default_helo_name() -> str:
    # gethostname needs no DNS lookup (smtplib's getfqdn default can stall offline).
    return socket.gethostname() or "localhost"


def _filled(value: Any) -> bool:
    return bool(value.reveal() if isinstance(value, Secret) else value not in (None, ""))


def _used_options(options: Mapping[str, Any]) -> frozenset[str]:
    auth = options.get("auth")
    if auth == "password":
        return frozenset({"username", "password"})
    if auth == "oauth2":
        return frozenset(oauth_tokens.OAUTH_OPTIONS.get(options.get("provider"), ()))
    return frozenset()


def _dot_stuff(data: bytes) -> bytes:
    data = _LEADING_DOT.sub(b"..", _EOL.sub(b"\r\n", data))
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _reply_text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


class NetworkDelivery(DeliveryMethod):
    """SMTP to the server named by the record: EHLO, optional TLS, optional AUTH, then mail."""

    name = "network"
    label = "Network (SMTP)"
    description = "Send straight to the SMTP server named by the server name (host:port)."
    fields = (
        Field("security", "Security", "choice", default="starttls",
              choices=(("none", "None (plain text)"), ("starttls", "STARTTLS"),
                       ("ssl", "Implicit TLS (port 465)")),
              help="STARTTLS upgrades a plain connection; implicit TLS starts encrypted."),
        Field("auth", "Sign-in", "choice", default="none",
              choices=(("none", "None"), ("password", "User name and password"),
                       ("oauth2", "OAuth 2.0 (Microsoft 365, Google, other)")),
              help="When left out: password if a user name or password is given, else none. "
                   "Options of the other sign-in kinds are dropped."),
        Field("username", "User name", show_if=("auth", ("password",))),
        Field("password", "Password", secret=True, show_if=("auth", ("password",))),
        Field("provider", "OAuth provider", "choice", default="microsoft", choices=PROVIDERS,
              show_if=_OAUTH, help="Fills the token endpoint and the scope."),
        Field("tenant", "Microsoft tenant", show_if=_OAUTH,
              help="Microsoft 365 only: the directory (tenant) ID or a domain such as "
                   "contoso.onmicrosoft.com; gives the token endpoint."),
        Field("token_endpoint", "Token endpoint", show_if=_OAUTH,
              help="Filled for Microsoft (from the tenant) and Google; required for other "
                   "providers. Give it to override (e.g. a national cloud)."),
        Field("client_id", "Client ID", show_if=_OAUTH,
              help="Microsoft: the application (client) ID. Google: the service account's "
                   "email (client_email; read from a JSON key file when left empty)."),
        Field("client_secret", "Client secret", secret=True, show_if=_OAUTH,
              help="The client secret's value (Microsoft and other providers)."),
        Field("private_key", "Service account key", "text", secret=True, show_if=_OAUTH,
              help="Google: the service account's private key (PEM) or its whole JSON key file."),
        Field("scope", "Scope", show_if=_OAUTH,
              help="Default: https://outlook.office365.com/.default (Microsoft), "
                   "https://mail.google.com/ (Google)."),
        Field("mailbox", "Send as (mailbox)", show_if=_OAUTH,
              help="The mailbox to sign in as, e.g. noreply@example.com."),
        Field("verify_certificate", "Verify the certificate", "boolean", default=True,
              help="Turn off only for a server you trust with a self-signed certificate."),
        Field("ca_file", "CA file", "path",
              help="PEM file of certificate authorities to trust instead of the system's."),
        Field("helo_name", "HELO name", help="Name sent in EHLO; default: this host's name."),
        Field("timeout", "Timeout (seconds)", "float", default=30.0, min_value=1, max_value=300,
              help="How long to wait for the server (and the token endpoint) at each step."),
    )

    @classmethod
    def clean_options(cls, options: Mapping[str, Any], context: PluginContext) -> dict[str, Any]:
        """As the base class, with ``auth`` inferred for records older than it, and the
        options of the sign-in kinds not chosen dropped (a stale secret is not kept)."""
        options = dict(options)
        if options.get("auth") in (None, ""):
            # Before OAuth there was no "auth": a user name or password meant password sign-in.
            given = any(_filled(options.get(k)) for k in ("username", "password"))
            options["auth"] = "password" if given else "none"
        cleaned = super().clean_options(options, context)
        used = _used_options(cleaned)
        for name in _SIGN_IN_OPTIONS - used:
            cleaned[name] = None
        return cleaned

    @classmethod
    def validate(cls, options: dict[str, Any], context: PluginContext) -> dict[str, str]:
        """Checks across fields: credentials in pairs, OAuth settings, a readable CA file."""
        errors = {}
        if options.get("auth") == "password" and not options.get("username"):
            errors["username"] = ("is required when a password is set" if options.get("password")
                                  else "is required for password sign-in")
        if options.get("auth") == "oauth2":
            errors.update(oauth_tokens.check_options(options))
        ca_file = options.get("ca_file")
        if ca_file:
            path = Path(ca_file)
            if not path.is_absolute():
                errors["ca_file"] = "must be an absolute path"
            elif not path.is_file():
                errors["ca_file"] = "does not exist or is not a file"
            elif options.get("verify_certificate") is False:
                errors["ca_file"] = "has no effect while certificate verification is off"
            elif options.get("security") == "none":
                errors["ca_file"] = "has no effect without TLS"
        helo = options.get("helo_name")
        if helo and not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", helo):
            errors["helo_name"] = "must be a host name"
        return errors

    def __init__(self, server, options, context) -> None:
        super().__init__(server, options, context)
        self._smtp: smtplib.SMTP | None = None
        self._oauth = (oauth_tokens.config_from_options(self.options)
                       if self.options.get("auth") == "oauth2" else None)

    # -- connection ------------------------------------------------------------------
    def _tls_context(self) -> ssl.SSLContext:
        if not self.options.get("verify_certificate", True):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=self.options.get("ca_file") or None)

    def _connect(self, transcript: list[str] | None = None, *, fresh_token: bool = False
                 ) -> smtplib.SMTP:
        """Connect, secure and sign in; with OAuth, a refused cached token is renewed once."""
        if self._oauth is None:
            return self._connect_once(transcript, None)
        token = self._token(transcript, fresh=fresh_token)
        try:
            return self._connect_once(transcript, token)
        except _TokenRefused:
            # A cached token the server no longer takes (revoked, or expired early):
            # fetch a new one and sign in again, once.
            oauth_tokens.TOKENS.invalidate(self._oauth, token.value)
            if transcript is not None:
                transcript.append("  the server refused the cached token: fetching a new one")
            return self._connect_once(transcript, self._token(transcript, fresh=True))

    def _token(self, transcript: list[str] | None, *, fresh: bool) -> AccessToken:
        config = self._oauth
        if transcript is not None:
            transcript.append(f"> OAuth token for {config.mailbox}: {config.grant} at "
                              f"{config.token_endpoint}")
        try:
            token = oauth_tokens.TOKENS.get(config, fresh=fresh)
        except TokenError as exc:
            if transcript is not None:
                transcript.append(f"< {exc.message}")
            raise DeliveryError(f"no OAuth token for {config.mailbox}: {exc.message}") from None
        if transcript is not None:
            state = "new token" if token.fetched else "cached token"
            transcript.append(f"< {state} (hidden), valid for {token.lifetime:.0f} s")
        return token

    def _connect_once(self, transcript: list[str] | None, token: AccessToken | None
                      ) -> smtplib.SMTP:
        security = self.options.get("security", "starttls")
        timeout = float(self.options.get("timeout") or 30.0)
        helo = self.options.get("helo_name") or _default_helo_name()
        where = f"{self.server.host}:{self.server.port}"
        try:
            # Connecting in the constructor is what lets smtplib check the certificate's
            # host name, for implicit TLS and for STARTTLS alike.
            if security == "ssl":
                smtp = smtplib.SMTP_SSL(self.server.host, self.server.port, local_hostname=helo,
                                        timeout=timeout, context=self._tls_context())
            else:
                smtp = smtplib.SMTP(self.server.host, self.server.port, local_hostname=helo,
                                    timeout=timeout)
        except smtplib.SMTPConnectError as exc:
            raise DeliveryError(
                f"{where} refused the connection: {exc.smtp_code} {_reply_text(exc.smtp_error)}",
                code=exc.smtp_code,
            ) from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLS with {where} failed: {_tls_reason(exc)}") from None
        except (OSError, smtplib.SMTPException) as exc:
            hint = ""
            if security != "ssl" and _timed_out(exc):
                # A port that expects implicit TLS waits for a handshake and never greets us.
                hint = " (if this port expects implicit TLS, e.g. 465, choose security 'ssl')"
            raise DeliveryError(f"connection to {where} failed: {_describe(exc)}{hint}") from None
        if transcript is not None:
            transcript.append(f"> connect {where}{' (implicit TLS)' if security == 'ssl' else ''}")
        try:
            code, reply = smtp.ehlo()
            _note(transcript, f"EHLO {helo}", code, reply)
            if code != 250:
                raise DeliveryError(f"{where} refused EHLO: {code} {_reply_text(reply)}", code=code)
            if security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(
                        f"{where} does not offer STARTTLS; choose security 'none' or 'ssl' "
                        "(port 465 usually means implicit TLS)"
                    )
                code, reply = smtp.starttls(context=self._tls_context())
                _note(transcript, "STARTTLS", code, reply)
                code, reply = smtp.ehlo()
                _note(transcript, f"EHLO {helo}", code, reply)
            if token is not None:
                self._authenticate_oauth(smtp, transcript, token)
            else:
                self._authenticate(smtp, transcript)
        except (DeliveryError, _TokenRefused):
            smtp.close()
            raise
        except smtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise DeliveryError(
                f"{where} refused the sign-in: {exc.smtp_code} {_reply_text(exc.smtp_error)}",
                code=exc.smtp_code,
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            smtp.close()
            raise DeliveryError(f"{where}: {exc}") from None
        except smtplib.SMTPResponseException as exc:
            smtp.close()
            raise DeliveryError(
                f"{where} answered {exc.smtp_code} {_reply_text(exc.smtp_error)}",
                code=exc.smtp_code,
            ) from None
        except ssl.SSLError as exc:
            smtp.close()
            raise DeliveryError(f"TLS with {where} failed: {_tls_reason(exc)}") from None
        except (OSError, smtplib.SMTPException) as exc:
            smtp.close()
            raise DeliveryError(f"connection to {where} failed: {_describe(exc)}") from None
        return smtp

    def _authenticate(self, smtp: smtplib.SMTP, transcript: list[str] | None) -> None:
        username = self.options.get("username")
        if not username:
            return
        password = self.options.get("password")
        secret = password.reveal() if isinstance(password, Secret) else (password or "")
        if username.isascii() and secret.isascii():
            code, reply = smtp.login(username, secret)
        else:
            code, reply = _login_utf8(smtp, username, secret)
        # Never record the exchange itself: it carries the credentials.
        _note(transcript, f"AUTH as {username} (credentials hidden)", code, reply)

    def _authenticate_oauth(self, smtp: smtplib.SMTP, transcript: list[str] | None,
                            token: AccessToken) -> None:
        config = self._oauth
        where = f"{self.server.host}:{self.server.port}"
        offered = smtp.esmtp_features.get("auth", "").upper().split()
        if "XOAUTH2" in offered:
            mechanism = "XOAUTH2"
            initial = f"user={config.mailbox}\x01auth=Bearer {token.value.reveal()}\x01\x01"
        elif "OAUTHBEARER" in offered:
            mechanism = "OAUTHBEARER"  # RFC 7628
            initial = (f"n,a={config.mailbox},\x01host={self.server.host}\x01port={self.server.port}"
                       f"\x01auth=Bearer {token.value.reveal()}\x01\x01")
        elif not smtp.has_extn("auth"):
            hint = ("; Microsoft 365 and Google offer it only after STARTTLS: choose security "
                    "'starttls' (port 587)" if self.options.get("security") == "none" else "")
            raise DeliveryError(f"{where} offers no sign-in (AUTH){hint}")
        else:
            raise DeliveryError(f"{where} offers no OAuth sign-in (XOAUTH2 or OAUTHBEARER), "
                                f"only: {' '.join(offered)}")
        challenges: list[str] = []

        def respond(challenge: bytes | None = None) -> str:
            if challenge is None:
                return initial
            # An error challenge (JSON): the client ends the exchange, with an empty line
            # for XOAUTH2 and ^A for OAUTHBEARER (RFC 7628, 3.2.3).
            challenges.append(challenge.decode("utf-8", "replace"))
            return "" if mechanism == "XOAUTH2" else "\x01"

        command = f"AUTH {mechanism} as {config.mailbox} (token hidden)"
        try:
            code, reply = smtp.auth(mechanism, respond)
        except smtplib.SMTPAuthenticationError as exc:
            _note(transcript, command, exc.smtp_code, exc.smtp_error)
            if not token.fetched:
                raise _TokenRefused from None
            detail = f"{exc.smtp_code} {_reply_text(exc.smtp_error)}"
            if challenges:
                detail += f" (the server's reason: {challenges[-1]})"
            raise DeliveryError(
                f"{where} refused the OAuth sign-in as {config.mailbox}: {detail}. The token "
                f"endpoint issued the token, so {_PERMISSION_HINTS[config.provider]}",
                code=exc.smtp_code,
            ) from None
        _note(transcript, command, code, reply)

    def open(self) -> bool:
        """Connect, secure and sign in, unless already connected."""
        if self._smtp is not None:
            return False
        self._smtp = self._connect()
        return True

    def is_alive(self) -> bool:
        """Whether the open connection still answers (NOOP); a pool asks before reusing it."""
        if self._smtp is None:
            return False
        try:
            return self._smtp.noop()[0] == 250
        except (OSError, smtplib.SMTPException):
            return False

    def close(self) -> None:
        """Say QUIT and close; a broken connection is simply dropped."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()

    # -- sending ---------------------------------------------------------------------
    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[DeliveryResult]:
        """Send each message over the open connection (opening one if needed)."""
        if not messages:
            return []
        opened = self.open()
        results: list[DeliveryResult] = []
        try:
            for index, message in enumerate(messages):
                result = self._send_one(message)
                results.append(result)
                if self._smtp is None:  # the connection broke: the rest were not sent
                    reason = result.error.message if result.error else "connection closed"
                    for later in messages[index + 1 :]:
                        results.append(DeliveryResult(later.message_id, False, error=DeliveryError(
                            f"not sent: the connection broke on an earlier message ({reason})"
                        )))
                    break
        finally:
            if opened:
                self.close()
        return results

    def _lost(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def _send_one(self, message: OutgoingMessage) -> DeliveryResult:
        smtp = self._smtp
        assert smtp is not None
        where = f"{self.server.host}:{self.server.port}"
        mail_options: list[str] = []
        if message.smtputf8:
            if not smtp.has_extn("smtputf8"):
                return DeliveryResult(message.message_id, False, error=DeliveryError(
                    f"{where} does not offer SMTPUTF8, which an address of this message needs"
                ))
            mail_options.append("SMTPUTF8")
        if smtp.has_extn("size"):
            mail_options.append(f"SIZE={len(message.data)}")
        if any(c in a for a in (message.sender, *message.recipients) for c in "\r\n<>"):
            # Such an address would end the command and start another of its own.
            return _failed(message, "an envelope address contains a line break or an angle "
                           "bracket", None, permanent=True)
        try:
            (code, reply), rcpt_replies, data_reply = _envelope(smtp, message, mail_options)
            if code != 250:
                self._abandon(data_reply)
                return _failed(message, f"{where} refused the sender: {code} {_reply_text(reply)}",
                               code, permanent=False)
            refused: dict[str, tuple[int, str]] = {
                rcpt: (code, _reply_text(reply))
                for rcpt, (code, reply) in zip(message.recipients, rcpt_replies, strict=True)
                if code not in (250, 251)
            }
            if len(refused) == len(message.recipients):
                self._abandon(data_reply)
                codes = sorted({c for c, _ in refused.values()})
                detail = "; ".join(f"{r}: {c} {t}" for r, (c, t) in refused.items())
                return _failed(message, f"{where} refused every recipient: {detail}", codes[-1],
                               permanent=all(500 <= c < 600 for c in codes))
            code, reply = data_reply
            if code != 354:
                self._reset()
                return _failed(message, f"{where} refused DATA: {code} {_reply_text(reply)}", code,
                               permanent=500 <= code < 600)
        except smtplib.SMTPServerDisconnected as exc:
            self._lost()
            return _failed(message, f"{where} closed the connection before the data: {exc}", None)
        except (OSError, smtplib.SMTPException) as exc:
            self._lost()
            return _failed(message, f"{where} failed before the data: {_describe(exc)}", None)
        try:
            smtp.send(_dot_stuff(message.data))
        except (OSError, smtplib.SMTPException) as exc:
            # The final "." did not go out in full: the server cannot have accepted it.
            self._lost()
            return _failed(message, f"{where} failed while the data was sent: {_describe(exc)}", None)
        try:
            code, reply = smtp.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            self._lost()
            return _failed(
                message,
                f"{where} gave no answer after the whole message was sent: {_describe(exc)}",
                None, after_data=True,
            )
        if code != 250 and not 400 <= code < 600:
            # Garbage, or a code that is no answer to the data: the server may have taken
            # the message, so it must not go to another server.
            return _failed(
                message, f"{where} gave an unreadable answer after the whole message was sent: "
                f"{code} {_reply_text(reply)[:200]}", None, after_data=True,
            )
        if code != 250:
            # A definite refusal after the data: the server did not take the message.
            return _failed(message, f"{where} refused the message: {code} {_reply_text(reply)}",
                           code, permanent=500 <= code < 600)
        return DeliveryResult(message.message_id, True, code=code, reply=_reply_text(reply),
                              refused=refused)

    def _reset(self) -> None:
        try:
            self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._lost()

    def _abandon(self, data_reply: tuple[int, bytes] | None) -> None:
        """End a transaction that will not be sent, then RSET.

        A pipelined DATA may have been accepted (354) although the sender or every
        recipient was refused (a server should refuse it, RFC 2920): an empty message ends
        it, so that the connection stays in step.
        """
        if data_reply is not None and data_reply[0] == 354:
            self._smtp.send(b".\r\n")
            self._smtp.getreply()
        self._reset()

    # -- checking --------------------------------------------------------------------
    def check(self, sender: str, recipient: str) -> CheckResult:
        """EHLO, TLS, AUTH, MAIL FROM, RCPT TO, then RSET and QUIT: nothing is sent."""
        transcript: list[str] = []
        try:
            # A new token: a wrong secret, tenant or scope must show here, not hide behind
            # a token still cached from before the change.
            smtp = self._connect(transcript, fresh_token=True)
        except DeliveryError as exc:
            return CheckResult(False, exc.message, transcript)
        try:
            details = {"extensions": sorted(smtp.esmtp_features)}
            if smtp.has_extn("size"):
                details["size_limit"] = int(smtp.esmtp_features["size"] or 0)
            code, reply = smtp.mail(sender)
            _note(transcript, f"MAIL FROM:<{sender}>", code, reply)
            if code != 250:
                return CheckResult(False, f"the server refused the sender: {code} "
                                   f"{_reply_text(reply)}", transcript, details)
            code, reply = smtp.rcpt(recipient)
            _note(transcript, f"RCPT TO:<{recipient}>", code, reply)
            if code not in (250, 251):
                return CheckResult(False, f"the server refused the recipient: {code} "
                                   f"{_reply_text(reply)}", transcript, details)
            code, reply = smtp.rset()
            _note(transcript, "RSET", code, reply)
            return CheckResult(True, "the server accepted the sender and the recipient; "
                               "nothing was sent", transcript, details)
        except (OSError, smtplib.SMTPException) as exc:
            return CheckResult(False, f"the check failed: {_describe(exc)}", transcript)
        finally:
            try:
                code, reply = smtp.quit()
                _note(transcript, "QUIT", code, reply)
            except (OSError, smtplib.SMTPException):
                smtp.close()


class _TokenRefused(Exception):
    """The server refused a cached OAuth token: fetch a new one and sign in again."""


_PERMISSION_HINTS = {
    "microsoft": "check that the app has the SMTP.SendAsApp permission (admin consent given), "
                 "that its service principal is registered in Exchange Online with FullAccess "
                 "to the mailbox (Add-MailboxPermission), and that SMTP AUTH is on for the mailbox",
    "google": "check the service account's domain-wide delegation (its client ID with the "
              "scope https://mail.google.com/) and that the mailbox is a user of the domain",
    "generic": "check that the token grants access to this mailbox",
}


def _envelope(smtp: smtplib.SMTP, message: OutgoingMessage, mail_options: list[str]
              ) -> tuple[tuple[int, bytes], list[tuple[int, bytes]], tuple[int, bytes] | None]:
    """Send MAIL, one RCPT per recipient and DATA; return their replies.

    With PIPELINING (RFC 2920) the commands go out together and the replies are read
    afterwards: one round trip instead of two plus one per recipient. Without it, each
    command waits for its reply, and the transaction stops early: after a refused MAIL (no
    RCPT replies) or when every recipient was refused (no DATA reply, None).
    """
    encoding = "utf-8" if message.smtputf8 else "ascii"
    mail = f"MAIL FROM:<{message.sender}>" + "".join(f" {o}" for o in mail_options)
    rcpts = [f"RCPT TO:<{rcpt}>" for rcpt in message.recipients]
    if smtp.has_extn("pipelining"):
        smtp.send("".join(f"{c}\r\n" for c in (mail, *rcpts, "DATA")).encode(encoding))
        mail_reply = smtp.getreply()
        return mail_reply, [smtp.getreply() for _ in rcpts], smtp.getreply()

    def ask(command: str) -> tuple[int, bytes]:
        smtp.send(f"{command}\r\n".encode(encoding))
        return smtp.getreply()

    mail_reply = ask(mail)
    if mail_reply[0] != 250:
        return mail_reply, [], None
    rcpt_replies = [ask(c) for c in rcpts]
    if all(code not in (250, 251) for code, _ in rcpt_replies):
        return mail_reply, rcpt_replies, None
    return mail_reply, rcpt_replies, ask("DATA")


def _failed(message: OutgoingMessage, text: str, code: int | None, *, permanent: bool = False,
            after_data: bool = False) -> DeliveryResult:
    return DeliveryResult(message.message_id, False, code=code, error=DeliveryError(
        text, code=code, permanent=permanent, after_data=after_data))


def _login_utf8(smtp: smtplib.SMTP, username: str, password: str) -> tuple[int, bytes]:
    """AUTH PLAIN with UTF-8 credentials (RFC 4616): smtplib's login only sends ASCII."""
    if "plain" not in smtp.esmtp_features.get("auth", "").lower().split():
        raise DeliveryError("the user name or password has non-ASCII characters, which only "
                            "AUTH PLAIN can carry, and the server does not offer it")
    token = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
    code, reply = smtp.docmd("AUTH", "PLAIN " + token)
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, reply)
    return code, reply


def _note(transcript: list[str] | None, command: str, code: int, reply: bytes | str) -> None:
    if transcript is not None:
        transcript.append(f"> {command}")
        transcript.append(f"< {code} {_reply_text(reply)}".rstrip())


def _tls_reason(exc: ssl.SSLError) -> str:
    reason = str(exc.reason or exc)
    if "WRONG_VERSION" in reason or "record layer" in reason:
        reason += " (is the security mode right for this port? 465 usually means implicit TLS)"
    return reason


def _timed_out(exc: BaseException) -> bool:
    # smtplib reports a read timeout as SMTPServerDisconnected raised while handling it.
    return isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError)


def _describe(exc: BaseException) -> str:
    if _timed_out(exc):
        return "timed out waiting for the server"
    text = str(exc) or type(exc).__name__
    return text

