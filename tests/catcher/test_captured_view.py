"""The Captured mail screens through the test client: list, read, frame, downloads, delete."""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from flask import Flask
from sqlalchemy import func, select

from smtpsite.admin.captured import FRAME_POLICY, safe_filename
from smtpsite.catcher import store_message
from smtpsite.extensions import db
from smtpsite.models import CapturedMessage
from tests.admin.conftest import csrf_token, text

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360f8cfc00000030101003c5e2ee80000000049454e44ae426082")
SCRIPT = "<script>document.getElementById('para').textContent='script ran'</script>"
REMOTE_IMG = '<img id="remote" src="http://127.0.0.1:9/remote.png" alt="remote">'


def rich_message() -> bytes:
    """HTML with a script, a remote and an inline image; a text part; two attachments."""
    message = EmailMessage()
    message["From"] = "Shop <shop@alpha.example.com>"
    message["To"] = "customer@example.org"
    message["Subject"] = "Your order — № 42"
    message["Message-ID"] = "<rich-1@alpha.example.com>"
    message.set_content("Plain text: thank you for your order.")
    message.add_alternative(f'<p id="para">static text</p>{SCRIPT}{REMOTE_IMG}'
                            '<img id="inline" src="cid:logo@alpha" alt="logo">', subtype="html")
    message.get_payload()[1].add_related(PNG, "image", "png", cid="<logo@alpha>")
    message.add_attachment(b"report bytes\x00\x01", maintype="application", subtype="octet-stream",
                           filename='../../etc/re"port;.txt')
    message.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf",
                           filename="Übersicht 2024.pdf")
    return message.as_bytes().replace(b"\n", b"\r\n")


RICH = rich_message()  # once: MIME boundaries are random


@pytest.fixture
def mail(panel: Flask, world) -> dict[str, int]:
    """Two captured messages: a rich one, then (newer) a plain one."""
    with panel.app_context():
        rich = store_message(db.engine, "shop@alpha.example.com", ["customer@example.org"],
                             RICH, "127.0.0.1:50000")
        plain = store_message(db.engine, "news@bravo.example.com",
                              ["reader@example.net", "second@example.net"],
                              b"Subject: Second one\r\n\r\nJust text.\r\n", "127.0.0.1:50001")
    return {"rich": rich, "plain": plain}


def count(panel: Flask) -> int:
    """How many captured messages are stored."""
    with panel.app_context():
        return db.session.execute(select(func.count()).select_from(CapturedMessage)).scalar_one()


def test_list_is_newest_first_and_searchable(root, mail):
    page = text(root.get("/admin/captured/"))
    assert page.index("Second one") < page.index("Your order — № 42")
    assert "reader@example.net, second@example.net" in page
    assert "shop@alpha.example.com" in page and "127.0.0.1:" in page  # where the catcher listens
    found = text(root.get("/admin/captured/?search=bravo"))
    assert "Second one" in found and "Your order" not in found
    by_recipient = text(root.get("/admin/captured/?search=customer@example.org"))
    assert "Your order" in by_recipient and "Second one" not in by_recipient


@pytest.mark.parametrize("url", [
    "/admin/captured/", "/admin/captured/details/?id={rich}", "/admin/captured/html/{rich}/",
    "/admin/captured/raw/{rich}/", "/admin/captured/attachment/{rich}/1/",
    "/admin/captured/delete-all/"])
def test_only_global_administrators_reach_captured_mail(panel, alice, mail, url):
    url = url.format(**mail)
    assert alice.get(url).status_code == 403
    anonymous = panel.test_client().get(url)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous.location


def test_site_administrators_cannot_delete(panel, alice, mail):
    token = csrf_token(alice, "/admin/account/")
    assert alice.post("/admin/captured/delete/", data={"id": mail["rich"], "csrf_token": token}
                      ).status_code == 403
    assert alice.post("/admin/captured/delete-all/", data={"csrf_token": token}).status_code == 403
    assert count(panel) == 2


