"""Which servers a site's mail may use, in which order, and why (Kentico's rules)."""

from smtpsite import routing, settings
from smtpsite.extensions import db
from smtpsite.servers import save_server
from smtpsite.sites import create_site


def _server(name, *, priority="normal", sites=(), is_global=False, enabled=True, **extra):
    return save_server(None, server_name=name, method="network", options={"security": "none"},
                       priority=priority, sites=list(sites), is_global=is_global,
                       enabled=enabled, **extra)


def _names(site, sender=None):
    return [e.name for e in routing.chain_for(site, sender)]


def test_chain_order_follows_the_original(any_app):
    shop = create_site("shop", "Shop")
    blog = create_site("blog", "Blog")
    _server("global-low.example", priority="low", is_global=True)
    _server("global-normal.example", is_global=True)
    _server("shop-normal.example", sites=[shop])
    _server("shop-high.example", priority="high", sites=[shop])
    _server("blog-only.example", priority="high", sites=[blog])
    _server("global-high.example", priority="high", is_global=True)
    _server("shop-disabled.example", priority="high", sites=[shop], enabled=False)
    db.session.commit()
    # Site servers before global ones inside each priority, high -> normal -> low.
    assert _names(shop) == [
        "shop-high.example", "global-high.example",
        "shop-normal.example", "global-normal.example",
        "global-low.example",
    ]
    settings.set_value("emails.smtp_server", "default.example:2525", shop)
    db.session.commit()
    assert _names(shop)[0] == "default.example:2525"
    # Global email: the global default server and the global servers only.
    assert _names(None) == ["global-high.example", "global-normal.example", "global-low.example"]
    settings.set_value("emails.smtp_server", "global-default.example")
    db.session.commit()
    assert _names(None)[0] == "global-default.example"
    assert _names(blog)[:2] == ["global-default.example", "blog-only.example"]


def test_the_settings_server_is_high_and_keyed_by_scope(app):
    shop = create_site("shop", "Shop")
    blog = create_site("blog", "Blog")
    settings.set_value("emails.smtp_server", "global.example")
    settings.set_value("emails.smtp_server", "shop.example", shop)
    settings.set_value("emails.smtp_username", "user", shop)
    settings.set_value("emails.smtp_password", "pw", shop)
    settings.set_value("emails.smtp_security", "ssl", shop)
    db.session.commit()
    [shop_default] = routing.chain_for(shop)
    [blog_default] = routing.chain_for(blog)
    assert shop_default.priority == "high" and shop_default.key == f"settings:site:{shop.id}"
    assert shop_default.options["security"] == "ssl"
    assert shop_default.options["password"].reveal() == "pw"
    # A site inheriting the global default shares its busy slots with global email.
    assert blog_default.key == "settings:global" == routing.chain_for(None)[0].key


def test_global_choice_drops_the_site_list(app):
    shop = create_site("shop", "Shop")
    server = _server("a.example", sites=[shop])
    db.session.commit()
    save_server(server, server_name="a.example", method="network", options={"security": "none"},
                is_global=True, sites=[shop])
    db.session.commit()
    assert server.is_global and server.sites == []


def test_sender_filter_keeps_order_and_skips_non_matching(app):
    shop = create_site("shop", "Shop")
    _server("news.example", priority="high", sites=[shop], sender_filter="news@shop.example")
    _server("any.example", sites=[shop])
    db.session.commit()
    assert _names(shop, "news@shop.example") == ["news.example", "any.example"]
    assert _names(shop, "orders@shop.example") == ["any.example"]
    rows = routing.describe(shop, "orders@shop.example")
    assert rows[0]["state"].startswith("sender filter does not match")


def test_describe_explains_each_server(app):
    shop = create_site("shop", "Shop")
    _server("off.example", sites=[shop], enabled=False)
    _server("g.example", is_global=True)
    db.session.commit()
    rows = {r["name"]: r for r in routing.describe(shop)}
    assert rows["off.example"]["state"] == "disabled"
    assert rows["g.example"]["reason"] == "global server (all sites)"
    assert rows["g.example"]["state"] == "ok"


def test_changes_are_seen_by_the_next_lookup_from_another_session(app):
    shop = create_site("shop", "Shop")
    server = _server("a.example", sites=[shop])
    db.session.commit()
    assert _names(shop) == ["a.example"]
    # Another process disables it: a separate connection writes straight to the table.
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE smtp_servers SET enabled = 0 WHERE id = ?", (server.id,))
    db.session.remove()
    assert _names(create_site_lookup("shop")) == []


def create_site_lookup(code):
    from smtpsite.sites import find_site

    return find_site(code)
