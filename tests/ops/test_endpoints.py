"""/healthz and /metrics over HTTP (Flask's test client), on real databases."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from smtpsite import health, send_mail
from smtpsite.extensions import db
from smtpsite.models import WorkerBeat, utcnow
from tests.conftest import make_app
from tests.ops.conftest import add_server
from tests.smtpd import Behaviour, free_port


def _get(app, url: str, **headers):
    response = app.test_client().get(url, headers=headers)
    return response.status_code, response


def test_healthz_says_which_part_failed(any_app):
    app = any_app
    status, response = _get(app, "/healthz")
    assert (status, response.get_json()) == (503, {"database": "ok", "worker": "none"})
    health.beat("w1", utcnow())
    status, response = _get(app, "/healthz")
    assert (status, response.get_json()) == (200, {"database": "ok", "worker": "ok"})
    with db.engine.begin() as conn:
        conn.execute(update(WorkerBeat).values(last_seen_at=utcnow() - timedelta(minutes=5)))
    status, response = _get(app, "/healthz")
    assert (status, response.get_json()) == (503, {"database": "ok", "worker": "stale"})
    app.config["SMTPSITE_HEALTHZ_WORKER_AGE"] = 0  # a set-up without workers
    status, response = _get(app, "/healthz")
    assert status == 200 and response.get_json()["database"] == "ok"


def test_healthz_on_a_postgresql_port_nobody_listens_on(tmp_path: Path):
    app = make_app(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing", tmp_path)
    with app.app_context():
        status, response = _get(app, "/healthz")
        db.engine.dispose()
    assert (status, response.get_json()) == (503, {"database": "unavailable", "worker": "unknown"})


def test_healthz_when_the_sqlite_file_was_removed(app, tmp_path: Path):
    assert _get(app, "/healthz")[0] == 503  # no worker yet, but the database answers
    db.session.remove()
    db.engine.dispose()
    for name in os.listdir(tmp_path):
        if name.startswith("smtpsite.db"):
            os.remove(tmp_path / name)
    status, response = _get(app, "/healthz")
    assert (status, response.get_json()) == (503, {"database": "unavailable", "worker": "unknown"})


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(family, **labels) -> float:
    [value] = [s.value for s in family.samples
                if all(s.labels.get(k) == v for k, v in labels.items())]
    return value


def test_metrics_are_off_by_default_and_ask_for_the_token(app):
    assert _get(app, "/metrics")[0] == 404
    app.config.update(SMTPSITE_METRICS_ENABLED=True, SMTPSITE_METRICS_TOKEN="m3trics-t0ken")
    status, response = _get(app, "/metrics")
    assert status == 401 and "m3trics-t0ken" not in response.get_data(as_text=True)
    assert _get(app, "/metrics", Authorization="Bearer wrong")[0] == 401
    assert _get(app, "/metrics", Authorization="Bearer m3trics-t0ken")[0] == 200


def test_metrics_show_queue_depth_per_server_counts_and_latency(any_app, start_server):
    app = any_app
    app.config["SMTPSITE_METRICS_ENABLED"] = True
    good = start_server()
    bad = start_server(behaviour=Behaviour(mail_reply="451 4.3.0 not now"))
    add_server(bad, priority="high")
    add_server(good)
    for n in range(2):
        result = send_mail(None, to=["a@example.com"], subject=f"now {n}", text="x", queue=False)
        assert result.status == "sent"
    for n in range(3):
        send_mail(None, to=["a@example.com"], subject=f"later {n}", text="x", queue=True)
    health.beat("w1", utcnow())
    status, response = _get(app, "/metrics")
    assert status == 200 and response.mimetype == "text/plain"
    families = _families(response.get_data(as_text=True))
    queue = families["smtpsite_queue_emails"]
    assert _value(queue, status="waiting") == 3 and _value(queue, status="failed") == 0
    messages = families["smtpsite_server_messages"]
    assert _value(messages, server=good.server_name, result="sent", window="1h") == 2
    # The high-priority server failed the first send (then cooled down).
    assert _value(messages, server=bad.server_name, result="failed", window="24h") == 1
    assert _value(families["smtpsite_workers_alive"]) == 1
    latency = families["smtpsite_send_seconds"]
    counts = {s.labels["server"]: s.value for s in latency.samples
              if s.name == "smtpsite_send_seconds_count" and s.labels["result"] == "sent"}
    assert counts.get(good.server_name) == 2
    assert any(s.name == "smtpsite_send_seconds_bucket" for s in latency.samples)
