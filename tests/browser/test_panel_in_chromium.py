"""The panel in a real headless Chromium: sign in, create a server, check it, send a test email."""

from __future__ import annotations

from tests.admin.conftest import PASSWORD
from tests.browser.conftest import shot


def sign_in(page, base: str, email: str) -> None:
    """Sign in through the form."""
    page.goto(f"{base}/admin/")
    assert "/admin/login/" in page.url
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#signed-in-as")


def test_global_admin_creates_checks_and_sends(page, live_url, world, smtp_server):
    sign_in(page, live_url, world.global_admin)
    shot(page, "01-home")

    page.goto(f"{live_url}/admin/server/new/")
    page.check("#method-network")
    page.click("#choose-method button[type=submit]")
    page.fill("#server_name", smtp_server.server_name)
    page.fill("#display_name", "Local test relay")
    page.select_option("#priority", "high")
    page.check("#scope-0")  # all sites
    page.select_option("#options-security", "none")
    page.fill("#options-timeout", "5")
    shot(page, "02-server-form")
    page.click("#server-form button[type=submit]")
    page.wait_for_selector("text=was created")
    row = page.locator("tr", has_text="Local test relay")
    assert "all sites" in row.inner_text() and "never checked" in row.inner_text()
    shot(page, "03-server-list")

    row.locator("a", has_text="Test connection").click()
    page.fill("#recipient", "someone@example.com")
    page.click("#test-form button[type=submit]")
    outcome = page.locator(".check-outcome")
    assert outcome.inner_text() == "OK"
    transcript = page.locator("pre.transcript").inner_text()
    assert "RCPT TO:<someone@example.com>" in transcript and "< 250" in transcript
    shot(page, "04-test-connection")
    assert smtp_server.messages == []

    page.goto(f"{live_url}/admin/server/")
    assert "OK" in page.locator("tr", has_text="Local test relay").inner_text()

    page.goto(f"{live_url}/admin/testmail/")
    page.fill("#server", smtp_server.server_name)
    page.fill("#username", "")  # pre-filled from the global settings; this server has no AUTH
    page.select_option("#security", "none")
    page.fill("#sender", "admin@example.com")
    page.fill("#to", "reader@example.com")
    page.fill("#subject", "Sent from Chromium")
    page.click("#testmail-form button[type=submit]")
    assert page.locator(".check-outcome").inner_text() == "SENT"
    shot(page, "05-test-email")
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["reader@example.com"]
    assert b"Subject: Sent from Chromium" in received.data

    page.goto(f"{live_url}/admin/settings/?site={world.site_b}")
    page.select_option("#emails__format", "plaintext")
    page.click("#settings-form button[name=save]")
    page.wait_for_selector("text=Settings saved.")
    assert "overridden for this site" in page.locator("#row-emails-format").inner_text()
    shot(page, "06-settings")
    assert page.failed_responses == []
    assert page.console_errors == []


def test_site_admin_sees_only_their_sites(page, live_url, world):
    sign_in(page, live_url, world.site_admin)
    assert "Alpha shop" in page.inner_text("#home-sites")
    assert "Bravo news" not in page.inner_text("body")
    page.goto(f"{live_url}/admin/site/")
    body = page.inner_text("body")
    assert "Alpha shop" in body and "Bravo news" not in body and "Charlie blog" not in body
    page.goto(f"{live_url}/admin/server/")
    body = page.inner_text("body")
    assert "alpha-relay.example.net:2525" in body
    for hidden in ("global-relay", "bravo-relay", "shared-relay"):
        assert hidden not in body
    assert "Users" not in page.inner_text("nav") and "Send test email" not in page.inner_text("nav")
    shot(page, "07-site-admin-servers")
    page.goto(f"{live_url}/admin/settings/")
    assert "Alpha shop" in page.inner_text("#settings-scopes")
    assert "Global" not in page.inner_text("#settings-scopes")
    response = page.goto(f"{live_url}/admin/user/")
    assert response.status == 403
    assert page.console_errors == []


def test_server_form_shows_only_the_options_of_the_chosen_sign_in(page, live_url, world):
    from playwright.sync_api import expect

    sign_in(page, live_url, world.global_admin)
    page.goto(f"{live_url}/admin/server/new/")
    page.check("#method-network")
    page.click("#choose-method button[type=submit]")
    page.wait_for_load_state()
    expect(page.locator("#options-auth")).to_have_value("none")
    for hidden in ("#options-username", "#options-password", "#options-client_id"):
        expect(page.locator(hidden)).to_be_hidden()
    page.select_option("#options-auth", "password")
    expect(page.locator("#options-username")).to_be_visible()
    expect(page.locator("#options-password")).to_be_visible()
    expect(page.locator("#options-client_secret")).to_be_hidden()
    page.select_option("#options-auth", "oauth2")
    for shown in ("#options-provider", "#options-tenant", "#options-client_id",
                  "#options-client_secret", "#options-mailbox"):
        expect(page.locator(shown)).to_be_visible()
    expect(page.locator("#options-username")).to_be_hidden()
    shot(page, "05-server-form-oauth")
    assert page.console_errors == []


def test_an_old_record_with_a_user_name_opens_as_password_sign_in(page, live_url, panel, world):
    from smtpsite.extensions import db
    from smtpsite.models import SmtpServer
    from smtpsite.servers import save_server

    with panel.app_context():
        server = save_server(None, server_name="legacy.example:587", method="network",
                             options={"security": "starttls", "username": "mailer",
                                      "password": "pw"}, is_global=True)
        db.session.commit()
        # As saved before the sign-in choice existed: no "auth" option stored.
        db.session.get(SmtpServer, server.id).options = {
            k: v for k, v in server.options.items() if k != "auth"}
        db.session.commit()
        server_id = server.id
    sign_in(page, live_url, world.global_admin)
    page.goto(f"{live_url}/admin/server/edit/?id={server_id}")
    from playwright.sync_api import expect

    expect(page.locator("#options-auth")).to_have_value("password")
    expect(page.locator("#options-username")).to_have_value("mailer")
    expect(page.locator("#options-password")).to_be_visible()
