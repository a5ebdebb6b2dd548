"""DKIM: key pairs, the DNS record to publish, and signing each site's outgoing messages."""

from __future__ import annotations

import base64
import dataclasses
import logging
from dataclasses import dataclass

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.crypto import parse_pem_private_key

from smtpsite import settings
from smtpsite.delivery import OutgoingMessage
from smtpsite.extensions import db
from smtpsite.models import Site
from smtpsite.secrets import Secret

log = logging.getLogger(__name__)

KEY_BITS = 2048
MIN_KEY_BITS = 1024  # receivers ignore shorter keys (RFC 8301)
CANONICALIZE = (b"relaxed", b"relaxed")
# Headers signed when present. Only these: headers a relay may add or rewrite
# (Received, Return-Path, ...) would break the signature.
SIGNED_HEADERS = (
    "From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
    "In-Reply-To", "References", "MIME-Version", "Content-Type",
    "Content-Transfer-Encoding", "Content-Language", "List-Id", "List-Unsubscribe",
    "List-Unsubscribe-Post", "X-Priority", "Importance", "Priority",
)
SETTING_KEYS = ("emails.dkim_domain", "emails.dkim_selector", "emails.dkim_private_key")


class DkimError(ValueError):
    """A DKIM key is unusable or a message could not be signed (never shows the key)."""


@dataclass(frozen=True)
class DnsRecord:
    """The TXT record that publishes a DKIM public key."""

    name: str
    value: str

    def zone_line(self) -> str:
        """The record as a zone-file line; values over 255 octets split into strings."""
        chunks = [self.value[i:i + 255] for i in range(0, len(self.value), 255)]
        return f"{self.name}. IN TXT " + " ".join(f'"{c}"' for c in chunks)


def _load_key(pem: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeError):
        # The library's message may quote the input: say only what is wrong.
        raise DkimError(
            "is not an unencrypted PEM private key (-----BEGIN PRIVATE KEY----- or "
            "-----BEGIN RSA PRIVATE KEY-----)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimError("must be an RSA key (k=rsa)")
    if key.key_size < MIN_KEY_BITS:
        raise DkimError(f"must be an RSA key of at least {MIN_KEY_BITS} bits")
    return key


def check_private_key(pem: str) -> None:
    """Raise ``DkimError`` unless ``pem`` is an RSA private key dkimpy can sign with."""
    _load_key(pem)
    try:
        parse_pem_private_key(pem.encode("ascii"))
    except Exception:
        raise DkimError("is a private key in a form the DKIM signer cannot read") from None


def generate_private_key() -> Secret:
    """A new RSA-2048 private key as PEM (PKCS#8)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Secret(pem.decode("ascii"))


def _ascii_domain(domain: str) -> str:
    return domain.strip().rstrip(".").lower().encode("idna").decode("ascii")


def dns_record(private_key: Secret, selector: str, domain: str) -> DnsRecord:
    """The TXT record (``<selector>._domainkey.<domain>``) publishing the key's public half."""
    public = _load_key(private_key.reveal()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DnsRecord(
        name=f"{selector}._domainkey.{_ascii_domain(domain)}",
        value="v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode("ascii"),
    )


class DkimSigner:
    """Signs messages with one domain, selector and key; never shows the key."""

    def __init__(self, domain: str, selector: str, private_key: Secret) -> None:
        self.domain = _ascii_domain(domain)
        self.selector = selector
        # dkimpy takes the PEM bytes and parses them on each call; measured, parsing is
        # about 3% of a signature (its pure-Python RSA dominates), so nothing is cached.
        self._pem = private_key.reveal().encode("ascii")

    def __repr__(self) -> str:
        return f"<DkimSigner d={self.domain} s={self.selector}>"

    def header(self, data: bytes) -> bytes:
        """The ``DKIM-Signature`` header line (CRLF-terminated) for the serialised ``data``."""
        present = {
            line.split(b":", 1)[0].strip().lower()
            for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            if line[:1] not in (b" ", b"\t") and b":" in line
        }
        include = [h.encode() for h in SIGNED_HEADERS if h.lower().encode() in present]
        try:
            return dkimpy.sign(
                data, self.selector.encode("ascii"), self.domain.encode("ascii"), self._pem,
                canonicalize=CANONICALIZE, include_headers=include,
            )
        except dkimpy.DKIMException as exc:
            # Messages about the message (e.g. no From) are safe; never the key's bytes.
            reason = str(exc) if isinstance(exc, dkimpy.ParameterError) else type(exc).__name__
            raise DkimError(f"DKIM signing failed for {self.domain}: {reason}") from None

    def sign(self, data: bytes) -> bytes:
        """``data`` with its DKIM-Signature header prepended."""
        return self.header(data) + data


def signer_for(site: Site | None) -> DkimSigner | None:
    """The signer for ``site``'s email, or None unless domain, selector and key are all set."""
    domain, selector, key = (settings.get(name, site) for name in SETTING_KEYS)
    if not (domain and selector and key):
        return None
    return DkimSigner(domain, selector, key)


def sign_outgoing(message: OutgoingMessage, site: Site | None) -> OutgoingMessage:
    """``message`` signed for ``site`` (a copy), or unchanged when the site has no DKIM key.

    Call it once the headers are final: the signed bytes are what is stored and sent.
    """
    signer = signer_for(site)
    if signer is None:
        return message
    return dataclasses.replace(message, data=signer.sign(message.data))


def generate_for_site(site: Site, selector: str, domain: str | None = None) -> DnsRecord:
    """Make a new key for ``site``, store domain, selector and key, and commit.

    ``domain`` defaults to the site's first domain name. Returns the record to publish;
    mail is signed with the new key from the next send on.
    """
    domain = domain or (site.domains[0] if site.domains else "")
    if not domain:
        raise DkimError(f"site {site.code_name} has no domain name: give the signing domain")
    key = generate_private_key()
    try:
        settings.set_value("emails.dkim_domain", domain, site)
        settings.set_value("emails.dkim_selector", selector, site)
        settings.set_value("emails.dkim_private_key", key, site)
    except settings.SettingError:
        db.session.rollback()
        raise
    db.session.commit()
    log.info("new DKIM key for site %s (selector %s, domain %s)", site.code_name, selector, domain)
    return dns_record(key, selector, domain)


def record_for_site(site: Site | None) -> DnsRecord | None:
    """The record to publish for the key ``site`` signs with now, or None without one."""
    domain, selector, key = (settings.get(name, site) for name in SETTING_KEYS)
    if not (domain and selector and key):
        return None
    return dns_record(key, selector, domain)
