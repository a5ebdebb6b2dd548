"""Parsing and checking server names, email addresses and header values."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from email.utils import getaddresses

import email_validator
from email_validator import EmailNotValidError, validate_email

from smtpsite.delivery import ServerAddress

DEFAULT_PORT = 25
# Intranet mail uses .local and localhost (the original's default sender is
# no-reply@localhost.local); email-validator documents editing this list to allow them.
for _allowed in ("local", "localhost"):
    if _allowed in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        email_validator.SPECIAL_USE_DOMAIN_NAMES.remove(_allowed)
# A bare address in which getaddresses() finds exactly itself (tests/core/test_addresses.py).
_BARE_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+")
# One DNS label: letters, digits, hyphens inside, 1-63 characters.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


# NUL and every character Python's email package treats as a line end (str.splitlines):
# any of them in a header would end it, or make the email package refuse it.
LINE_BREAKS = "\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


class AddressError(ValueError):
    """A server name, email address or header value is not acceptable."""


def _parse_port(text: str, name: str) -> int:
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if not (text.isascii() and text.isdigit()):
        raise AddressError(f"server name {name!r}: port {text!r} is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise AddressError(f"server name {name!r}: port {port} is outside 1-65535")
    return port


def _check_host(host: str, name: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise AddressError(f"server name {name!r}: {host!r} is not a valid host name") from None
    labels = ascii_host.rstrip(".").split(".")
    if len(ascii_host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise AddressError(f"server name {name!r}: {host!r} is not a valid host name")
    return ascii_host.rstrip(".").lower()


def parse_server_name(name: str) -> ServerAddress:
    """Parse ``host``, ``host:port``, ``[ipv6]`` or ``[ipv6]:port`` (default port 25)."""
    if not isinstance(name, str):
        raise AddressError("server name must be text")
    text = name.strip()
    if not text:
        raise AddressError("server name is empty")
    if any(ch.isspace() or ch in "/\\@" for ch in text) or "\x00" in text:
        raise AddressError(f"server name {name!r} contains characters a host name cannot have")
    port = DEFAULT_PORT
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"server name {name!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise AddressError(f"server name {name!r}: expected ':port' after ']'")
            port = _parse_port(rest[1:], name)
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise AddressError(f"server name {name!r}: {host!r} is not an IPv6 address") from None
        return ServerAddress(name=text, host=host, port=port)
    if text.count(":") > 1:
        raise AddressError(
            f"server name {name!r}: write an IPv6 address in brackets, e.g. [::1]:25"
        )
    host, sep, port_text = text.partition(":")
    if sep:
        port = _parse_port(port_text, name)
    return ServerAddress(name=text, host=_check_host(host, name), port=port)


def check_address(address: str) -> str:
    """Check one email address; return it normalised (IDNA domain kept readable)."""
    if not isinstance(address, str):
        raise AddressError(f"{address!r} is not an email address (expected text)")
    if any(ch in address for ch in LINE_BREAKS):
        raise AddressError(f"{address!r} contains a line break")
    try:
        return _normalized(address.strip())
    except EmailNotValidError as exc:
        raise AddressError(f"{address!r} is not a valid email address: {exc}") from None


@functools.lru_cache(maxsize=4096)
def _normalized(address: str) -> str:
    # Cached: the same few senders are checked on every send (a failure is not cached).
    return validate_email(
        address, check_deliverability=False, allow_smtputf8=True, test_environment=True,
        globally_deliverable=False,
    ).normalized


def envelope_address(address: str) -> tuple[str, bool]:
    """The address as it goes in MAIL FROM / RCPT TO: IDNA domain; and whether it needs SMTPUTF8."""
    local, _, domain = address.rpartition("@")
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if domain else domain
    except UnicodeError:
        ascii_domain = domain
    needs_utf8 = not local.isascii()
    return f"{local}@{ascii_domain}", needs_utf8


def mailbox_address(entry: str, what: str = "address") -> str:
    """The checked address of one ``addr`` or ``Name <addr>`` entry."""
    if not isinstance(entry, str):
        raise AddressError(f"{what} {entry!r} is not an email address (expected text)")
    if any(ch in entry for ch in LINE_BREAKS):
        raise AddressError(f"{what} {entry!r} contains a line break")
    if _BARE_ADDRESS.fullmatch(entry):
        return check_address(entry)  # what getaddresses() would find, without parsing
    pairs = getaddresses([entry])
    if len(pairs) != 1 or not pairs[0][1]:
        raise AddressError(f"{what} {entry!r} must be one email address")
    return check_address(pairs[0][1])


def check_recipients(value: object, what: str) -> list[str]:
    """Check a list of ``addr`` / ``Name <addr>`` entries; return the bare addresses.

    A bare string is an error: iterating it would give single letters.
    """
    if value is None:
        return []
    if isinstance(value, str | bytes):
        raise AddressError(f"{what} must be a list of addresses, not a single string")
    if not isinstance(value, Iterable):
        raise AddressError(f"{what} must be a list of addresses")
    return [mailbox_address(a, what) for a in value]


def check_header_value(name: str, value: str) -> str:
    """Refuse CR, LF or NUL in a header value (header injection)."""
    if not isinstance(value, str):
        raise AddressError(f"header {name!r} must be text")
    if any(ch in value for ch in LINE_BREAKS):
        raise AddressError(f"header {name!r} contains a line break")
    return value


def check_header_name(name: str) -> str:
    """A header name: printable ASCII, no colon or spaces."""
    if not name or not all(33 <= ord(ch) <= 126 and ch != ":" for ch in name):
        raise AddressError(f"{name!r} is not a valid header name")
    return name


def matches_sender_filter(sender: str, filter_text: str | None) -> bool:
    """Whether ``sender`` matches a filter of addresses and/or domains (one per line or comma)."""
    if not filter_text:
        return True
    sender = sender.strip().lower()
    domain = sender.rpartition("@")[2]
    for entry in re.split(r"[\s,]+", filter_text.strip().lower()):
        if not entry:
            continue
        if entry.startswith("@") or "@" not in entry:
            if entry.lstrip("@") == domain:
                return True
        elif entry == sender:
            return True
    return False
