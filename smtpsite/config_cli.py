"""CLI for DKIM keys and configuration as code: ``smtpsite dkim ...``, ``export``, ``import``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import AppGroup

from smtpsite import config_export, config_import, dkim, settings
from smtpsite.models import Site
from smtpsite.sites import find_site

dkim_cli = AppGroup("dkim", help="DKIM signing keys of sites.")


def add_commands(group: click.Group) -> None:
    """Attach ``dkim``, ``export`` and ``import`` to the ``smtpsite`` command group."""
    group.add_command(dkim_cli)
    group.add_command(export_command)
    group.add_command(import_command)


def _site(code: str) -> Site:
    site = find_site(code)
    if site is None:
        raise click.ClickException(f"no site with code name {code!r}")
    return site


def _echo_record(record: dkim.DnsRecord) -> None:
    click.echo("Publish this DNS TXT record:")
    click.echo(f"  name:  {record.name}")
    click.echo(f"  value: {record.value}")
    click.echo("Zone file line:")
    click.echo(f"  {record.zone_line()}")


@dkim_cli.command("generate")
@click.option("--site", "site_code", required=True, help="Site code name.")
@click.option("--selector", required=True, help="DKIM selector, e.g. 2025a.")
@click.option("--domain", default=None, help="Signing domain (default: the site's first domain).")
@click.option("--replace", is_flag=True, help="Replace a key the site already has.")
def dkim_generate(site_code: str, selector: str, domain: str | None, replace: bool) -> None:
    """Make a new RSA-2048 key for a site, store it, and print the DNS record to publish."""
    site = _site(site_code)
    if not replace and settings.resolve("emails.dkim_private_key", site).source == "site":
        raise click.ClickException(
            f"site {site.code_name} already has a DKIM key: give --replace to make a new one "
            "(publish the new record before mail signed with it reaches receivers)"
        )
    try:
        record = dkim.generate_for_site(site, selector, domain)
    except (dkim.DkimError, settings.SettingError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"new DKIM key stored for site {site.code_name}; mail is signed from now on")
    _echo_record(record)


@dkim_cli.command("record")
@click.option("--site", "site_code", required=True, help="Site code name.")
def dkim_record(site_code: str) -> None:
    """Print the DNS record for the key a site signs with now."""
    site = _site(site_code)
    record = dkim.record_for_site(site)
    if record is None:
        raise click.ClickException(f"site {site.code_name} has no complete DKIM settings")
    _echo_record(record)


@click.command("export")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of standard output.")
def export_command(output: Path | None) -> None:
    """Write sites, servers and settings as TOML; secrets become ${NAME} references."""
    text = config_export.export_toml()
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"configuration written to {output}", err=True)


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
def import_command(file: Path, dry_run: bool) -> None:
    """Apply a TOML configuration file: all of it, or nothing if any part is invalid."""
    report = config_import.import_toml(file.read_bytes(), source=str(file), dry_run=dry_run)
    for line in report.lines():
        click.echo(line)
    if report.errors:
        for place, message in report.errors:
            click.echo(f"error: {place}: {message}", err=True)
        click.echo(f"{len(report.errors)} error(s): nothing was changed", err=True)
        sys.exit(1)
