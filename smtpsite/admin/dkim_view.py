"""The DKIM page of a site's email settings: generate a key pair, show the DNS record."""

from __future__ import annotations

from flask import abort, flash, request
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField
from wtforms.validators import InputRequired

from smtpsite import dkim
from smtpsite.admin import scoping
from smtpsite.extensions import db
from smtpsite.settings import SettingError


class DkimForm(FlaskForm):
    """Selector and signing domain for a new key."""

    selector = StringField("Selector", default="mail", validators=[InputRequired()],
                           description="The DNS label the record is published under, e.g. mail.")
    domain = StringField("Signing domain",
                         description="Default: the site's first domain name.")
    replace = BooleanField("Replace the current key",
                           description="Mail is signed with the new key at once: publish its "
                                       "record first, or receivers will fail the signatures.")


def dkim_page(view):
    """``/admin/settings/dkim/?site=ID``: the current record, and a form for a new key."""
    site_id = request.args.get("site")
    if not site_id:
        abort(404)  # DKIM keys belong to a site
    site = scoping.site_or_404(site_id)
    form = DkimForm()
    current = dkim.record_for_site(site)
    generated = None
    if form.validate_on_submit():
        if current is not None and not form.replace.data:
            form.replace.errors = ["The site already signs with a key: tick this to replace it."]
        else:
            try:
                generated = dkim.generate_for_site(
                    site, form.selector.data.strip(), (form.domain.data or "").strip() or None)
            except (dkim.DkimError, SettingError) as exc:
                db.session.rollback()
                flash(f"No key was made: {exc}", "error")
            else:
                flash("A new key pair was made and stored; publish the record below.", "success")
                current = generated
    return view.render("admin/smtpsite/dkim.html", form=form, site=site, record=current,
                       generated=generated is not None)
