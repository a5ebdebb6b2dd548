"""A first end-to-end send through a real server."""

from smtpsite import send_mail, settings
from smtpsite.extensions import db
from smtpsite.servers import save_server
from smtpsite.sites import create_site


def test_send_through_a_site_server(app, smtp_server):
    site = create_site("shop", "Shop")
    save_server(None, server_name=smtp_server.server_name, method="network",
                options={"security": "none"}, sites=[site])
    settings.set_value("emails.queue_enabled", False)
    db.session.commit()
    result = send_mail("shop", to=["a@example.com"], subject="Hi", text="Hello")
    assert result.status == "sent", result
    assert smtp_server.messages[0].rcpt_tos == ["a@example.com"]
