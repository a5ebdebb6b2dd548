"""Alerts: a server fails or recovers, a fallback server rescued mail, the queue backs up.

One alert per change, never one per message: the last state alerted is kept in the
``alert_state`` table and an alert goes out only when a compare-and-set on it succeeds,
so two workers never send the same alert. A worker evaluates the states in its health
rounds (:mod:`smtpsite.health`); the failover engine only notes rescues (a cheap write).

Alerts go by email to ``emails.alert_recipients``, directly through a global server that
is working (not through the queue, nor the staging switches), and/or as a JSON POST to
``emails.alert_webhook``. A failed delivery is logged and never stops the worker.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from smtpsite import availability, failover, queue, settings
from smtpsite.extensions import db
from smtpsite.messages import build_message
from smtpsite.models import AlertState, ServerHealth, ServerStat, SmtpServer, utcnow
from smtpsite.routing import ChainEntry, chain_for

log = logging.getLogger(__name__)
ALERTS = AlertState.__table__
STATS = ServerStat.__table__
WEBHOOK_TIMEOUT = 5.0


@dataclass
class Alert:
    """One alert: what happened, for people (subject, text) and for machines (data)."""

    event: str  # server_failing, server_recovered, fallback_rescue, queue_backlog, queue_normal
    subject: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)


def _insert(table):
    return (pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert)(table)


def transition(key: str, state: str, detail: str | None = None) -> str | None:
    """Record ``state`` for ``key``; the previous state if it changed ("" if first seen), else None.

    A compare-and-set: of two processes seeing the same change, one gets it.
    """
    now = utcnow()
    with db.engine.begin() as conn:
        row = conn.execute(select(ALERTS.c.state).where(ALERTS.c.key == key)).first()
        if row is None:
            inserted = conn.execute(_insert(ALERTS).values(
                key=key, state=state, changed_at=now, detail=detail)
                .on_conflict_do_nothing().returning(ALERTS.c.key)).first()
            return "" if inserted is not None else None
        if row.state == state:
            return None
        changed = conn.execute(update(ALERTS).where(ALERTS.c.key == key, ALERTS.c.state == row.state)
                               .values(state=state, changed_at=now, detail=detail))
        return row.state if changed.rowcount == 1 else None


# -- servers ---------------------------------------------------------------------------
@dataclass
class ServerState:
    """What is known of one server now."""

    key: str
    name: str
    failing: bool
    detail: str


def server_states() -> list[ServerState]:
    """Each enabled server, failing or not, from its last check and its recent sends.

    Failing: its last check failed, or a send failed after the last sign that it works (a
    check that passed, or a message it delivered in a later minute).
    """
    servers = db.session.execute(select(SmtpServer).where(SmtpServer.enabled.is_(True))
                                 .order_by(SmtpServer.id)).scalars().all()
    health = {h.server_key: h for h in db.session.execute(select(ServerHealth)).scalars()}
    delivered = dict(db.session.execute(select(STATS.c.server_key, func.max(STATS.c.minute))
                                        .where(STATS.c.sent > 0).group_by(STATS.c.server_key)).all())
    states = []
    for server in servers:
        h = health.get(server.key)
        last_ok: list[datetime] = [delivered[server.key]] if server.key in delivered else []
        if h is None and not last_ok:
            continue  # nothing known yet
        if h is not None and h.last_check_ok and h.last_check_at is not None:
            last_ok.append(h.last_check_at)
        if h is not None and h.last_check_ok is False:
            states.append(ServerState(server.key, str(server), True,
                                      f"its connection check failed: {h.last_check_message}"))
        elif h is not None and h.last_failure_at is not None and (
                not last_ok or h.last_failure_at >= max(last_ok)):
            states.append(ServerState(server.key, str(server), True,
                                      f"sending failed: {h.last_error}"))
        else:
            states.append(ServerState(server.key, str(server), False, "it works again"))
    return states


def server_alerts(states: list[ServerState]) -> list[Alert]:
    """An alert for each server whose state changed since the last alert about it."""
    alerts = []
    for state in states:
        previous = transition(f"health:{state.key}", "failing" if state.failing else "healthy",
                              state.detail[:2000])
        if previous is None or (previous == "" and not state.failing):
            continue  # unchanged, or first seen working: nothing to say
        data = {"server": state.name, "server_key": state.key, "detail": state.detail}
        if state.failing:
            alerts.append(Alert("server_failing", f"[smtpsite] server {state.name} is failing",
                                f"The server {state.name} is failing: {state.detail}\n\n"
                                "You will be told when it works again.", data))
        else:
            alerts.append(Alert("server_recovered", f"[smtpsite] server {state.name} recovered",
                                f"The server {state.name} works again.", data))
    return alerts


# -- fallback rescues ------------------------------------------------------------------
def note_rescue(entry: ChainEntry, job: failover.Job, _seconds: float, ok: bool) -> None:
    """Failover hook: ``entry`` delivered what another server failed; note it for an alert.

    At most one pending note per failing server, and none within the cool-down after the
    last alert about it.
    """
    if not ok:
        return
    failed = {a.server_key: a for a in job.attempts if a.outcome != "sent" and a.server_key != entry.key}
    if not failed:
        return
    cooldown = settings.read_global("emails.alert_rescue_cooldown")["emails.alert_rescue_cooldown"]
    now = utcnow()
    with db.engine.begin() as conn:
        for key, attempt in sorted(failed.items()):
            detail = json.dumps({"failed": attempt.server, "failed_key": key,
                                 "error": attempt.message[:500], "rescuer": entry.name,
                                 "message_id": job.message.message_id})
            stmt = _insert(ALERTS).values(key=f"rescue:{key}", state="pending", changed_at=now,
                                          detail=detail)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["key"], set_={"state": "pending", "changed_at": now, "detail": detail},
                where=(ALERTS.c.state == "sent")
                & (ALERTS.c.changed_at <= now - timedelta(seconds=cooldown)),
            ))


def rescue_alerts() -> list[Alert]:
    """An alert for each noted rescue not alerted yet."""
    with db.engine.connect() as conn:
        pending = conn.execute(select(ALERTS.c.key, ALERTS.c.detail).where(
            ALERTS.c.key.like("rescue:%"), ALERTS.c.state == "pending")).all()
    alerts = []
    for key, detail in pending:
        if transition(key, "sent", detail) != "pending":
            continue  # another worker took it
        data = json.loads(detail)
        alerts.append(Alert(
            "fallback_rescue",
            f"[smtpsite] {data['failed']} failed; {data['rescuer']} delivered instead",
            f"The server {data['failed']} failed to send {data['message_id']} "
            f"({data['error']}); the fallback server {data['rescuer']} delivered it.\n\n"
            "Further rescues from this server are not reported during the fallback alert "
            "cool-down (emails.alert_rescue_cooldown).", data))
    return alerts


# -- the queue -------------------------------------------------------------------------
def queue_alerts() -> list[Alert]:
    """An alert when the queue backs up past ``emails.alert_queue_threshold``, and when it is back."""
    threshold = settings.get("emails.alert_queue_threshold")
    if not threshold:
        return []
    counts = queue.status_counts()
    depth = counts.get("waiting", 0) + counts.get("sending", 0)
    backed_up = depth > threshold
    previous = transition("queue:backlog", "backed_up" if backed_up else "ok", str(depth))
    if previous is None or (previous == "" and not backed_up):
        return []
    data = {"depth": depth, "threshold": threshold}
    if backed_up:
        return [Alert("queue_backlog", f"[smtpsite] the queue is backed up: {depth} emails",
                      f"{depth} emails wait in the queue (the alert threshold is {threshold}). "
                      "Are the workers running, and the servers working?", data)]
    return [Alert("queue_normal", f"[smtpsite] the queue is back to normal: {depth} emails",
                  f"{depth} emails wait in the queue (the alert threshold is {threshold}).", data)]


# -- one round -------------------------------------------------------------------------
def run_round() -> list[Alert]:
    """Compare what is known now with what was last alerted; send one alert per change."""
    states = server_states()
    alerts = server_alerts(states) + rescue_alerts() + queue_alerts()
    avoid = {s.key for s in states if s.failing}
    for alert in alerts:
        log.warning("alert: %s", alert.subject)
        deliver(alert, avoid)
    return alerts


def deliver(alert: Alert, avoid: set[str] = frozenset()) -> None:
    """Send ``alert`` by email and/or webhook, as configured; failures are logged only."""
    recipients = settings.split_addresses(settings.get("emails.alert_recipients"))
    webhook = settings.get("emails.alert_webhook").reveal()
    if recipients:
        try:
            _email(alert, recipients, avoid)
        except Exception:
            log.exception("the alert %r could not be emailed", alert.subject)
    if webhook:
        try:
            _post(webhook, alert)
        except Exception as exc:
            # Never the URL: it may carry a token.
            reason = getattr(exc, "reason", None) or getattr(exc, "code", None) or exc
            log.error("the alert webhook failed (%s: %s)", type(exc).__name__, reason)


def _email(alert: Alert, recipients: list[str], avoid: set[str]) -> None:
    """Send directly through the first global server not failing that takes it."""
    sender = settings.get("emails.default_sender")
    prepared = build_message(sender=sender, to=recipients, subject=alert.subject, text=alert.text,
                             email_format="plaintext")
    cooling = availability.cooling_down(e.key for e in chain_for(None, sender))
    chain = [e for e in chain_for(None, sender) if e.key not in avoid and e.key not in cooling]
    problems = []
    for entry in chain:
        try:
            plugin = failover.make_plugin(entry)
            plugin.open()
            try:
                [result] = plugin.send_messages([prepared.outgoing])
            finally:
                plugin.close()
        except Exception as exc:
            problems.append(f"{entry.name}: {type(exc).__name__}: {exc}")
            continue
        if result.ok:
            return
        problems.append(f"{entry.name}: {result.error.message if result.error else 'refused'}")
    log.error("the alert %r could not be emailed: %s", alert.subject,
              "; ".join(problems) or "no global server is working")


def _post(url: str, alert: Alert) -> None:
    body = json.dumps({"event": alert.event, "subject": alert.subject, "text": alert.text,
                       "at": utcnow().isoformat() + "Z", **alert.data}).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "smtpsite-alerts"})
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
        response.read(1024)


def install() -> None:
    """Let the failover engine note fallback rescues (once per process)."""
    if note_rescue not in failover.SEND_HOOKS:
        failover.SEND_HOOKS.append(note_rescue)
