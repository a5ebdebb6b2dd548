"""Security headers on every response: a strict Content-Security-Policy, framing and sniffing off."""

from __future__ import annotations

import base64
import hashlib
import secrets

from flask import Flask, Response, g, has_request_context

# Inline event handlers in Flask-Admin's Bootstrap 4 templates. A nonce cannot cover an
# ``onclick`` attribute; CSP allows exactly these texts by hash ('unsafe-hashes'), so a
# delete button still asks for confirmation while any other inline handler is refused.
ADMIN_INLINE_HANDLERS = (
    "return faHelpers.safeConfirm('Are you sure you want to delete this record?');",
    "return false;",
)
# Per bulk action of a model view (``actions.html``): the action name goes inside.
ACTION_HANDLER = "return modelActions.execute('{}');"


def csp_nonce() -> str:
    """The nonce of the current request, for ``<script nonce=...>`` (same for the whole page)."""
    if not has_request_context():
        return ""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(18)
    return g.csp_nonce


def _hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def handler_hashes(app: Flask) -> tuple[str, ...]:
    """CSP hash sources for the inline handlers of the app's admin pages, bulk actions included."""
    handlers = list(ADMIN_INLINE_HANDLERS)
    for admin in app.extensions.get("admin", []):
        for view in getattr(admin, "_views", []):
            for name, _text in getattr(view, "_actions", None) or []:
                handlers.append(ACTION_HANDLER.format(name))
    return tuple(dict.fromkeys(_hash(h) for h in handlers))


def content_security_policy(nonce: str, hashes: tuple[str, ...] = ()) -> str:
    """The policy: everything from this origin only, scripts by nonce, no framing, no plugins."""
    handler_sources = " ".join(("'unsafe-hashes'", *hashes)) if hashes else "'none'"
    directives = {
        "default-src": "'self'",
        "script-src": f"'self' 'nonce-{nonce}'",
        # Inline event handlers: only the hashed ones above.
        "script-src-attr": handler_sources,
        # Styles may be inline: the panel's pages use a <style> block, and style injection
        # cannot run code. Scripts stay strict.
        "style-src": "'self' 'unsafe-inline'",
        "img-src": "'self' data:",
        "font-src": "'self' data:",
        "connect-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def init_security_headers(app: Flask) -> None:
    """Send the security headers on every response and give the admin pages their nonce.

    Call it after the admin panel is attached, so its bulk actions are known.
    """
    hashes = handler_hashes(app)
    for admin in app.extensions.get("admin", []):
        # Flask-Admin puts this nonce on its own inline <script> tags.
        if admin.csp_nonce_generator is None:
            admin.csp_nonce_generator = csp_nonce
    app.jinja_env.globals["csp_nonce"] = csp_nonce

    @app.after_request
    def _set_security_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", content_security_policy(csp_nonce(), hashes))
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        return response