def test_details_show_the_parts_and_never_the_raw_html(root, mail):
    response = root.get(f"/admin/captured/details/?id={mail['rich']}")
    page = text(response)
    assert response.status_code == 200
    assert ('<iframe class="captured-frame" id="captured-html" sandbox="" '
            'referrerpolicy="no-referrer"') in page
    assert f'src="/admin/captured/html/{mail["rich"]}/"' in page
    # The message's markup is in this page only escaped (raw source tab), never live.
    assert SCRIPT not in page and REMOTE_IMG not in page
    assert "&lt;script&gt;document.getElementById" in page
    assert "Plain text: thank you for your order." in page
    assert "Your order — № 42" in page and "&lt;rich-1@alpha.example.com&gt;" in page
    assert "re_port_.txt" in page and "Übersicht 2024.pdf" in page and "logo@alpha" in page
    # The panel's own page stays unframable.
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_html_frame_route_runs_no_script_and_loads_nothing_remote(root, mail):
    response = root.get(f"/admin/captured/html/{mail['rich']}/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert policy == FRAME_POLICY
    directives = dict(d.strip().partition(" ")[::2] for d in policy.split(";"))
    assert directives["default-src"] == "'none'"  # hence no script-src, connect-src, frame-src
    assert "script-src" not in directives and "http" not in policy
    assert directives["img-src"] == "data:" and directives["frame-ancestors"] == "'self'"
    assert "sandbox" in directives  # opened on its own it is sandboxed too
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    body = text(response)
    # The markup is served as it came (only here), the inline image as a data: URL.
    assert SCRIPT in body and REMOTE_IMG in body
    assert 'id="inline" src="data:image/png;base64,' in body and "cid:" not in body


def test_a_message_without_html_has_no_frame(root, mail):
    assert root.get(f"/admin/captured/html/{mail['plain']}/").status_code == 404
    page = text(root.get(f"/admin/captured/details/?id={mail['plain']}"))
    assert "<iframe" not in page and "Just text." in page


@pytest.mark.parametrize("url", ["/admin/captured/details/?id=9999", "/admin/captured/html/9999/",
                                 "/admin/captured/raw/9999/", "/admin/captured/details/?id=x",
                                 "/admin/captured/attachment/{rich}/0/",
                                 "/admin/captured/attachment/{rich}/9/"])
def test_unknown_messages_and_parts_are_404(root, mail, url):
    assert root.get(url.format(**mail)).status_code == 404


def test_raw_source_downloads_exactly_as_received(root, mail):
    response = root.get(f"/admin/captured/raw/{mail['rich']}/")
    assert response.data == RICH
    assert response.mimetype == "text/plain"
    assert response.headers["Content-Disposition"] == \
        f"attachment; filename=message-{mail['rich']}.eml"
    assert "sandbox" in response.headers["Content-Security-Policy"]


def test_attachments_download_with_safe_names(root, mail):
    first = root.get(f"/admin/captured/attachment/{mail['rich']}/2/")
    assert first.data == b"report bytes\x00\x01"
    assert first.mimetype == "application/octet-stream"
    assert first.headers["Content-Disposition"] == "attachment; filename=re_port_.txt"
    second = root.get(f"/admin/captured/attachment/{mail['rich']}/3/")
    assert second.data == b"%PDF-1.4 fake"
    disposition = second.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and "filename*=UTF-8''%C3%9Cbersicht%202024.pdf" \
        in disposition
    inline = root.get(f"/admin/captured/attachment/{mail['rich']}/1/")  # the inline image
    assert inline.data == PNG and inline.headers["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize(("name", "safe"), [
    ("../../etc/passwd", "passwd"), ("C:\\Windows\\evil.exe", "evil.exe"),
    ('a"b;c\r\nd.txt', "a_b_c_d.txt"), ("..", "part-1"), ("", "part-1"), (None, "part-1"),
    ("x" * 300, "x" * 150)])
def test_safe_filename(name, safe):
    assert safe_filename(name, "part-1") == safe


def test_delete_one_needs_the_csrf_token(panel, root, mail):
    assert root.post("/admin/captured/delete/", data={"id": mail["rich"]}).status_code == 400
    assert count(panel) == 2
    token = csrf_token(root, f"/admin/captured/details/?id={mail['rich']}")
    response = root.post("/admin/captured/delete/", data={"id": mail["rich"], "csrf_token": token})
    assert response.status_code == 302
    assert count(panel) == 1
    assert root.get(f"/admin/captured/details/?id={mail['rich']}").status_code == 404


def test_delete_all_asks_first_and_needs_the_csrf_token(panel, root, mail):
    page = text(root.get("/admin/captured/delete-all/"))
    assert "This deletes <strong>2</strong> captured message(s) for good." in page
    assert count(panel) == 2  # asking deletes nothing
    assert root.post("/admin/captured/delete-all/").status_code == 400
    assert count(panel) == 2
    token = csrf_token(root, "/admin/captured/delete-all/")
    response = root.post("/admin/captured/delete-all/", data={"csrf_token": token},
                         follow_redirects=True)
    assert "2 captured message(s) deleted." in text(response)
    assert count(panel) == 0
