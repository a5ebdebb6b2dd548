"""OAuth 2.0 access tokens for SMTP sign-in: fetched with Authlib, cached per process, never shown.

Two grants, both service to service (no browser):

- the client-credentials grant (Microsoft 365 and any OAuth provider): client id + secret;
- the JWT bearer grant (RFC 7523) for a Google service account with domain-wide delegation:
  a JWT signed with the account's private key, ``sub`` = the mailbox to send as.

Tokens live in one cache per process, shared by every connection to the same server, and
are used until shortly before they expire. Token values and credentials are held as
:class:`Secret` and scrubbed from every error message.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import AssertionSession, OAuth2Session
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

from smtpsite.delivery import Secret

PROVIDERS = (("microsoft", "Microsoft 365"), ("google", "Google Workspace"),
             ("generic", "Other OAuth 2.0 provider"))
MICROSOFT_TOKEN_ENDPOINT = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
GOOGLE_TOKEN_ENDPOINT = "https://oauth2.googleapis.com/token"
DEFAULT_SCOPES = {"microsoft": "https://outlook.office365.com/.default",
                  "google": "https://mail.google.com/"}
# A token is renewed this long before it expires, so that it never runs out mid-connection.
REFRESH_MARGIN = 60.0
# Used when a token endpoint does not say how long its token lives.
ASSUMED_LIFETIME = 600.0
HIDDEN = "[hidden]"
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class TokenError(Exception):
    """No token could be had; the message names the endpoint and its answer, never a secret."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ServiceAccountKey:
    """A Google service account's private key (PEM) and, from a JSON key file, its email."""

    pem: Secret = field(repr=False)
    client_email: str | None = None
    key_id: str | None = None


