"""The web page (SPEC section 7): server-rendered blueprints, one per area, sharing ``base.html``.

Pages call the same service verbs as the API and the command line. Live parts are fragments an
htmx element polls (``hx-get`` + ``hx-select``); the page answers an htmx request with just the
fragment. Every action is a POST form carrying the session's CSRF token, answered with a redirect
back (post/redirect/get) and a flashed message saying what happened or why it was refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mx.views import boxes, dashboard, entries, filters, tasks, work

if TYPE_CHECKING:
    from flask import Flask, Response

#: Headers on every answer: no framing, no sniffing, scripts and styles from mx only.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def register_views(app: Flask) -> None:
    """Register the page's blueprints, template filters and security headers on ``app``."""
    for module in (dashboard, work, entries, boxes, tasks):
        app.register_blueprint(module.bp)
    filters.init_app(app)
    app.after_request(_security_headers)


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
