"""Send test email (global administrators): straight to a server, bypassing the queue."""

from __future__ import annotations

import logging
import mimetypes

from flask import request
from flask_admin import BaseView, expose
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import BooleanField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import InputRequired

from smtpsite import settings
from smtpsite.addresses import AddressError, check_address, parse_server_name
from smtpsite.admin import checks, scoping
from smtpsite.admin.fields import choice_list
from smtpsite.delivery import CheckResult, Secret
from smtpsite.messages import MessageError, build_message
from smtpsite.models import Site

log = logging.getLogger(__name__)
SECURITY = (("none", "None (plain text)"), ("starttls", "STARTTLS"), ("ssl", "Implicit TLS"))


class TestMailForm(FlaskForm):
    """Server details (pre-filled from a site's default server) and the message."""

    server = StringField("SMTP server", validators=[InputRequired()],
                         description="host, host:port or [IPv6]:port")
    username = StringField("User name", description="Empty: no sign-in.")
    password = PasswordField(
        "Password", render_kw={"autocomplete": "new-password"},
        description="Empty: use the stored password of the default server shown above "
                    "(only while the user name is unchanged).")
    security = SelectField("Security", choices=choice_list(SECURITY), default="starttls")
    verify_certificate = BooleanField("Verify the certificate", default=True)
    sender = StringField("From", validators=[InputRequired()])
    to = StringField("To", validators=[InputRequired()])
    subject = StringField("Subject", validators=[InputRequired()], default="Test email")
    html = TextAreaField("HTML text", default="<p>This is a test email.</p>")
    attachment = FileField("Attachment", description="Optional, one file.")


def _prefill(form: TestMailForm, values: dict[str, settings.Resolved]) -> None:
    form.server.data = values["emails.smtp_server"].value
    form.username.data = values["emails.smtp_username"].value
    form.security.data = values["emails.smtp_security"].value
    form.sender.data = values["emails.default_sender"].value
    form.to.data = values["emails.default_sender"].value


def _check_fields(form: TestMailForm) -> bool:
    try:
        parse_server_name(form.server.data)
    except AddressError as exc:
        form.server.errors = [*form.server.errors, str(exc)]
    for field in (form.sender, form.to):
        try:
            check_address(field.data)
        except AddressError as exc:
            field.errors = [*field.errors, str(exc)]
    return not (form.server.errors or form.sender.errors or form.to.errors)


def send_test(form: TestMailForm, stored: dict[str, settings.Resolved]) -> tuple[CheckResult, str]:
    """Check the path, then send the message; return the outcome and the Message-ID (or '')."""
    password: Secret | str = form.password.data or ""
    if not password and form.username.data == stored["emails.smtp_username"].value:
        password = stored["emails.smtp_password"].value
    options = {
        "security": form.security.data,
        "username": form.username.data or None,
        "password": password or None,
        "verify_certificate": form.verify_certificate.data,
        "timeout": 30,
    }
    attachments = []
    upload = form.attachment.data
    if upload is not None and upload.filename:
        mimetype = upload.mimetype or mimetypes.guess_type(upload.filename)[0]
        attachments.append((upload.filename, upload.read(), mimetype))
    try:
        prepared = build_message(sender=form.sender.data.strip(), to=[form.to.data.strip()],
                                 subject=form.subject.data, html=form.html.data or "",
                                 attachments=attachments, email_format="html")
    except MessageError as exc:
        return CheckResult(False, f"the message cannot be built: {exc}"), ""
    masked = {"password": Secret(password.reveal() if isinstance(password, Secret) else password)}
    # First the check: it records the dialogue up to RCPT TO (credentials hidden).
    result = checks.check_with(form.server.data, "network", options, prepared.sender,
                               form.to.data.strip())
    if not result.ok:
        return result, ""
    try:
        plugin = checks.make_plugin(form.server.data, "network", options)
        [sent] = plugin.send_messages([prepared.outgoing])
    except Exception as exc:  # a failure of the plugin must show as a failure, not a 500
        log.error("test email: the network plugin raised %s", type(exc).__name__)
        return CheckResult(False, f"sending failed ({type(exc).__name__})", result.transcript), ""
    lines = result.transcript + [f"> (new connection) MAIL, RCPT, DATA: {len(prepared.outgoing.data)} bytes"]
    if sent.ok:
        lines.append(f"< {sent.code} {sent.reply}".rstrip())
        outcome = CheckResult(True, "The test email was sent.", lines)
    else:
        error = sent.error.message if sent.error else "the server did not accept the message"
        lines.append(f"< {error}")
        outcome = CheckResult(False, error, lines)
    outcome.transcript = checks.redact(outcome.transcript, masked)
    outcome.message = checks.redact([outcome.message], masked)[0]
    return outcome, prepared.message_id if sent.ok else ""


class TestMailView(scoping.AccessMixin, BaseView):
    """``/admin/testmail/``: global administrators only."""

    global_only = True

    @expose("/", methods=("GET", "POST"))
    def index(self):
        """Show the form (pre-filled from ?site=) and send on POST."""
        site: Site | None = scoping.site_or_404(request.args["site"]) if request.args.get("site") \
            else None
        stored = settings.resolve_all(site)
        form = TestMailForm()
        result, message_id = None, ""
        if request.method == "GET":
            _prefill(form, stored)
        elif form.validate_on_submit() and _check_fields(form):
            result, message_id = send_test(form, stored)
        return self.render("admin/smtpsite/testmail.html", form=form, site=site,
                           sites=scoping.visible_sites(), result=result, message_id=message_id,
                           password_set=bool(stored["emails.smtp_password"].value))