@functools.lru_cache(maxsize=16)  # loading and checking an RSA key is slow; plugins are built often
def parse_private_key(text: str) -> ServiceAccountKey:
    """Read an RSA private key given as PEM or as a Google JSON key file; ValueError if not."""
    text = text.strip()
    client_email = key_id = None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError("is neither a PEM private key nor a JSON key file") from None
        if not isinstance(data, dict) or not isinstance(data.get("private_key"), str):
            raise ValueError("is a JSON file without a 'private_key' (use the service account's key file)")
        client_email = data.get("client_email") if isinstance(data.get("client_email"), str) else None
        key_id = data.get("private_key_id") if isinstance(data.get("private_key_id"), str) else None
        text = data["private_key"].strip()
    text = _pem_lines(text)
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        # Never echo the value: it is the secret.
        raise ValueError("is not a readable unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("must be an RSA private key (Google signs service account JWTs with RS256)")
    return ServiceAccountKey(Secret(text), client_email, key_id)


_PEM = re.compile(r"(-----BEGIN [A-Z ]+-----)\s*(.*?)\s*(-----END [A-Z ]+-----)", re.S)


def _pem_lines(text: str) -> str:
    # A password input (the admin shows secrets in one) drops the line breaks of a pasted
    # PEM key: put them back.
    match = _PEM.fullmatch(text)
    if match is None:
        return text
    body = "".join(match.group(2).split())
    return "\n".join([match.group(1), *(body[i:i + 64] for i in range(0, len(body), 64)),
                      match.group(3)]) + "\n"


def token_endpoint_problem(url: str) -> str | None:
    """Why ``url`` cannot be a token endpoint (https, or http only on this machine), or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an https:// URL"
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        # The client secret travels in the request: plain http only to this machine.
        return "must use https:// (plain http only for localhost)"
    return None


@dataclass(frozen=True)
class OAuthConfig:
    """Where and how to get a token for one mailbox; secrets are held as :class:`Secret`."""

    provider: str
    token_endpoint: str
    client_id: str
    scope: str
    mailbox: str
    client_secret: Secret | None = field(default=None, repr=False)
    private_key: ServiceAccountKey | None = field(default=None, repr=False)
    timeout: float = 30.0

    @property
    def grant(self) -> str:
        """A short human name of the grant, for transcripts."""
        return "JWT bearer grant (service account)" if self.private_key else "client credentials grant"

    def cache_key(self) -> tuple[str, ...]:
        """Endpoint, client, scope and mailbox, plus a fingerprint of the credential.

        The fingerprint makes a changed secret take effect at once instead of after the
        cached token expires; it is a one-way hash and never leaves this process.
        """
        credential = self.private_key.pem if self.private_key else self.client_secret
        plain = credential.reveal() if credential else ""
        return (self.token_endpoint, self.client_id, self.scope, self.mailbox,
                hashlib.sha256(plain.encode()).hexdigest())

    def secrets(self) -> list[str]:
        """The plain credential values, to scrub them from messages."""
        values = [self.client_secret.reveal() if self.client_secret else ""]
        if self.private_key:
            values.append(self.private_key.pem.reveal())
            # A PEM body line is as secret as the whole key.
            values.extend(line for line in self.private_key.pem.reveal().splitlines()
                          if len(line) >= 16 and not line.startswith("-----"))
        return [v for v in values if v]


# Which OAuth options each provider uses; the others are dropped when options are cleaned.
OAUTH_OPTIONS = {
    "microsoft": ("provider", "tenant", "token_endpoint", "client_id", "client_secret", "scope",
                  "mailbox"),
    "google": ("provider", "token_endpoint", "client_id", "private_key", "scope", "mailbox"),
    "generic": ("provider", "token_endpoint", "client_id", "client_secret", "scope", "mailbox"),
}
_TENANT = re.compile(r"[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_MAILBOX = re.compile(r"[^@\s\x00-\x1f\x7f]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")


def _text(value: Any) -> str:
    return (value.reveal() if isinstance(value, Secret) else str(value or "")).strip()


def check_options(options: dict[str, Any]) -> dict[str, str]:
    """Messages per field for the OAuth options of the network plugin (auth = oauth2)."""
    errors: dict[str, str] = {}
    provider = options.get("provider")
    endpoint = options.get("token_endpoint")
    if endpoint:
        problem = token_endpoint_problem(endpoint)
        if problem:
            errors["token_endpoint"] = problem
    elif provider == "generic":
        errors["token_endpoint"] = "is required for a generic provider"
    tenant = options.get("tenant")
    if provider == "microsoft":
        if tenant and tenant.lower() in {"common", "organizations", "consumers"}:
            errors["tenant"] = ("must be your own tenant (its ID or domain): sign-in without a "
                                "user needs one, not 'common'")
        elif tenant and not _TENANT.fullmatch(tenant):
            errors["tenant"] = "must be a tenant ID (a GUID) or a domain such as contoso.onmicrosoft.com"
        elif not tenant and not endpoint:
            errors["tenant"] = "is required for Microsoft 365 (or give the token endpoint)"
        scope = options.get("scope")
        if scope and not scope.endswith("/.default"):
            errors["scope"] = ("must end with /.default for an application sign-in, "
                               "e.g. https://outlook.office365.com/.default")
    key = None
    if provider == "google":
        if not _text(options.get("private_key")):
            errors["private_key"] = "is required for Google (the service account's key)"
        else:
            try:
                key = parse_private_key(_text(options["private_key"]))
            except ValueError as exc:
                errors["private_key"] = str(exc)
    elif not _text(options.get("client_secret")):
        errors["client_secret"] = "is required"
    client_id = options.get("client_id")
    if key is not None and key.client_email and client_id and client_id != key.client_email:
        errors["client_id"] = f"differs from the key file's client_email ({key.client_email})"
    elif not client_id and not (key is not None and key.client_email):
        errors["client_id"] = ("is required (the service account's email)" if provider == "google"
                               else "is required")
    elif provider == "google" and client_id and "@" not in client_id:
        errors["client_id"] = "must be the service account's email (client_email), not its number"
    mailbox = options.get("mailbox")
    if not mailbox:
        errors["mailbox"] = "is required: the mailbox to send as"
    elif not mailbox.isascii() or not _MAILBOX.fullmatch(mailbox):
        errors["mailbox"] = "must be an email address (ASCII), e.g. noreply@example.com"
    return errors


def config_from_options(options: dict[str, Any]) -> OAuthConfig:
    """The token request described by cleaned network options (auth = oauth2)."""
    provider = options.get("provider") or "microsoft"
    key = parse_private_key(_text(options["private_key"])) if provider == "google" else None
    endpoint = options.get("token_endpoint") or (
        GOOGLE_TOKEN_ENDPOINT if provider == "google"
        else MICROSOFT_TOKEN_ENDPOINT.format(tenant=options.get("tenant")))
    secret = _text(options.get("client_secret"))
    return OAuthConfig(
        provider=provider,
        token_endpoint=endpoint,
        client_id=options.get("client_id") or (key.client_email if key else "") or "",
        scope=options.get("scope") or DEFAULT_SCOPES.get(provider, ""),
        mailbox=options["mailbox"],
        client_secret=Secret(secret) if secret and key is None else None,
        private_key=key,
        timeout=float(options.get("timeout") or 30.0),
    )


@dataclass
class AccessToken:
    """A bearer token, when it stops being usable, and whether this call fetched it."""

    value: Secret = field(repr=False)
    usable_until: float
    fetched: bool = False
    lifetime: float = 0.0


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by a marker."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def fetch(config: OAuthConfig) -> tuple[Secret, float]:
    """Ask the token endpoint for a new token; return it and its lifetime in seconds."""
    where = config.token_endpoint
    grant = _jwt_bearer if config.private_key is not None else _client_credentials
    try:
        token = grant(config)
    except AuthlibBaseError as exc:  # the endpoint's own error: invalid_client, AADSTS...
        detail = f"{exc.error}: {exc.description}" if exc.description else str(exc.error)
        raise TokenError(scrub(f"the token endpoint {where} refused: {detail}", config.secrets())) from None
    except requests.Timeout:
        raise TokenError(f"the token endpoint {where} did not answer in time") from None
    except requests.RequestException as exc:
        raise TokenError(scrub(f"the token endpoint {where} failed: {exc}", config.secrets())) from None
    except ValueError as exc:  # an answer that is not a JSON object
        message = f"the token endpoint {where} answered oddly: {exc}"
        raise TokenError(scrub(message, config.secrets())) from None
    value = token.get("access_token")
    if not isinstance(value, str) or not value:
        raise TokenError(f"the token endpoint {where} answered without an access token")
    token_type = str(token.get("token_type") or "Bearer")
    if token_type.lower() != "bearer":
        raise TokenError(f"the token endpoint {where} gave a {token_type!r} token, not a bearer token")
    try:
        lifetime = float(token.get("expires_in"))
    except (TypeError, ValueError):
        lifetime = ASSUMED_LIFETIME
    return Secret(value), lifetime


def _client_credentials(config: OAuthConfig) -> dict:
    # Microsoft documents the secret in the form body; RFC 6749 makes HTTP Basic the one
    # every server must accept.
    method = "client_secret_post" if config.provider == "microsoft" else "client_secret_basic"
    with OAuth2Session(config.client_id, config.client_secret.reveal(), scope=config.scope,
                       token_endpoint_auth_method=method) as session:
        return session.fetch_token(config.token_endpoint, grant_type="client_credentials",
                                   timeout=config.timeout)


def _jwt_bearer(config: OAuthConfig) -> dict:
    key = config.private_key
    header = {"alg": "RS256", "typ": "JWT"}
    if key.key_id:
        header["kid"] = key.key_id
    # Google wants the scope as a claim of the JWT (not a form field) and aud = the endpoint.
    # A new session per fetch: Authlib keeps the generated "jti" in the claims it is given.
    with AssertionSession(token_endpoint=config.token_endpoint, issuer=config.client_id,
                          subject=config.mailbox, audience=config.token_endpoint,
                          claims={"scope": config.scope}, header=header,
                          key=RSAKey.import_key(key.pem.reveal()), default_timeout=config.timeout) as session:
        return session.refresh_token()


class TokenCache:
    """Tokens by :meth:`OAuthConfig.cache_key`, shared by every connection in this process."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, ...], AccessToken] = {}
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"<TokenCache {len(self._tokens)} token(s)>"

    def get(self, config: OAuthConfig, *, fresh: bool = False) -> AccessToken:
        """A usable token for ``config``: the cached one, or a new one (always new if ``fresh``)."""
        key = config.cache_key()
        # One fetch per key at a time: connections opened together share the new token.
        with self._lock(key):
            cached = self._tokens.get(key)
            if cached is not None and not fresh and time.monotonic() < cached.usable_until:
                return AccessToken(cached.value, cached.usable_until, False, cached.lifetime)
            value, lifetime = fetch(config)
            token = AccessToken(value, time.monotonic() + lifetime - REFRESH_MARGIN, True, lifetime)
            self._tokens[key] = token
            return token

    def invalidate(self, config: OAuthConfig, value: Secret) -> None:
        """Forget the cached token if it is still ``value`` (a server refused it)."""
        key = config.cache_key()
        with self._lock(key):
            cached = self._tokens.get(key)
            if cached is not None and cached.value == value:
                del self._tokens[key]

    def _lock(self, key: tuple[str, ...]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def clear(self) -> None:
        """Forget every token."""
        with self._guard:
            self._tokens.clear()


#: The process-wide cache used by the network plugin.
TOKENS = TokenCache()
