"""CLI for the encryption keys: ``smtpsite rotate-secrets`` and ``smtpsite check-keys``."""

from __future__ import annotations

import sys

import click

from smtpsite.keys import RotationError, check_keys, rotate_secrets


@click.command("rotate-secrets")
def rotate_secrets_command() -> None:
    """Re-encrypt every stored secret with the newest key of SMTPSITE_SECRET_KEYS."""
    try:
        rotation = rotate_secrets()
    except RotationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"re-encrypted {rotation.total} stored secrets with the newest key "
        f"({rotation.servers} of servers, {rotation.settings} settings); "
        "older keys may now be removed from SMTPSITE_SECRET_KEYS"
    )


@click.command("check-keys")
def check_keys_command() -> None:
    """Try every stored secret with SMTPSITE_SECRET_KEYS; exit 1 if any cannot be read."""
    result = check_keys()
    if not result.ok:
        click.echo(result.message, err=True)
        sys.exit(1)
    click.echo(f"all {result.total} stored secrets can be decrypted")
    if result.old_key:
        click.echo(f"{result.old_key} of them use an older key: run rotate-secrets")


def add_key_commands(group: click.Group) -> None:
    """Add the key commands to the ``smtpsite`` command group."""
    group.add_command(rotate_secrets_command)
    group.add_command(check_keys_command)
