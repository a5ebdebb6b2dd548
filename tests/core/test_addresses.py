"""Server names, addresses, header values and sender filters."""

from email.utils import getaddresses

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from smtpsite.addresses import (
    AddressError,
    check_address,
    check_header_value,
    check_recipients,
    envelope_address,
    mailbox_address,
    matches_sender_filter,
    parse_server_name,
)


@pytest.mark.parametrize(
    ("name", "host", "port"),
    [
        ("mail.example.com", "mail.example.com", 25),
        ("127.0.0.1:26", "127.0.0.1", 26),
        ("localhost", "localhost", 25),
        ("[::1]:2525", "::1", 2525),
        ("[2001:db8::1]", "2001:db8::1", 25),
        ("Smtp.Example.COM:587", "smtp.example.com", 587),
        ("bücher.example:465", "xn--bcher-kva.example", 465),
        (" mail.example.com ", "mail.example.com", 25),
    ],
)
def test_server_names_parse(name, host, port):
    address = parse_server_name(name)
    assert (address.host, address.port) == (host, port)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty"),
        ("mail.example.com:0", "outside 1-65535"),
        ("mail.example.com:65536", "outside 1-65535"),
        ("mail.example.com:smtp", "not a number"),
        ("mail.example.com:²", "not a number"),  # a digit to str.isdigit(), not to int()
        ("[::1]:２５", "not a number"),
        ("::1", "brackets"),
        ("[::1", "missing ']'"),
        ("[::1]25", "':port'"),
        ("[nothex]:25", "not an IPv6 address"),
        ("mail example.com", "characters"),
        ("mail.example.com\r\nRCPT", "characters"),
        ("-bad.example.com", "not a valid host name"),
        ("a" * 64 + ".example.com", "not a valid host name"),
        ("user@host", "characters"),
    ],
)
def test_bad_server_names_say_why(name, fragment):
    with pytest.raises(AddressError, match=None) as info:
        parse_server_name(name)
    assert fragment in str(info.value)


def test_addresses_are_checked():
    assert check_address("no-reply@localhost.local") == "no-reply@localhost.local"
    assert check_address("Ünïcode@exämple.de") == "Ünïcode@exämple.de"
    for bad in ("not-an-address", "a@b@c", "x@exa mple.com", "evil@example.com\r\nBcc: x@y.z"):
        with pytest.raises(AddressError):
            check_address(bad)


def test_a_bare_string_is_not_a_recipient_list():
    with pytest.raises(AddressError, match="list of addresses"):
        check_recipients("a@example.com", "to")
    assert check_recipients(["a@example.com"], "to") == ["a@example.com"]


def test_header_values_refuse_line_breaks():
    for value in ("a\r\nBcc: x@example.com", "a\nb", "a\rb", "a\x00b"):
        with pytest.raises(AddressError, match="line break"):
            check_header_value("Subject", value)


def test_envelope_addresses_use_idna_and_flag_utf8_local_parts():
    assert envelope_address("user@bücher.example") == ("user@xn--bcher-kva.example", False)
    assert envelope_address("jörg@example.com") == ("jörg@example.com", True)


def test_sender_filter_matches_addresses_and_domains():
    rule = "news@example.com\nshop.example\n@other.example"
    assert matches_sender_filter("news@example.com", rule)
    assert matches_sender_filter("NEWS@Example.com", rule)
    assert matches_sender_filter("anyone@shop.example", rule)
    assert matches_sender_filter("x@other.example", rule)
    assert not matches_sender_filter("other@example.com", rule)
    assert not matches_sender_filter("x@sub.shop.example", rule)
    assert matches_sender_filter("anyone@anywhere.example", None)


@hsettings(max_examples=500, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9._%+-]{1,12}@[A-Za-z0-9.-]{1,12}", fullmatch=True))
def test_a_bare_address_is_read_as_getaddresses_reads_it(entry):
    # mailbox_address skips the parser for these entries: the parser must find the entry itself.
    assert getaddresses([entry]) == [("", entry)]
    try:
        expected = check_address(entry)
    except AddressError:
        with pytest.raises(AddressError):
            mailbox_address(entry)
    else:
        assert mailbox_address(entry) == expected
