"""A local OAuth token endpoint and aiosmtpd servers that take OAuth sign-in (XOAUTH2, OAUTHBEARER).

The token endpoint answers like Microsoft's (client credentials, AADSTS errors) and Google's
(JWT bearer grant for a service account, verified here with the account's public key). The
SMTP servers accept only tokens the endpoint issued that are still valid, and refuse others
the way Exchange Online and Gmail do.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from aiosmtpd.smtp import MISSING, AuthResult
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from plugins.oauth_tokens import TOKENS
from tests.smtpd import HOST, Certificate, Recorder, _Controller, free_port

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "3f1c2a9e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
CLIENT_SECRET = "Qx8~client-secret-value-7Hd2"
MAILBOX = "noreply@contoso.example"
MS_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_SCOPE = "https://mail.google.com/"
SA_EMAIL = "mailer@smtpsite-test.iam.gserviceaccount.com"
SA_KEY_ID = "a1b2c3d4e5f6a7b8c9d0"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MS_REFUSAL = "535 5.7.3 Authentication unsuccessful [TEST0001.prod.outlook.example]"
GOOGLE_REFUSAL = ("535 5.7.8 Username and Password not accepted. For more information, go to "
                  "https://support.google.com/mail/?p=BadCredentials")


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


@dataclass
class Issued:
    """A token the endpoint issued: for which client (and mailbox), until when."""

    client: str
    subject: str | None
    expires_at: float
    revoked: bool = False


@dataclass
class TokenEndpoint:
    """A token endpoint on 127.0.0.1 in a thread, with what it was asked and what it issued."""

    clients: dict[str, str] = field(default_factory=lambda: {CLIENT_ID: CLIENT_SECRET})
    # Mailboxes each application may send as (Exchange's Add-MailboxPermission).
    mailbox_access: dict[str, set[str]] = field(default_factory=lambda: {CLIENT_ID: {MAILBOX}})
    # Service accounts: email -> public key; and the mailboxes each may act for (delegation).
    service_accounts: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    delegated: dict[str, set[str]] = field(default_factory=dict)
    lifetime: int = 3600
    # Put the client secret it was sent into its error text (a careless provider).
    echo_secret: bool = False
    requests: list[dict[str, str]] = field(default_factory=list)
    assertions: list[tuple[dict, dict]] = field(default_factory=list)  # (header, claims)
    tokens: dict[str, Issued] = field(default_factory=dict)

    def start(self) -> TokenEndpoint:
        """Serve on a free port of 127.0.0.1."""
        self.httpd = ThreadingHTTPServer((HOST, 0), _handler(self))
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        """The Microsoft-style endpoint (tenant in the path)."""
        return f"http://{HOST}:{self.httpd.server_port}/{TENANT}/oauth2/v2.0/token"

    @property
    def google_url(self) -> str:
        """The Google-style endpoint (also the JWT audience)."""
        return f"http://{HOST}:{self.httpd.server_port}/token"

    def revoke_all(self) -> None:
        """Revoke every token issued so far (the client still thinks they are valid)."""
        for issued in self.tokens.values():
            issued.revoked = True

    def refusal(self, token: str, mailbox: str) -> str | None:
        """Why an SMTP server must refuse ``token`` for ``mailbox``, or None to accept it."""
        issued = self.tokens.get(token)
        if issued is None:
            return "unknown token"
        if issued.revoked or time.time() >= issued.expires_at:
            return "revoked or expired"
        if issued.subject is not None:
            return None if issued.subject == mailbox else "token is for another mailbox"
        return None if mailbox in self.mailbox_access.get(issued.client, set()) else "no permission"

    # -- the grants ------------------------------------------------------------------
    def answer(self, path: str, form: dict[str, str], authorization: str | None) -> tuple[int, dict]:
        self.requests.append(dict(form))
        grant = form.get("grant_type")
        if grant == "client_credentials":
            return self._client_credentials(form, authorization)
        if grant == JWT_BEARER and path == "/token":
            return self._jwt_bearer(form)
        return 400, {"error": "unsupported_grant_type",
                     "error_description": f"AADSTS70003: grant type {grant!r} is not supported."}

    def _issue(self, client: str, subject: str | None) -> tuple[int, dict]:
        value = ("ya29." if subject else "eyJ0eXAi.") + secrets.token_urlsafe(32)
        self.tokens[value] = Issued(client, subject, time.time() + self.lifetime)
        return 200, {"token_type": "Bearer", "expires_in": self.lifetime, "access_token": value}

    def _client_credentials(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict]:
        client, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            client, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
        if client not in self.clients:
            return 400, {"error": "unauthorized_client", "error_description":
                         f"AADSTS700016: Application with identifier '{client}' was not found "
                         f"in the directory '{TENANT}'."}
        if secret != self.clients[client]:
            description = ("AADSTS7000215: Invalid client secret provided. Ensure the secret being "
                           "sent in the request is the client secret value, not the client "
                           f"secret ID, for a secret added to app '{client}'.")
            if self.echo_secret:
                description += f" Received: {secret}"
            return 401, {"error": "invalid_client", "error_description": description,
                         "error_codes": [7000215]}
        if form.get("scope") != MS_SCOPE:
            return 400, {"error": "invalid_scope", "error_description":
                         f"AADSTS1002012: The provided value for scope {form.get('scope')} is not "
                         "valid. Client credential flows must have a scope value with /.default "
                         "suffixed to the resource identifier (application ID URI)."}
        return self._issue(client, None)

    def _jwt_bearer(self, form: dict[str, str]) -> tuple[int, dict]:
        def refuse(error: str, description: str) -> tuple[int, dict]:
            return 400, {"error": error, "error_description": description}

        try:
            head, body, signature = form["assertion"].split(".")
            header, claims = json.loads(_b64url(head)), json.loads(_b64url(body))
        except (KeyError, ValueError):
            return refuse("invalid_grant", "Invalid JWT: not a JWT.")
        self.assertions.append((header, claims))
        key = self.service_accounts.get(claims.get("iss"))
        if header.get("alg") != "RS256" or key is None:
            return refuse("invalid_grant", "Invalid JWT Signature.")
        try:
            key.verify(_b64url(signature), f"{head}.{body}".encode(), padding.PKCS1v15(),
                       hashes.SHA256())
        except InvalidSignature:
            return refuse("invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        if claims.get("aud") != self.google_url:
            return refuse("invalid_grant", "Invalid JWT: Failed audience check.")
        exp, iat = claims.get("exp", 0), claims.get("iat", 0)
        if not (iat - 60 <= now < exp) or exp - iat > 3600:
            return refuse("invalid_grant", "Invalid JWT: Token must be a short-lived token "
                          "(60 minutes) and in a reasonable timeframe.")
        if claims.get("scope") != GOOGLE_SCOPE or claims.get("sub") not in self.delegated.get(
                claims["iss"], set()):
            return refuse("unauthorized_client", "Client is unauthorized to retrieve access tokens "
                          "using this method, or client not authorized for any of the scopes "
                          "requested.")
        return self._issue(claims["iss"], claims["sub"])


def _handler(endpoint: TokenEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            fields = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
            form = {k: v[0] for k, v in fields.items()}
            status, body = endpoint.answer(self.path, form, self.headers.get("Authorization"))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass  # keep test output quiet

    return Handler


class OAuthRecorder(Recorder):
    """An aiosmtpd handler that records mail and signs in with tokens from ``endpoint``."""

    def __init__(self, endpoint: TokenEndpoint, style: str) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.style = style  # "microsoft" or "google": how a refusal is answered
        self.auth_attempts: list[tuple[str, str, bool]] = []  # (mechanism, user, accepted)
        # Mailboxes refused at the SMTP server even with a good token (e.g. SMTP AUTH off).
        self.refused_mailboxes: set[str] = set()

    async def _initial(self, server, args) -> bytes | None:
        if len(args) > 1:
            try:
                return base64.b64decode(args[1], validate=True)
            except ValueError:
                await server.push("501 5.5.2 Cannot decode base64")
                return None
        answer = await server.challenge_auth("")
        return None if answer is MISSING else answer

    def _check(self, mechanism: str, user: str, token: str) -> bool:
        ok = user not in self.refused_mailboxes and self.endpoint.refusal(token, user) is None
        self.auth_attempts.append((mechanism, user, ok))
        return ok

    async def auth_XOAUTH2(self, server, args):  # noqa: N802 - aiosmtpd's naming
        blob = await self._initial(server, args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.decode().split("\x01")
        if len(parts) != 4 or not parts[0].startswith("user=") or not parts[1].startswith(
                "auth=Bearer ") or parts[2:] != ["", ""]:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Bad XOAUTH2 response")
        user, token = parts[0][5:], parts[1][12:]
        if self._check("XOAUTH2", user, token):
            return AuthResult(success=True, auth_data=("XOAUTH2", user))
        if self.style == "google":
            # Gmail: an error challenge (base64 JSON), the client answers with an empty line.
            reason = json.dumps({"status": "401", "schemes": "Bearer", "scope": GOOGLE_SCOPE})
            answer = await server.challenge_auth(reason)
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            if answer != b"":
                return AuthResult(success=False, handled=False, message="501 5.5.2 Expected an empty line")
            return AuthResult(success=False, handled=False, message=GOOGLE_REFUSAL)
        return AuthResult(success=False, handled=False, message=MS_REFUSAL)

    async def auth_OAUTHBEARER(self, server, args):  # noqa: N802 - aiosmtpd's naming
        blob = await self._initial(server, args)
        if blob is None:
            return AuthResult(success=False, handled=True)
        gs2, _, rest = blob.decode().partition(",\x01")
        pairs = dict(p.split("=", 1) for p in rest.split("\x01") if "=" in p)
        if not gs2.startswith("n,a=") or not rest.endswith("\x01\x01") or not pairs.get(
                "auth", "").startswith("Bearer ") or "host" not in pairs or "port" not in pairs:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Bad OAUTHBEARER response")
        user, token = gs2[4:], pairs["auth"][7:]
        if self._check("OAUTHBEARER", user, token):
            return AuthResult(success=True, auth_data=("OAUTHBEARER", user))
        # RFC 7628 3.2.2: an error challenge, which the client must answer with ^A.
        reason = json.dumps({"status": "invalid_token", "scope": GOOGLE_SCOPE})
        answer = await server.challenge_auth(reason)
        if answer is MISSING:
            return AuthResult(success=False, handled=True)
        if answer != b"\x01":
            return AuthResult(success=False, handled=False, message="501 5.5.2 Expected ^A")
        return AuthResult(success=False, handled=False, message=GOOGLE_REFUSAL)


class OAuthServer:
    """An aiosmtpd server on 127.0.0.1 offering OAuth sign-in only, as the big providers do."""

    def __init__(self, endpoint: TokenEndpoint, *, style: str = "microsoft",
                 mechanisms: tuple[str, ...] = ("XOAUTH2",), tls: str = "none",
                 certificate: Certificate | None = None) -> None:
        self.handler = OAuthRecorder(endpoint, style)
        self.port = free_port()
        excluded = [m for m in ("LOGIN", "PLAIN", "XOAUTH2", "OAUTHBEARER") if m not in mechanisms]
        kwargs: dict = {"auth_required": True, "auth_require_tls": tls == "starttls",
                        "auth_exclude_mechanism": excluded}
        if tls == "starttls":
            kwargs.update(tls_context=certificate.server_context(), require_starttls=True)
        elif tls == "ssl":
            kwargs["ssl_context"] = certificate.server_context()
        self.controller = _Controller(self.handler, hostname=HOST, port=self.port, **kwargs)

    @property
    def server_name(self) -> str:
        """The server name to store in an SMTP server record."""
        return f"{HOST}:{self.port}"

    @property
    def messages(self):
        """Messages received so far."""
        return self.handler.messages

    def start(self) -> OAuthServer:
        """Start serving; counters start at zero after aiosmtpd's own readiness probe."""
        self.controller.start()
        with self.handler.lock:
            self.handler.connections = 0
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.controller.stop()


