"""Sign-in: every page needs it, CSRF on the form, cookie flags, throttling, sign-out, CLI users."""

from __future__ import annotations

import re

import pytest

from smtpsite.admin.auth import LoginThrottle, find_user
from smtpsite.extensions import db
from smtpsite.models import Site, User
from tests.admin.conftest import PASSWORD, csrf_token, post, sign_in, text

PAGES = ["/admin/", "/admin/site/", "/admin/site/new/", "/admin/site/edit/?id=1",
         "/admin/site/details/?id=1", "/admin/site/export/csv/", "/admin/server/",
         "/admin/server/new/?method=network", "/admin/server/edit/?id=1", "/admin/server/details/?id=1",
         "/admin/server/test/?id=1", "/admin/server/export/csv/", "/admin/server/ajax/lookup/?name=x",
         "/admin/settings/", "/admin/routing/", "/admin/testmail/", "/admin/user/",
         "/admin/user/new/", "/admin/account/"]
POSTS = ["/admin/site/delete/", "/admin/site/action/", "/admin/server/action/",
         "/admin/server/delete/", "/admin/server/new/?method=network", "/admin/settings/",
         "/admin/testmail/", "/admin/user/new/", "/admin/server/test/?id=1"]


def test_every_page_sends_strangers_to_sign_in(panel, world):
    client = panel.test_client()
    for url in PAGES:
        response = client.get(url)
        text(response)
        assert response.status_code == 302, url
        assert "/admin/login/" in response.headers["Location"], url


def test_every_action_refuses_strangers_even_with_a_token(panel, world):
    client = panel.test_client()
    token = csrf_token(client)
    for url in POSTS:
        response = client.post(url, data={"csrf_token": token, "rowid": "1", "action": "delete",
                                          "id": "1"})
        assert response.status_code == 302, url
        assert "/admin/login/" in response.headers["Location"], url
    with panel.app_context():
        assert db.session.query(User).count() == 2
        assert get_site_count() == 3


def get_site_count() -> int:
    return db.session.query(Site).count()


