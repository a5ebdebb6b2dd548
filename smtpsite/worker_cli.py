"""CLI for the queue: ``worker``, ``serve`` (panel plus a background worker) and ``queue ...``."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from smtpsite import queue
from smtpsite.extensions import db
from smtpsite.models import EMAIL_STATUSES, Email
from smtpsite.worker import Worker, run_in_thread

queue_cli = AppGroup("queue", help="The email queue: list, resend, delete, clean up.")


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    elif root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and Ctrl-C ask for a clean stop; a second one stops at once."""

    def handle(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        logging.getLogger(__name__).info("stopping: finishing the message in flight, "
                                         "handing back the rest")
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


@click.command("worker")
@click.option("--once", is_flag=True, help="Send what is due, then exit.")
@click.option("--idle-poll", type=float, default=None,
              help="Seconds between looks at an idle queue (default: 5 on PostgreSQL, "
                   "where new mail wakes the worker at once; 1 on SQLite).")
def worker_command(once: bool, idle_poll: float | None) -> None:
    """Run a queue worker until SIGTERM or Ctrl-C (with --once: until the queue is drained)."""
    _setup_logging()
    stop = threading.Event()
    _stop_on_signals(stop)
    total = Worker(once=once, stop=stop, idle_poll=idle_poll).run()
    click.echo(f"sent {total.sent}, failed {total.failed}, to retry {total.retry}, "
               f"expired {total.expired}")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--worker/--no-worker", default=True, show_default=True,
              help="Run a queue worker in the background.")
@click.option("--catcher/--no-catcher", default=True, show_default=True,
              help="Run the mail catcher (unless SMTPSITE_CATCHER_ENABLED is off).")
def serve_command(host: str, port: int, worker: bool, catcher: bool) -> None:
    """Serve the admin panel with a queue worker and the mail catcher (the quick-start command)."""
    from werkzeug.serving import run_simple

    from smtpsite.catcher import start_in_background

    _setup_logging()
    app = current_app._get_current_object()
    stop = threading.Event()
    thread = run_in_thread(app, stop) if worker else None
    mail_catcher = start_in_background(app) if catcher else None

    def terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # the development server stops cleanly on it

    signal.signal(signal.SIGTERM, terminate)
    try:
        run_simple(host, port, app, threaded=True)
    finally:
        stop.set()
        if mail_catcher is not None:
            mail_catcher.stop()
        if thread is not None:
            thread.join(timeout=60)


@queue_cli.command("list")
@click.option("--status", type=click.Choice(EMAIL_STATUSES), default=None)
@click.option("--limit", type=int, default=50, show_default=True)
def queue_list(status: str | None, limit: int) -> None:
    """Counts per status, then the newest emails (id, status, priority, subject, last result)."""
    counts = queue.status_counts()
    click.echo("  ".join(f"{name}={counts.get(name, 0)}" for name in EMAIL_STATUSES))
    query = select(Email.id, Email.status, Email.priority, Email.message_id, Email.subject,
                   Email.last_result).order_by(Email.id.desc()).limit(limit)
    if status:
        query = query.where(Email.status == status)
    for row in db.session.execute(query):
        result = (row.last_result or "").replace("\n", " ")[:80]
        click.echo(f"{row.id}\t{row.status}\t{row.priority}\t{row.message_id}\t"
                   f"{row.subject[:60]}\t{result}")


def _selection(ids: tuple[int, ...], failed: bool, everything: bool):
    if sum((bool(ids), failed, everything)) != 1:
        raise click.UsageError("choose exactly one of: --id N (repeatable), --failed, --all")
    if ids:
        return queue.by_ids(ids)
    return queue.by_status("failed") if failed else queue.by_status(*EMAIL_STATUSES)


@queue_cli.command("resend")
@click.option("--id", "ids", type=int, multiple=True, help="An email id (repeatable).")
@click.option("--failed", is_flag=True, help="Every failed email.")
@click.option("--all", "everything", is_flag=True, help="Every email not being sent now.")
def queue_resend(ids: tuple[int, ...], failed: bool, everything: bool) -> None:
    """Send emails again: same bytes, same Message-ID; the retry window starts afresh."""
    count = queue.resend(_selection(ids, failed, everything), "resent from the command line")
    click.echo(f"{count} emails will be sent again")


@queue_cli.command("delete")
@click.option("--id", "ids", type=int, multiple=True, help="An email id (repeatable).")
@click.option("--failed", is_flag=True, help="Every failed email.")
@click.option("--all", "everything", is_flag=True, help="Every email not being sent now.")
@click.confirmation_option(prompt="Delete these emails for good?")
def queue_delete(ids: tuple[int, ...], failed: bool, everything: bool) -> None:
    """Delete emails from the queue or the archive (emails being sent are left alone)."""
    count = queue.delete_emails(_selection(ids, failed, everything))
    click.echo(f"{count} emails deleted")


@queue_cli.command("cleanup")
def queue_cleanup() -> None:
    """Expire due emails and delete archived emails older than their archive days."""
    expired = queue.expire_due()
    deleted = queue.cleanup_archive()
    click.echo(f"{expired} expired, {deleted} archived emails deleted")


def add_worker_commands(group: AppGroup) -> None:
    """Add ``worker``, ``serve`` and ``queue`` to the ``smtpsite`` command group."""
    group.add_command(worker_command)
    group.add_command(serve_command)
    from smtpsite.catcher import catcher_command

    group.add_command(catcher_command)
    group.add_command(queue_cli)