@dataclass(frozen=True)
class ServiceAccount:
    """A test service account: its email, private key (PEM) and JSON key file."""

    email: str
    pem: str
    json_key: str


@pytest.fixture(scope="session")
def service_account(tmp_path_factory) -> ServiceAccount:
    """An RSA key made for this test run, as Google hands it out."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    json_key = json.dumps({"type": "service_account", "project_id": "smtpsite-test",
                           "private_key_id": SA_KEY_ID, "private_key": pem,
                           "client_email": SA_EMAIL, "client_id": "104857600000000000001",
                           "token_uri": "https://oauth2.googleapis.com/token"})
    Path(tmp_path_factory.mktemp("sa") / "key.json").write_text(json_key)
    return ServiceAccount(SA_EMAIL, pem, json_key)


@pytest.fixture
def endpoint(service_account: ServiceAccount) -> Iterator[TokenEndpoint]:
    """A running token endpoint that knows the test application and service account."""
    public = serialization.load_pem_private_key(service_account.pem.encode(), None).public_key()
    server = TokenEndpoint(service_accounts={SA_EMAIL: public}, delegated={SA_EMAIL: {MAILBOX}})
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_cached_tokens() -> Iterator[None]:
    """Each test starts and ends with an empty process-wide token cache."""
    TOKENS.clear()
    yield
    TOKENS.clear()


@pytest.fixture
def start_oauth_server(endpoint: TokenEndpoint, certificate: Certificate) -> Iterator:
    """Start OAuth SMTP servers in a test: ``start_oauth_server(style=..., mechanisms=...)``."""
    started: list[OAuthServer] = []

    def start(**kwargs) -> OAuthServer:
        if kwargs.get("tls", "none") != "none":
            kwargs.setdefault("certificate", certificate)
        server = OAuthServer(endpoint, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
