"""Who may do what: a site administrator reaches nothing outside their sites, by any route."""

from __future__ import annotations

import pytest

from smtpsite import settings
from smtpsite.extensions import db
from smtpsite.models import ServerHealth, Site, SmtpServer, User
from tests.admin.conftest import csrf_token, text
from tests.admin.test_servers import network_form


def foreign_servers(world) -> list[int]:
    """Global, another site's, and shared with another site: none is Alice's to see."""
    return [world.global_server, world.server_b, world.server_ab]


def snapshot(panel) -> list[tuple]:
    """Everything the matrix might change."""
    with panel.app_context():
        servers = [(s.id, s.server_name, s.enabled, s.is_global, sorted(x.id for x in s.sites),
                    s.secrets) for s in db.session.query(SmtpServer).order_by(SmtpServer.id)]
        sites = [(s.id, s.code_name, s.display_name) for s in db.session.query(Site)]
        users = [(u.id, u.email, u.is_global_admin) for u in db.session.query(User)]
        health = db.session.query(ServerHealth).count()
        stored = sorted((k, r.value, r.source) for k, r in settings.resolve_all(None).items()
                        if not k.endswith("password"))
        return [servers, sites, users, health, stored]


def test_site_admin_gets_404_for_every_foreign_server_route(panel, alice, world):
    before = snapshot(panel)
    token = csrf_token(alice, "/admin/account/")
    for server_id in foreign_servers(world):
        for url in (f"/admin/server/edit/?id={server_id}", f"/admin/server/details/?id={server_id}",
                    f"/admin/server/test/?id={server_id}"):
            assert alice.get(url).status_code == 404, url
        form = {**network_form("taken.example.org"), "csrf_token": token}
        assert alice.post(f"/admin/server/edit/?id={server_id}", data=form).status_code == 404
        assert alice.post(f"/admin/server/test/?id={server_id}", data={
            "csrf_token": token, "sender": "a@example.com", "recipient": "b@example.com",
        }).status_code == 404
        assert alice.post("/admin/server/delete/", data={"csrf_token": token,
                                                         "id": server_id}).status_code == 404
        for action in ("disable", "delete", "test"):
            alice.post("/admin/server/action/", data={"csrf_token": token, "action": action,
                                                      "rowid": [server_id]}).get_data()
    assert alice.get("/admin/server/details/?id=99999").status_code == 404
    assert alice.get("/admin/server/edit/?id=abc").status_code == 404
    assert snapshot(panel) == before


def test_site_admin_lists_and_exports_only_their_servers(panel, alice, world):
    for url in ("/admin/server/", "/admin/server/export/csv/", f"/admin/server/?flt0_3={world.site_b}",
                "/admin/server/?search=relay", "/admin/", f"/admin/routing/?site={world.site_a}"):
        page = text(alice.get(url))
        for name in ("global-relay", "bravo-relay", "shared-relay"):
            assert name not in page, (url, name)
    assert "alpha-relay.example.net:2525" in text(alice.get("/admin/server/"))
    assert "Bravo news" not in text(alice.get("/admin/server/"))  # not even as a filter choice
    response = alice.get("/admin/server/ajax/lookup/?name=sites&query=b")
    assert response.status_code in (400, 404)
    text(response)


def test_site_admin_cannot_assign_a_server_to_another_site_or_all(panel, alice, world):
    before = snapshot(panel)
    token = csrf_token(alice, "/admin/account/")
    for data in (network_form("new.example.org", scope="sites", sites=[world.site_b]),
                 network_form("new.example.org", scope="sites", sites=[world.site_a, world.site_b]),
                 network_form("new.example.org", scope="all")):
        for url in ("/admin/server/new/?method=network", f"/admin/server/edit/?id={world.server_a}"):
            response = alice.post(url, data={**data, "csrf_token": token})
            assert response.status_code == 200 and "not a valid choice" in text(response).lower(), url
    assert snapshot(panel) == before
    ok = alice.post("/admin/server/new/?method=network", data={
        **network_form("new.example.org", scope="sites", sites=[world.site_a]), "csrf_token": token})
    assert ok.status_code == 302
    assert "new.example.org" in text(alice.get("/admin/server/"))


