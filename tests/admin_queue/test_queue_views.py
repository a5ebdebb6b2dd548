"""The Email queue and Sent emails screens and the home page's queue panel, through the panel."""

from __future__ import annotations

import re

from sqlalchemy import select, update

from smtpsite import queue, send_mail
from smtpsite.extensions import db
from smtpsite.models import Email, EmailAttempt, utcnow
from tests.admin.conftest import post, text


def make_emails(panel, world):
    """Two waiting emails of site A, one failed of site B, one global, one sent of A."""
    with panel.app_context():
        ids = {}
        for key, site in (("a1", "alpha"), ("a2", "alpha"), ("b", "bravo"), ("g", None),
                          ("sent", "alpha")):
            result = send_mail(site, sender="shop@example.com", to=[f"{key}@example.com"],
                               cc=[f"cc-{key}@example.com"], subject=f"Subject {key}",
                               text=f"Body of {key}", queue=True)
            ids[key] = result.email_id
        db.session.execute(update(Email).where(Email.id == ids["b"]).values(
            status="failed", last_result="550 no such user"))
        db.session.execute(update(Email).where(Email.id == ids["sent"]).values(
            status="sent", sent_at=utcnow(), sent_by="alpha-relay.example.net"))
        db.session.add(EmailAttempt(email_id=ids["b"], server_key="server:1",
                                    server_name="bravo-relay.example.net", outcome="failed",
                                    code=550, message="550 5.1.1 <b@example.com> no such user"))
        db.session.commit()
        return ids


def statuses(panel) -> dict[int, str]:
    with panel.app_context():
        return dict(db.session.execute(select(Email.id, Email.status)).all())


def listed(html: str) -> set[str]:
    return set(re.findall(r"Subject (a1|a2|b|g|sent)\b", html))


def test_the_queue_lists_and_filters(panel, world, root):
    make_emails(panel, world)
    page = text(root.get("/admin/email_queue/"))
    assert listed(page) == {"a1", "a2", "b", "g"}  # the sent one is in the archive
    filters = {
        "flt1_0": ("shop@", {"a1", "a2", "b", "g"}),  # from
        "flt2_1": ("Subject a", {"a1", "a2"}),  # subject
        "flt3_2": ("Body of g", {"g"}),  # body
        "flt4_3": ("no such user", {"b"}),  # last result
        "flt5_4": ("cc-a2@", {"a2"}),  # to / cc / bcc
        "flt6_6": ("failed", {"b"}),  # status
        "flt7_7": ("global", {"g"}),  # site
        "flt8_7": ("BRAVO", {"b"}),
    }
    for key, (value, expected) in filters.items():
        page = text(root.get("/admin/email_queue/", query_string={key: value}))
        assert listed(page) == expected, (key, value)


def test_details_show_every_attempt(panel, world, root):
    ids = make_emails(panel, world)
    page = text(root.get(f"/admin/email_queue/details/?id={ids['b']}"))
    assert "email-attempts" in page and "bravo-relay.example.net" in page
    assert "550 5.1.1 &lt;b@example.com&gt; no such user" in page


def test_a_site_admin_sees_and_acts_on_their_sites_only(panel, world, alice):
    ids = make_emails(panel, world)
    assert listed(text(alice.get("/admin/email_queue/"))) == {"a1", "a2"}
    assert alice.get(f"/admin/email_queue/details/?id={ids['b']}").status_code == 404
    # Resend and delete everything, as Alice: only site A's email is touched.
    page = text(alice.get("/admin/email_queue/bulk/delete/all/"))
    assert "<strong>2</strong>" in page
    post(alice, "/admin/email_queue/bulk/delete/all/", {})
    left = statuses(panel)
    assert ids["a1"] not in left and ids["a2"] not in left
    assert {ids["b"], ids["g"], ids["sent"]} <= set(left)
    # A selected id outside her sites is ignored.
    post(alice, "/admin/email_queue/action/", {"action": "resend", "rowid": [str(ids["b"])]})
    assert statuses(panel)[ids["b"]] == "failed"


def test_bulk_operations_need_confirmation(panel, world, root):
    ids = make_emails(panel, world)
    page = text(root.get("/admin/email_queue/"))
    assert "Resend all failed emails" in page and "Delete all emails" in page
    # The GET only asks.
    page = text(root.get("/admin/email_queue/bulk/resend/failed/"))
    assert "Resend all failed emails?" in page and "<strong>1</strong>" in page
    assert statuses(panel)[ids["b"]] == "failed"
    # Without the form's token nothing happens.
    assert root.post("/admin/email_queue/bulk/resend/failed/").status_code == 400
    post(root, "/admin/email_queue/bulk/resend/failed/", {})
    assert statuses(panel)[ids["b"]] == "waiting"
    post(root, "/admin/email_queue/action/", {"action": "resend", "rowid": [str(ids["a1"])]})
    post(root, "/admin/email_queue/bulk/delete/failed/", {})
    assert len(statuses(panel)) == 5  # none failed any more
    post(root, "/admin/email_queue/bulk/delete/all/", {})
    assert statuses(panel) == {ids["sent"]: "sent"}  # the archive is not the queue
    assert root.get("/admin/email_queue/bulk/explode/all/").status_code == 404


def test_sent_emails_resend_and_resend_to_another_address(panel, world, root):
    ids = make_emails(panel, world)
    page = text(root.get("/admin/sent_emails/"))
    assert listed(page) == {"sent"} and f"/admin/sent_emails/resend-to/{ids['sent']}/" in page
    page = text(post(root, f"/admin/sent_emails/resend-to/{ids['sent']}/",
                     {"address": "not an address"}))
    assert "alert-danger" in page
    post(root, f"/admin/sent_emails/resend-to/{ids['sent']}/", {"address": "new@example.com"})
    with panel.app_context():
        original = db.session.get(Email, ids["sent"])
        [copy] = db.session.execute(select(Email).where(Email.id > ids["sent"])).scalars()
        assert original.status == "sent"
        assert copy.status == "waiting" and copy.recipients == ["new@example.com"]
        assert copy.raw.startswith(b"Resent-Date: ")
        assert b"Resent-To: new@example.com\r\n" in copy.raw
        assert copy.raw.endswith(original.raw) and copy.message_id != original.message_id
    post(root, "/admin/sent_emails/action/", {"action": "resend", "rowid": [str(ids["sent"])]})
    assert statuses(panel)[ids["sent"]] == "waiting"


def test_the_home_page_shows_the_queue_and_server_counts(panel, world, root, alice):
    make_emails(panel, world)
    with panel.app_context():
        queue.record_stats([queue.Attempt("alpha-relay.example.net:2525", f"server:{world.server_a}",
                                          "sent", 250, "ok", utcnow()),
                            queue.Attempt("global-relay.example.net",
                                          f"server:{world.global_server}", "failed", 451,
                                          "later", utcnow())])
    page = text(root.get("/admin/"))
    assert re.search(r'id="queue-depth">3<', page)  # a1, a2, g waiting
    assert "alpha-relay.example.net:2525" in page and "global-relay.example.net" in page
    page = text(alice.get("/admin/"))
    assert re.search(r'id="queue-depth">2<', page)
    assert "alpha-relay.example.net:2525" in page and "global-relay.example.net" not in page
