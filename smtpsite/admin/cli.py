"""``flask --app app smtpsite user add EMAIL (--global-admin | --site CODE ...) [--password-stdin]``."""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from smtpsite.admin.auth import UserError, create_user
from smtpsite.cli import smtpsite_cli
from smtpsite.extensions import db
from smtpsite.sites import find_site

user_cli = AppGroup("user", help="Manage who may sign in to the admin panel.")


@user_cli.command("add")
@click.argument("email")
@click.option("--global-admin", is_flag=True, help="Manages every site, global servers and users.")
@click.option("--site", "site_codes", multiple=True, metavar="CODE",
              help="A site this site administrator manages (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def user_add(email: str, global_admin: bool, site_codes: tuple[str, ...], password_stdin: bool) -> None:
    """Create a user; the password is prompted for unless read from standard input."""
    if global_admin == bool(site_codes):
        raise click.UsageError("give either --global-admin or at least one --site CODE")
    sites = []
    for code in site_codes:
        site = find_site(code)
        if site is None:
            raise click.ClickException(f"no site with code name {code!r}")
        sites.append(site)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = create_user(email, password, is_global_admin=global_admin, sites=sites)
    except UserError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    role = "global administrator" if global_admin else "administrator of " + ", ".join(site_codes)
    click.echo(f"created user {user.email} ({role})")


smtpsite_cli.add_command(user_cli)