def test_site_admin_gets_403_or_404_for_foreign_sites(panel, alice, world):
    before = snapshot(panel)
    token = csrf_token(alice, "/admin/account/")
    for site_id in (world.site_b, world.site_c):
        for url in (f"/admin/site/edit/?id={site_id}", f"/admin/site/details/?id={site_id}",
                    f"/admin/settings/?site={site_id}", f"/admin/routing/?site={site_id}",
                    f"/admin/testmail/?site={site_id}"):
            assert alice.get(url).status_code in (403, 404), url
        form = {"csrf_token": token, "code_name": "x", "display_name": "taken", "domains": ""}
        assert alice.post(f"/admin/site/edit/?id={site_id}", data=form).status_code == 404
        assert alice.post("/admin/site/delete/", data={"csrf_token": token,
                                                       "id": site_id}).status_code == 403
        alice.post("/admin/site/action/", data={"csrf_token": token, "action": "delete",
                                                "rowid": [site_id]}).get_data()
        assert alice.post(f"/admin/settings/?site={site_id}", data={
            "csrf_token": token, "emails__format": "plaintext"}).status_code == 404
    assert alice.get("/admin/site/new/").status_code == 403
    assert alice.post("/admin/site/new/", data={"csrf_token": token, "code_name": "mine",
                                                "display_name": "Mine"}).status_code == 403
    assert alice.post("/admin/site/delete/", data={"csrf_token": token,
                                                   "id": world.site_a}).status_code == 403
    for url in ("/admin/site/", "/admin/site/export/csv/", "/admin/", "/admin/settings/",
                "/admin/routing/"):
        page = text(alice.get(url, follow_redirects=True))
        assert "Bravo news" not in page and "Charlie blog" not in page, url
    assert "Alpha shop" in text(alice.get("/admin/site/"))
    assert snapshot(panel) == before


@pytest.mark.parametrize("url", ["/admin/testmail/", "/admin/user/", "/admin/user/new/",
                                 "/admin/user/edit/?id=1", "/admin/user/details/?id=1",
                                 "/admin/user/export/csv/"])
def test_site_admin_gets_403_on_global_only_screens(alice, world, url):
    assert alice.get(url).status_code == 403


def test_site_admin_cannot_post_to_global_only_screens_or_settings(panel, alice, world):
    before = snapshot(panel)
    token = csrf_token(alice, "/admin/account/")
    for url, data in (("/admin/testmail/", {"server": "127.0.0.1:1", "sender": "a@example.com",
                                            "to": "b@example.com", "subject": "x"}),
                      ("/admin/user/new/", {"email": "x@example.com", "is_global_admin": "y",
                                            "password": "long enough password"}),
                      ("/admin/user/delete/", {"id": 1}),
                      ("/admin/user/action/", {"action": "delete", "rowid": [1]})):
        assert alice.post(url, data={**data, "csrf_token": token}).status_code == 403, url
    # Global settings: a site administrator is sent to their own site's page, nothing saved.
    response = alice.post("/admin/settings/", data={"csrf_token": token,
                                                    "emails__batch_size": "7"})
    assert response.status_code == 302 and f"site={world.site_a}" in response.headers["Location"]
    assert snapshot(panel) == before


def test_site_admin_sees_their_own_site_settings_and_routing(panel, alice, world):
    page = text(alice.get(f"/admin/settings/?site={world.site_a}"))
    assert "inherited from global" in page and "global only" in page
    routing = text(alice.get(f"/admin/routing/?site={world.site_a}"))
    assert "alpha-relay.example.net:2525" in routing
    assert "a server you do not manage" in routing  # the global and the shared server
