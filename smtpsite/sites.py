"""Creating, changing and finding sites, with the checks the CLI and the panel share."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import func, select

from smtpsite.extensions import db
from smtpsite.models import Email, Site, server_sites

CODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
DOMAIN = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


class SiteError(ValueError):
    """A site cannot be created, changed or deleted as asked."""


def check_code_name(code_name: str) -> str:
    """A code name: letters, digits, ``_ . -``, starting with a letter or digit."""
    code_name = (code_name or "").strip()
    if not CODE_NAME.match(code_name):
        raise SiteError(
            f"code name {code_name!r} must start with a letter or digit and use only "
            "letters, digits, '_', '.' and '-' (at most 100)"
        )
    return code_name


def check_domains(domains: Iterable[str]) -> list[str]:
    """Domain names of a site, lower-cased, IDNA-checked, without duplicates."""
    result: list[str] = []
    for raw in domains:
        name = raw.strip().lower().rstrip(".")
        if not name:
            continue
        try:
            ascii_name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise SiteError(f"{raw!r} is not a valid domain name") from None
        if not DOMAIN.match(ascii_name):
            raise SiteError(f"{raw!r} is not a valid domain name")
        if name not in result:
            result.append(name)
    return result


def find_site(code_name: str) -> Site | None:
    """The site with ``code_name`` (case-insensitive), or None."""
    return db.session.execute(
        select(Site).where(Site.code_key == code_name.strip().lower())
    ).scalar_one_or_none()


def create_site(code_name: str, display_name: str, domains: Iterable[str] = ()) -> Site:
    """Add a new site (the caller commits)."""
    code_name = check_code_name(code_name)
    if find_site(code_name) is not None:
        raise SiteError(f"a site with code name {code_name!r} already exists")
    site = Site(
        code_name=code_name,
        code_key=code_name.lower(),
        display_name=(display_name or code_name).strip(),
        domains=check_domains(domains),
    )
    db.session.add(site)
    return site


def site_dependents(site: Site) -> list[str]:
    """Why ``site`` cannot be deleted now: servers or queued emails that depend on it."""
    reasons = []
    servers = db.session.execute(
        select(func.count()).select_from(server_sites).where(server_sites.c.site_id == site.id)
    ).scalar_one()
    if servers:
        reasons.append(f"{servers} SMTP server(s) are assigned to it")
    emails = db.session.execute(
        select(func.count()).select_from(Email).where(Email.site_id == site.id)
    ).scalar_one()
    if emails:
        reasons.append(f"{emails} email(s) in the queue or archive belong to it")
    return reasons


def delete_site(site: Site) -> None:
    """Delete ``site``, refusing while servers or emails depend on it (the caller commits)."""
    reasons = site_dependents(site)
    if reasons:
        raise SiteError(f"site {site.code_name!r} cannot be deleted: " + "; ".join(reasons))
    db.session.delete(site)
