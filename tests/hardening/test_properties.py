"""Property-based tests (hypothesis): hostile input gets a clear error, never a crash or an injection."""

from __future__ import annotations

import ipaddress
from email import message_from_bytes, policy
from email.utils import formataddr

import pytest
import tomli_w
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select

from smtpsite import settings
from smtpsite.addresses import AddressError, parse_server_name
from smtpsite.extensions import db
from smtpsite.messages import MessageError, build_message
from smtpsite.models import Setting, Site, SmtpServer
from smtpsite.secrets import Secret
from smtpsite.settings import SettingError
from smtpsite.sites import create_site

FAST = hsettings(max_examples=200, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
EXPECTED_HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "X-Priority", "Importance",
                    "Priority", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"]
# Text with the characters that break headers and lines, besides anything else.
hostile_text = st.text(alphabet=st.one_of(
    st.sampled_from("\r\n\x00\t :;,<>\"'()[]@\\=?"), st.characters(exclude_categories=("Cs",))),
    max_size=300)

# -- server names ---------------------------------------------------------------------------
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=1, max_size=4).map(".".join)
port = st.integers(1, 65535)


@FAST
@given(hostile_text)
def test_any_server_name_parses_or_says_why(name):
    try:
        address = parse_server_name(name)
    except AddressError as exc:
        assert str(exc)
        return
    assert 1 <= address.port <= 65535
    # An accepted name round-trips: written back as host:port, it parses to the same place.
    host = f"[{address.host}]" if ":" in address.host else address.host
    again = parse_server_name(f"{host}:{address.port}")
    assert (again.host, again.port) == (address.host, address.port)


@FAST
@given(st.one_of(hostname, st.ip_addresses(v=4).map(str)), port)
def test_valid_host_and_port_round_trip(host, number):
    address = parse_server_name(f"{host}:{number}")
    assert (address.host, address.port) == (host, number)
    assert parse_server_name(host).port == 25


@FAST
@given(st.ip_addresses(v=6), port)
def test_ipv6_in_brackets_round_trips(ip, number):
    address = parse_server_name(f"[{ip}]:{number}")
    assert ipaddress.ip_address(address.host) == ip and address.port == number


@FAST
@given(st.integers().filter(lambda n: not 1 <= n <= 65535))
def test_ports_outside_the_range_are_refused(number):
    with pytest.raises(AddressError):
        parse_server_name(f"mail.example.com:{number}")


# -- header building ------------------------------------------------------------------------
def built_or_refused(**kwargs):
    try:
        return build_message(**{"sender": "a@example.com", "to": ["b@example.com"],
                                "text": "body", "subject": "s", **kwargs})
    except MessageError as exc:
        assert str(exc)
        return None


def check_wire(prepared, extra_headers=()):
    data = prepared.outgoing.data
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    msg = message_from_bytes(data, policy=policy.default)
    assert sorted(msg.keys()) == sorted(EXPECTED_HEADERS + list(extra_headers))
    return msg


@FAST
@given(hostile_text)
def test_any_subject_is_refused_or_stays_one_header(subject):
    prepared = built_or_refused(subject=subject)
    if prepared is not None:
        msg = check_wire(prepared)
        assert " ".join(str(msg["Subject"]).split()) == " ".join(subject.split())


@FAST
@given(hostile_text, st.booleans())
def test_any_display_name_is_refused_or_adds_no_recipient(name, quoted):
    entry = formataddr((name, "c@example.com")) if quoted else f"{name} <c@example.com>"
    prepared = built_or_refused(to=[entry])
    if prepared is not None:
        check_wire(prepared)
        assert prepared.outgoing.recipients == ("c@example.com",)


@FAST
@given(hostile_text, st.from_regex(r"X-[A-Za-z0-9-]{1,30}", fullmatch=True))
def test_any_header_value_is_refused_or_stays_one_header(value, name):
    prepared = built_or_refused(headers={name: value})
    if prepared is not None:
        msg = check_wire(prepared, [name])
        assert " ".join(str(msg[name]).split()) == " ".join(value.split())


# -- settings values ------------------------------------------------------------------------
@pytest.fixture
def site(app):
    created = create_site("shop", "Shop")
    db.session.commit()
    return created


@FAST
@given(key=st.sampled_from(sorted(settings.KEYS)), raw=hostile_text, for_site=st.booleans())
def test_any_settings_value_is_refused_or_round_trips(site, key, raw, for_site):
    scope = site if for_site and not settings.KEYS[key].global_only else None
    try:
        try:
            value = settings.set_value(key, raw, scope)
        except SettingError as exc:
            assert str(exc).startswith(key)
            return
        stored = settings.get(key, scope)
        if settings.KEYS[key].secret:
            assert isinstance(stored, Secret) and stored.reveal() == value
        else:
            assert stored == value
    finally:
        db.session.rollback()


# -- TOML import files ----------------------------------------------------------------------
scalar = st.one_of(hostile_text, st.integers(-10**6, 10**6), st.booleans())
setting_table = st.dictionaries(st.sampled_from(sorted(settings.KEYS)), scalar, max_size=4)
site_table = st.fixed_dictionaries(
    {"code_name": st.one_of(st.sampled_from(["shop", "blog"]), hostile_text)},
    optional={"display_name": scalar, "domains": st.lists(hostile_text, max_size=2),
              "settings": setting_table})
server_table = st.fixed_dictionaries(
    {"server_name": st.one_of(hostname, hostile_text)},
    optional={"method": st.sampled_from(["network", "pickup", "nope"]),
              "priority": st.sampled_from(["high", "normal", "low", "urgent"]),
              "global": st.booleans(), "sites": st.lists(st.sampled_from(["shop", "blog"])),
              "max_connections": st.integers(-2, 5),
              "options": st.dictionaries(st.sampled_from(["security", "timeout", "password",
                                                          "bogus"]), scalar, max_size=3)})
document = st.fixed_dictionaries({}, optional={
    "settings": setting_table, "sites": st.lists(site_table, max_size=2),
    "servers": st.lists(server_table, max_size=2)})


def counts():
    return tuple(db.session.execute(select(func.count()).select_from(m)).scalar_one()
                 for m in (Site, SmtpServer, Setting))


@FAST
@given(st.one_of(document.map(lambda d: tomli_w.dumps(d).encode()), st.binary(max_size=200)))
def test_any_import_file_applies_wholly_or_not_at_all(app, data):
    from smtpsite.config_import import import_toml

    before = counts()
    report = import_toml(data, source="hostile.toml")
    if report.errors:
        assert all(place and message for place, message in report.errors)
        assert counts() == before  # nothing of a refused file is kept
    else:
        assert report.lines()
