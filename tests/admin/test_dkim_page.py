"""The DKIM page of a site's settings: generate a key pair and show the DNS record."""

import dkim as dkimpy

from smtpsite import settings
from smtpsite.dkim import sign_outgoing
from smtpsite.messages import build_message
from smtpsite.models import Site
from tests.admin.conftest import csrf_token, text


def _generate(client, site_id, **data):
    url = f"/admin/settings/dkim/?site={site_id}"
    return client.post(url, data={"selector": "mail", "csrf_token": csrf_token(client, url),
                                  **data})


def test_global_admin_generates_a_key_and_sees_the_record(panel, world, root):
    page = text(root.get(f"/admin/settings/?site={world.site_a}"))
    assert "DKIM signing" in page
    assert "does not sign its mail yet" in text(root.get(f"/admin/settings/dkim/?site={world.site_a}"))
    page = text(_generate(root, world.site_a))
    assert "mail._domainkey.alpha.example.com" in page and "v=DKIM1; k=rsa; p=" in page
    assert "PRIVATE KEY" not in page
    with panel.app_context():
        site = panel.extensions["sqlalchemy"].session.get(Site, world.site_a)
        key = settings.get("emails.dkim_private_key", site).reveal()
        assert key.startswith("-----BEGIN") and key.split("\n")[1] not in page
        # Mail of the site is now signed, and the published record verifies it.
        record = page.split("v=DKIM1")[1].split("<")[0]
        prepared = build_message(sender="shop@alpha.example.com", to=["a@example.com"],
                                 subject="s", text="t")
        signed = sign_outgoing(prepared.outgoing, site).data
        txt = ("v=DKIM1" + record).encode()
        assert dkimpy.verify(signed, dnsfunc=lambda name, timeout=5: txt)


def test_a_second_key_needs_the_replace_box(panel, world, root):
    _generate(root, world.site_a)
    page = text(_generate(root, world.site_a, selector="other"))
    assert "tick this to replace it" in page
    assert "other._domainkey" not in page
    page = text(_generate(root, world.site_a, selector="other", replace="y"))
    assert "other._domainkey.alpha.example.com" in page


def test_bad_input_and_no_domain_are_explained(panel, world, root):
    page = text(_generate(root, world.site_c))
    assert "No key was made" in page and "has no domain name" in page
    page = text(_generate(root, world.site_a, selector="bad selector!"))
    assert "No key was made" in page


def test_site_admin_only_for_their_sites_and_csrf_required(panel, world, alice):
    assert _generate(alice, world.site_a).status_code == 200
    assert alice.get(f"/admin/settings/dkim/?site={world.site_b}").status_code in (403, 404)
    token = csrf_token(alice, f"/admin/settings/dkim/?site={world.site_a}")
    other = alice.post(f"/admin/settings/dkim/?site={world.site_b}",
                       data={"selector": "mail", "csrf_token": token})
    assert other.status_code in (403, 404)
    with panel.app_context():
        site_b = panel.extensions["sqlalchemy"].session.get(Site, world.site_b)
        assert not settings.get("emails.dkim_private_key", site_b)
    url = f"/admin/settings/dkim/?site={world.site_a}"
    refused = alice.post(url, data={"selector": "nocsrf", "replace": "y"})
    assert "nocsrf._domainkey" not in text(refused)
