"""``send_mail`` sending at once, one call per message, against Django and smtplib."""

from __future__ import annotations

from pathlib import Path

from bench import baselines
from bench.harness import Row, alternate, rate
from bench.messages import SENDER, SUBJECT, TEXT, recipient
from bench.setup import sqlite_app
from bench.sink import Sink
from smtpsite import send_mail, settings
from smtpsite.extensions import db
from smtpsite.servers import save_server
from smtpsite.sites import create_site


def prepare_shop(sink: Sink) -> None:
    """Site "shop" sending at once through one network server: the sink."""
    site = create_site("shop", "Shop")
    save_server(None, server_name=sink.server_name, method="network",
                options={"security": "none"}, sites=[site])
    settings.set_value("emails.queue_enabled", False)
    db.session.commit()


def run(folder: Path, count: int, rounds: int, sink: Sink) -> list[Row]:
    """Messages per second for each sender, alternating runs."""
    host, port = "127.0.0.1", sink.port
    with sqlite_app(folder) as app, app.app_context():
        prepare_shop(sink)

        def smtpsite_per_call() -> float:
            def work():
                for n in range(count):
                    result = send_mail("shop", to=[recipient(n)], subject=SUBJECT, text=TEXT,
                                       sender=SENDER)
                    if result.status != "sent":
                        raise RuntimeError(f"benchmark send failed: {result.error}")
                    db.session.remove()  # a web request ends after each send
            return rate(count, work)

        medians = alternate({
            "smtpsite": smtpsite_per_call,
            "django": lambda: rate(count, lambda: baselines.django_send_mail(host, port, count)),
            "smtplib": lambda: rate(count, lambda: baselines.smtplib_raw(host, port, count)),
        }, rounds)
    figure = medians["smtpsite"]
    return [
        Row(f"send_mail at once, per call ({count:,} msgs, {sink.kind})", figure, "msg/s",
            "Django send_mail per call", medians["django"], "≥ 1.0×",
            figure >= medians["django"]),
        Row("  — the Python limit: smtplib raw bytes, one connection", medians["smtplib"],
            "msg/s"),
    ]