def test_sign_in_needs_the_csrf_token(panel, world):
    client = panel.test_client()
    response = client.post("/admin/login/", data={"email": world.global_admin,
                                                   "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/admin/").status_code == 302


def test_sign_in_sets_a_protected_session_cookie_and_signs_out_by_post(panel, world):
    client = panel.test_client()
    response = sign_in(client, world.global_admin)
    assert response.status_code == 302
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "root@example.com" in text(client.get("/admin/"))
    assert client.get("/admin/logout/").status_code == 405  # a link cannot sign anyone out
    post(client, "/admin/logout/", {})
    assert client.get("/admin/").status_code == 302


def test_wrong_password_is_shown_next_to_the_field(panel, world):
    response = sign_in(panel.test_client(), world.global_admin, "wrong password!")
    assert response.status_code == 200
    assert "Wrong email or password" in text(response)


def test_next_goes_only_to_a_local_path(panel, world):
    client = panel.test_client()
    token = csrf_token(client)
    data = {"email": world.global_admin, "password": PASSWORD, "csrf_token": token}
    response = client.post("/admin/login/?next=https://evil.example/x", data=data)
    assert response.headers["Location"] == "/admin/"
    post(client, "/admin/logout/", {})
    token = csrf_token(client)
    response = client.post("/admin/login/?next=/admin/site/", data={**data, "csrf_token": token})
    assert response.headers["Location"] == "/admin/site/"


def test_failed_sign_ins_lock_the_account_for_growing_periods(panel, world):
    now = [1000.0]
    panel.extensions["smtpsite_admin"].throttle = LoginThrottle(free_attempts=3,
                                                                clock=lambda: now[0])
    client = panel.test_client()
    for _ in range(3):
        assert "Wrong email" in text(sign_in(client, world.global_admin, "bad password 1"))
    # The fourth failure locks the account: even the right password is refused now.
    sign_in(client, world.global_admin, "bad password 1")
    locked = sign_in(client, world.global_admin)
    assert locked.status_code == 200 and "Too many failed sign-ins" in text(locked)
    now[0] += 1.5
    sign_in(client, world.global_admin, "bad password 1")  # fifth failure: 2 seconds
    now[0] += 1.5
    assert "Too many failed sign-ins" in text(sign_in(client, world.global_admin))
    now[0] += 1.0
    assert sign_in(client, world.global_admin).status_code == 302


def test_throttle_counts_unknown_accounts_and_clients_too():
    now = [0.0]
    throttle = LoginThrottle(free_attempts=2, clock=lambda: now[0])
    keys = ("account:nobody@example.com", "client:10.0.0.1")
    throttle.failed(keys)
    throttle.failed(keys)
    assert throttle.wait(keys) == 0
    throttle.failed(keys)
    assert throttle.wait(["client:10.0.0.1"]) == 1.0
    now[0] += 2000  # outside the window: counting starts again
    throttle.failed(keys)
    assert throttle.wait(keys) == 0


def test_changing_the_password_signs_out_other_sessions(panel, world, root):
    other = panel.test_client()
    sign_in(other, world.global_admin)
    assert other.get("/admin/").status_code == 200
    response = post(root, "/admin/account/", {"current": PASSWORD, "new": "a new long password",
                                              "repeat": "a new long password"})
    assert response.status_code == 302
    assert root.get("/admin/").status_code == 200
    assert other.get("/admin/").status_code == 302
    too_short = post(root, "/admin/account/", {"current": "a new long password", "new": "short",
                                               "repeat": "short"})
    assert "at least 10 characters" in text(too_short)


def test_disabled_user_cannot_sign_in_and_is_signed_out(panel, world, alice):
    with panel.app_context():
        find_user(world.site_admin).active = False
        db.session.commit()
    assert alice.get("/admin/").status_code == 302
    assert "Wrong email" in text(sign_in(panel.test_client(), world.site_admin))


def test_init_creates_the_first_administrator_once(panel):
    runner = panel.test_cli_runner()
    first = runner.invoke(args=["smtpsite", "init"])
    assert first.exit_code == 0, first.output
    password = re.search(r"password: (\S+)", first.output).group(1)
    second = runner.invoke(args=["smtpsite", "init"])
    assert second.exit_code == 0 and "password" not in second.output
    client = panel.test_client()
    assert sign_in(client, "admin@localhost", password).status_code == 302
    assert "global administrator" in text(client.get("/admin/"))


def test_user_add_from_stdin_and_prompt(panel, world):
    runner = panel.test_cli_runner()
    result = runner.invoke(args=["smtpsite", "user", "add", "Bob@Example.com", "--site", "alpha",
                                 "--site", "bravo", "--password-stdin"],
                           input="bobs long password\n")
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["smtpsite", "user", "add", "carol@example.com", "--global-admin"],
                           input="carols long password\ncarols long password\n")
    assert result.exit_code == 0, result.output
    with panel.app_context():
        bob = find_user("bob@example.com")
        assert bob.email == "bob@example.com" and not bob.is_global_admin
        assert sorted(s.code_name for s in bob.sites) == ["alpha", "bravo"]
        assert "bobs long password" not in bob.password_hash
        assert bob.password_hash.startswith("scrypt:32768:8:1$")
        assert find_user("carol@example.com").is_global_admin
    assert sign_in(panel.test_client(), "bob@example.com", "bobs long password").status_code == 302


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["x@example.com"], "", "either --global-admin or at least one --site"),
    (["x@example.com", "--global-admin", "--site", "alpha"], "", "either --global-admin"),
    (["x@example.com", "--site", "nope", "--password-stdin"], "long enough pw\n", "no site"),
    (["x@example.com", "--global-admin", "--password-stdin"], "short\n", "at least 10"),
    (["not an address", "--global-admin", "--password-stdin"], "long enough pw\n", "not a valid"),
    (["root@example.com", "--global-admin", "--password-stdin"], "long enough pw\n",
     "already exists"),
])
def test_user_add_refuses_bad_input(panel, world, args, stdin, message):
    result = panel.test_cli_runner().invoke(args=["smtpsite", "user", "add", *args], input=stdin)
    assert result.exit_code != 0
    assert message in result.output
    with panel.app_context():
        assert db.session.query(User).count() == 2
