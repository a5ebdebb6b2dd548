"""Queueing emails with ``send_mail``, against raw SQLAlchemy Core inserts of the same rows."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, insert, select

from bench.harness import Row, alternate, rate
from bench.messages import SENDER, SUBJECT, TEXT, recipient
from bench.setup import sqlite_app
from smtpsite import send_mail
from smtpsite.extensions import db
from smtpsite.models import Email, EmailAttachment, EmailAttempt
from smtpsite.sites import create_site


def run(folder: Path, count: int, rounds: int) -> list[Row]:
    """Emails queued per second, each way."""
    with sqlite_app(folder) as app, app.app_context():
        create_site("shop", "Shop")
        db.session.commit()

        def clear() -> None:
            with db.engine.begin() as conn:
                for model in (EmailAttempt, EmailAttachment, Email):
                    conn.execute(delete(model))

        def smtpsite_queue() -> float:
            clear()

            def work():
                for n in range(count):
                    send_mail("shop", to=[recipient(n)], subject=SUBJECT, text=TEXT, sender=SENDER,
                              queue=True)
            return rate(count, work)

        def core_inserts() -> float:
            # The same rows as smtpsite wrote, re-inserted one statement and commit each.
            rows = [dict(r._mapping) for r in db.session.execute(select(Email.__table__))]
            clear()
            for n, row in enumerate(rows):
                row.pop("id")
                row["message_id"] = f"<core-{n}>"

            def work():
                for row in rows:
                    with db.engine.begin() as conn:
                        conn.execute(insert(Email.__table__), row)
            return rate(len(rows), work)

        medians = alternate({"smtpsite": smtpsite_queue, "core": core_inserts}, rounds)
    return [Row(f"queueing {count:,} emails with send_mail (SQLite)", medians["smtpsite"],
                "msg/s", "SQLAlchemy Core inserts", medians["core"], "≥ 0.5×",
                medians["smtpsite"] >= 0.5 * medians["core"])]
