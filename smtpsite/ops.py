"""``/healthz`` for load balancers and ``/metrics`` for Prometheus (off unless enabled).

``/healthz`` needs no sign-in and tells nothing secret: 200 when the database answers and
a worker beat recently, else 503, with a JSON body saying which part failed.

``/metrics`` (``SMTPSITE_METRICS_ENABLED``; ``SMTPSITE_METRICS_TOKEN`` asks for
``Authorization: Bearer <token>``) shows the queue depth by status, messages sent and
failed per server over the last hour and day (from the database, so for every worker),
live workers, each server's last check, and the send latency observed in this process.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from datetime import timedelta

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from smtpsite import alerts, failover, queue
from smtpsite.extensions import db
from smtpsite.models import EMAIL_STATUSES, ServerHealth, SmtpServer, WorkerBeat, utcnow
from smtpsite.routing import ChainEntry

log = logging.getLogger(__name__)
ops = Blueprint("ops", __name__)

# Observed by the failover engine of this process (the web app's sends at once and its
# background worker); a separate worker process keeps its own.
SEND_SECONDS = Histogram(
    "smtpsite_send_seconds", "Time one message took to send through a server",
    ["server", "result"], registry=None,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def observe_send(entry: ChainEntry, _job: failover.Job, seconds: float, ok: bool) -> None:
    """Failover hook: one message's send time."""
    SEND_SECONDS.labels(server=entry.name, result="sent" if ok else "failed").observe(seconds)


def _worker_age() -> float:
    return float(current_app.config["SMTPSITE_HEALTHZ_WORKER_AGE"])


@ops.get("/healthz")
def healthz():
    """200 when the database answers and a worker beat recently; 503 saying what failed."""
    try:
        last = db.session.execute(select(func.max(WorkerBeat.last_seen_at))).scalar()
    except SQLAlchemyError as exc:
        log.error("health check: the database does not answer (%s)", type(exc).__name__)
        return jsonify({"database": "unavailable", "worker": "unknown"}), 503
    max_age = _worker_age()
    if last is None:
        worker = "none"
    elif (utcnow() - last).total_seconds() > max_age > 0:
        worker = "stale"
    else:
        worker = "ok"
    healthy = worker == "ok" or max_age <= 0
    return jsonify({"database": "ok", "worker": worker}), 200 if healthy else 503


class _DatabaseCollector:
    """Metrics read from the database at each scrape."""

    def collect(self) -> Iterator[Metric]:
        queue.flush_stats()  # this process's buffered counts of emails sent at once
        counts = queue.status_counts()
        depth = GaugeMetricFamily("smtpsite_queue_emails", "Emails in the queue by status",
                                  labels=["status"])
        for status in EMAIL_STATUSES:
            depth.add_metric([status], counts.get(status, 0))
        yield depth

        messages = GaugeMetricFamily(
            "smtpsite_server_messages", "Messages sent or failed through each server recently",
            labels=["server", "result", "window"])
        windows = {"1h": timedelta(hours=1), "24h": timedelta(days=1)}
        for server in queue.server_counts(windows):
            for window, (sent, failed) in server.counts.items():
                messages.add_metric([server.server_name, "sent", window], sent)
                messages.add_metric([server.server_name, "failed", window], failed)
        yield messages

        since = utcnow() - timedelta(seconds=max(_worker_age(), 1.0))
        alive = db.session.execute(select(func.count()).select_from(WorkerBeat)
                                   .where(WorkerBeat.last_seen_at >= since)).scalar_one()
        workers = GaugeMetricFamily("smtpsite_workers_alive", "Workers that beat recently")
        workers.add_metric([], alive)
        yield workers

        checks = GaugeMetricFamily("smtpsite_server_check_ok",
                                   "1 if the server's last connection check passed, else 0",
                                   labels=["server"])
        results = dict(db.session.execute(select(ServerHealth.server_key, ServerHealth.last_check_ok)
                                          .where(ServerHealth.last_check_ok.is_not(None))).all())
        for server in db.session.execute(select(SmtpServer).order_by(SmtpServer.id)).scalars():
            if server.key in results:
                checks.add_metric([str(server)], 1 if results[server.key] else 0)
        yield checks

    def describe(self) -> list[Metric]:
        return []


@ops.get("/metrics")
def metrics():
    """Prometheus text format; 404 unless enabled, 401 without the configured token."""
    config = current_app.config
    if not config["SMTPSITE_METRICS_ENABLED"]:
        abort(404)
    token = config["SMTPSITE_METRICS_TOKEN"]
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return Response("a bearer token is required\n", 401,
                            {"WWW-Authenticate": "Bearer", "Content-Type": "text/plain"})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DatabaseCollector())
    registry.register(SEND_SECONDS)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_ops(app: Flask) -> None:
    """Register ``/healthz`` and ``/metrics``, and the failover hooks (latency, rescues)."""
    app.register_blueprint(ops)
    if observe_send not in failover.SEND_HOOKS:
        failover.SEND_HOOKS.append(observe_send)
    alerts.install()
