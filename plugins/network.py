"""Delivery over the network: SMTP with STARTTLS or implicit TLS, AUTH, and safe failure flags."""

from __future__ import annotations

import base64
import functools
import re
import smtplib
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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

_EOL = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")


@functools.cache
def _default_helo_name() -> str:
    # gethostname needs no DNS lookup (smtplib's getfqdn default can stall offline).
    return socket.gethostname() or "localhost"


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
        Field("username", "User name", help="Leave empty if the server needs no sign-in."),
        Field("password", "Password", secret=True),
        Field("verify_certificate", "Verify the certificate", "boolean", default=True,
              help="Turn off only for a server you trust with a self-signed certificate."),
        Field("ca_file", "CA file", "path",
              help="PEM file of certificate authorities to trust instead of the system's."),
        Field("helo_name", "HELO name", help="Name sent in EHLO; default: this host's name."),
        Field("timeout", "Timeout (seconds)", "float", default=30.0, min_value=1, max_value=300,
              help="How long to wait for the server at each step."),
    )

    @classmethod
    def validate(cls, options: dict[str, Any], context: PluginContext) -> dict[str, str]:
        """Checks across fields: credentials in pairs, a readable CA file."""
        errors = {}
        if options.get("password") and not options.get("username"):
            errors["username"] = "is required when a password is set"
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

    # -- connection ------------------------------------------------------------------
    def _tls_context(self) -> ssl.SSLContext:
        if not self.options.get("verify_certificate", True):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=self.options.get("ca_file") or None)

    def _connect(self, transcript: list[str] | None = None) -> smtplib.SMTP:
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
            self._authenticate(smtp, transcript)
        except DeliveryError:
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

    def open(self) -> bool:
        """Connect, secure and sign in, unless already connected."""
        if self._smtp is not None:
            return False
        self._smtp = self._connect()
        return True

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
        try:
            code, reply = smtp.mail(message.sender, mail_options)
            if code != 250:
                self._reset()
                return _failed(message, f"{where} refused the sender: {code} {_reply_text(reply)}",
                               code, permanent=False)
            refused: dict[str, tuple[int, str]] = {}
            for rcpt in message.recipients:
                code, reply = smtp.rcpt(rcpt)
                if code not in (250, 251):
                    refused[rcpt] = (code, _reply_text(reply))
            if len(refused) == len(message.recipients):
                self._reset()
                codes = sorted({c for c, _ in refused.values()})
                detail = "; ".join(f"{r}: {c} {t}" for r, (c, t) in refused.items())
                return _failed(message, f"{where} refused every recipient: {detail}", codes[-1],
                               permanent=all(500 <= c < 600 for c in codes))
            code, reply = smtp.docmd("DATA")
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

    # -- checking --------------------------------------------------------------------
    def check(self, sender: str, recipient: str) -> CheckResult:
        """EHLO, TLS, AUTH, MAIL FROM, RCPT TO, then RSET and QUIT: nothing is sent."""
        transcript: list[str] = []
        try:
            smtp = self._connect(transcript)
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

