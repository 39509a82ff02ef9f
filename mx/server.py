"""Serving mx: the Flask app behind a threaded WSGI server, stopped cleanly on shutdown.

Werkzeug's server is enough for the page and the API of one installation on loopback (the
default bind); behind a reverse proxy, any WSGI server can serve ``mx.app:create_app`` instead.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from werkzeug.serving import make_server

from mx.app import create_app

if TYPE_CHECKING:
    from settings import Settings

log = logging.getLogger(f"tactus.{__name__}")


def run_mx(settings: Settings, shutdown: threading.Event) -> int:
    """Serve mx on ``mx_host:mx_port`` until ``shutdown`` is set."""
    app = create_app(settings)
    server = make_server(settings.mx_host, settings.mx_port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="mx-http", daemon=True)
    thread.start()
    log.warning(
        "mx: http://%s:%s/ (API at /api/v1; admin token file: %s)",
        settings.mx_host,
        settings.mx_port,
        settings.admin_token_file,
    )
    try:
        shutdown.wait()
    finally:
        server.shutdown()
        thread.join(10)
        app.extensions["tactus"].close()
    return 0
