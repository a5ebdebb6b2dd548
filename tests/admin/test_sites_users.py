"""Sites and Users screens through the test client, CSRF on."""

from __future__ import annotations

from smtpsite.admin.auth import find_user
from smtpsite.extensions import db
from smtpsite.models import Site, User
from smtpsite.sites import find_site
from tests.admin.conftest import csrf_token, post, sign_in, text


def test_sites_list_create_edit(panel, root, world):
    page = text(root.get("/admin/site/"))
    assert "Alpha shop" in page and "Bravo news" in page and "Charlie blog" in page
    response = post(root, "/admin/site/new/", {"code_name": "Delta", "display_name": "Delta shop",
                                               "domains": "delta.example.com\nDELTA.example.org"})
    assert response.status_code == 302
    with panel.app_context():
        delta = find_site("delta")
        assert delta.display_name == "Delta shop"
        assert delta.domains == ["delta.example.com", "delta.example.org"]
        delta_id = delta.id
    edit = text(root.get(f"/admin/site/edit/?id={delta_id}"))
    assert "delta.example.com\ndelta.example.org" in edit
    response = post(root, f"/admin/site/edit/?id={delta_id}",
                    {"code_name": "Delta", "display_name": "Delta store", "domains": ""})
    assert response.status_code == 302
    with panel.app_context():
        assert db.session.get(Site, delta_id).display_name == "Delta store"
    assert "Delta store" in text(root.get(f"/admin/site/details/?id={delta_id}"))
    assert "Delta store" in text(root.get("/admin/site/export/csv/"))


def test_site_form_errors_show_next_to_the_fields(panel, root, world):
    response = post(root, "/admin/site/new/", {"code_name": "bad name!", "display_name": "X",
                                               "domains": "not_a_domain..com"})
    page = text(response)
    assert response.status_code == 200
    assert "must start with a letter or digit" in page and "is not a valid domain name" in page
    assert page.count("is-invalid") >= 2
    duplicate = text(post(root, "/admin/site/new/", {"code_name": "ALPHA", "display_name": "X"}))
    assert "already exists" in duplicate
    with panel.app_context():
        assert db.session.query(Site).count() == 3


def test_site_delete_is_refused_while_servers_depend_on_it(panel, root, world):
    response = post(root, "/admin/site/delete/", {"id": world.site_b}, token_page="/admin/site/")
    assert response.status_code == 302
    page = text(root.get("/admin/site/"))
    assert "cannot be deleted" in page and "SMTP server(s) are assigned to it" in page
    response = post(root, "/admin/site/delete/", {"id": world.site_c}, token_page="/admin/site/")
    assert response.status_code == 302
    with panel.app_context():
        assert db.session.get(Site, world.site_b) is not None
        assert db.session.get(Site, world.site_c) is None


def test_site_bulk_delete_deletes_only_free_sites(panel, root, world):
    post(root, "/admin/site/action/", {"action": "delete", "rowid": [world.site_b, world.site_c]},
         token_page="/admin/site/")
    with panel.app_context():
        assert db.session.get(Site, world.site_b) is not None
        assert db.session.get(Site, world.site_c) is None


def test_site_admin_edits_own_site_but_not_its_code_name(panel, alice, world):
    response = post(alice, f"/admin/site/edit/?id={world.site_a}",
                    {"code_name": "alpha", "display_name": "Alpha store", "domains": ""})
    assert response.status_code == 302
    refused = post(alice, f"/admin/site/edit/?id={world.site_a}",
                   {"code_name": "renamed", "display_name": "Alpha store", "domains": ""})
    assert "only a global administrator" in text(refused)
    with panel.app_context():
        site = db.session.get(Site, world.site_a)
        assert (site.code_name, site.display_name) == ("alpha", "Alpha store")


def test_users_create_edit_delete(panel, root, world):
    response = post(root, "/admin/user/new/", {"email": "dave@example.com", "sites": [world.site_b],
                                               "active": "y", "password": "daves long password"})
    assert response.status_code == 302
    with panel.app_context():
        dave = find_user("dave@example.com")
        assert [s.id for s in dave.sites] == [world.site_b] and not dave.is_global_admin
        dave_id, old_hash = dave.id, dave.password_hash
    page = text(root.get("/admin/user/"))
    assert "dave@example.com" in page and "scrypt" not in page
    assert "scrypt" not in text(root.get(f"/admin/user/details/?id={dave_id}"))
    assert "scrypt" not in text(root.get("/admin/user/export/csv/"))
    # Editing with an empty password keeps it.
    post(root, f"/admin/user/edit/?id={dave_id}", {"email": "dave@example.com", "active": "y",
                                                   "sites": [world.site_a, world.site_b]})
    with panel.app_context():
        dave = db.session.get(User, dave_id)
        assert dave.password_hash == old_hash and len(dave.sites) == 2
    dave_client = panel.test_client()
    assert sign_in(dave_client, "dave@example.com", "daves long password").status_code == 302
    post(root, "/admin/user/delete/", {"id": dave_id}, token_page="/admin/user/")
    with panel.app_context():
        assert db.session.get(User, dave_id) is None


def test_user_form_errors(panel, root, world):
    page = text(post(root, "/admin/user/new/", {"email": "eve@example.com", "password": "short"}))
    assert "at least 10 characters" in page and "needs at least one site" in page
    page = text(post(root, "/admin/user/new/", {"email": "alice@example.com", "is_global_admin": "y",
                                                "password": "long enough password"}))
    assert "already exists" in page
    with panel.app_context():
        me = find_user("root@example.com")
        my_id = me.id
    page = text(post(root, f"/admin/user/edit/?id={my_id}", {"email": "root@example.com",
                                                              "active": "y"}))
    assert "cannot remove your own global administrator role" in page
    post(root, "/admin/user/delete/", {"id": my_id}, token_page="/admin/user/")
    assert "cannot delete your own account" in text(root.get("/admin/user/"))
    with panel.app_context():
        assert db.session.query(User).count() == 2
        assert find_user("root@example.com").is_global_admin


def test_forms_without_the_csrf_token_change_nothing(panel, root, world):
    csrf_token(root, "/admin/site/")
    response = root.post("/admin/site/new/", data={"code_name": "zulu", "display_name": "Z"})
    assert response.status_code == 400
    response = root.post("/admin/site/delete/", data={"id": world.site_c})
    assert response.status_code == 400
    response = root.post("/admin/site/new/", data={"code_name": "zulu", "display_name": "Z",
                                                   "csrf_token": "forged"})
    assert response.status_code == 400
    with panel.app_context():
        assert db.session.query(Site).count() == 3
