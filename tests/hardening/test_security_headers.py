"""Security headers on every response, and a CSP the panel's own pages satisfy (Chromium too)."""

from __future__ import annotations

import base64
import hashlib
import html
import re

import pytest

from tests.admin.conftest import root, sign_in  # noqa: F401 - fixtures shared with the panel tests
from tests.browser.conftest import live_url, page, panel, password_hash, world  # noqa: F401

ADMIN_PAGES = (
    "/admin/", "/admin/site/", "/admin/site/new/", "/admin/server/", "/admin/server/new/",
    "/admin/settings/", "/admin/routing/", "/admin/testmail/", "/admin/user/",
    "/admin/user/new/", "/admin/account/",
)
_HANDLER = re.compile(r"\son[a-z]+=\"([^\"]*)\"")
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)([^>]*)>", re.I)


def policy(response) -> dict[str, list[str]]:
    """The Content-Security-Policy header as {directive: [sources]}."""
    header = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_every_response_carries_the_headers(panel, root):  # noqa: F811
    anonymous = panel.test_client()
    requests = [(anonymous, "/admin/login/"), (anonymous, "/admin/"), (anonymous, "/no-such-page"),
                (root, "/admin/site/"),
                (root, "/admin/static/bootstrap/bootstrap4/css/bootstrap.min.css")]
    for client, url in requests:
        with client.get(url) as response:
            headers = response.headers
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        csp = policy(response)
        assert csp["frame-ancestors"] == ["'none'"]
        assert csp["default-src"] == ["'self'"] and csp["object-src"] == ["'none'"]
        assert csp["base-uri"] == ["'none'"] and csp["form-action"] == ["'self'"]
        scripts = csp["script-src"]
        assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
        assert "'unsafe-inline'" not in csp["script-src-attr"]


def test_each_page_gets_a_fresh_nonce_and_inline_scripts_carry_it(root):  # noqa: F811
    nonces = set()
    for url in ADMIN_PAGES:
        response = root.get(url)
        assert response.status_code == 200, url
        [nonce] = [s[len("'nonce-"):-1] for s in policy(response)["script-src"]
                   if s.startswith("'nonce-")]
        nonces.add(nonce)
        for attributes in _INLINE_SCRIPT.findall(response.get_data(as_text=True)):
            assert f'nonce="{nonce}"' in attributes, f"{url}: an inline <script> has no nonce"
    assert len(nonces) == len(ADMIN_PAGES)


def test_inline_handlers_of_the_panel_are_allowed_by_hash_and_only_those(root, world):  # noqa: F811
    seen = set()
    for url in (*ADMIN_PAGES, f"/admin/site/edit/?id={world.site_a}",
                f"/admin/server/edit/?id={world.server_a}"):
        response = root.get(url)
        allowed = policy(response)["script-src-attr"]
        assert "'unsafe-hashes'" in allowed
        for handler in _HANDLER.findall(response.get_data(as_text=True)):
            seen.add(html.unescape(handler))
            assert sha256_source(html.unescape(handler)) in allowed, (url, handler)
    # The list pages do have delete buttons with a confirmation handler.
    assert any("safeConfirm" in h for h in seen)
    assert sha256_source("alert(document.cookie)") not in allowed


def test_the_panel_runs_in_chromium_without_a_csp_violation(page, live_url, world):  # noqa: F811
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text)
            if "Content Security Policy" in msg.text or "Refused to" in msg.text else None)
    page.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation', "
        "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
    page.goto(f"{live_url}/admin/login/")
    page.fill("#email", world.global_admin)
    page.fill("#password", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_selector("#signed-in-as")
    for url in ADMIN_PAGES:
        page.goto(live_url + url)
        page.wait_for_load_state("load")
        assert page.evaluate("window.__csp") == [], url
    # The delete button's inline confirmation runs (allowed by hash): dismissing it keeps the site.
    page.goto(f"{live_url}/admin/site/")
    dialogs: list[str] = []

    def dismiss(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.locator("form.icon button[title='Delete Record']").first.click()
    page.wait_for_timeout(300)
    assert dialogs and "delete" in dialogs[0].lower()
    assert "Alpha shop" in page.content()
    assert page.evaluate("window.__csp") == []
    assert violations == [], violations


@pytest.mark.parametrize("url", ["/admin/login/"])
def test_a_page_in_a_frame_is_refused(panel, url):  # noqa: F811
    response = panel.test_client().get(url)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
