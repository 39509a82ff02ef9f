"""Serving mx: the Flask app behind a threaded WSGI server, stopped cleanly on shutdown.

Werkzeug's server is enough for the page and the API of one installation on loopback (the
default bind); behind a reverse proxy, any WSGI server can serve ``mx.app:create_app`` instead.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING

from werkzeug.serving import get_sockaddr, make_server, select_address_family

from db.errors import InvalidInput, TactusError
from mx.app import create_app

if TYPE_CHECKING:
    from settings import Settings

log = logging.getLogger(f"tactus.{__name__}")


class MxServer:
    """mx's app and its listening socket, bound when made: a port in use is refused before
    anything else starts (``launch.py standalone`` binds first, then starts the rest).

    Raises:
        InvalidInput: ``mx_host:mx_port`` cannot be listened on (field ``mx_port``).
    """

    def __init__(self, settings: Settings, *, stopping: threading.Event | None = None) -> None:
        self.settings = settings
        host, port = settings.mx_host, settings.mx_port
        # Bound here rather than by werkzeug, which answers a port in use with sys.exit(1).
        family = select_address_family(host, port)
        listening = socket.socket(family, socket.SOCK_STREAM)
        try:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.bind(get_sockaddr(host, port, family))
            listening.listen(128)
        except OSError as exc:
            listening.close()
            raise InvalidInput(
                "mx_port",
                f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(choose another with TACTUS_MX_PORT, or TACTUS_MX_HOST)",
            ) from None
        try:
            # with ``stopping``, a store away at start is waited for (until it is set)
            self.app = create_app(settings, stopping=stopping)
            self.server = make_server(host, port, self.app, threaded=True, fd=listening.fileno())
        finally:
            listening.close()  # the server holds its own duplicate of the socket

    @property
    def url(self) -> str:
        return f"http://{self.settings.mx_host}:{self.server.port}/"

    def serve(self, shutdown: threading.Event) -> int:
        """Serve until ``shutdown`` is set; then stop and release everything."""
        thread = threading.Thread(target=self.server.serve_forever, name="mx-http", daemon=True)
        thread.start()
        log.warning(
            "mx: %s (API at /api/v1; admin token file: %s)",
            self.url,
            self.settings.admin_token_file,
        )
        try:
            shutdown.wait()
        finally:
            self.server.shutdown()
            thread.join(10)
            self.server.server_close()
            self.app.extensions["tactus"].close()
        return 0


def run_mx(settings: Settings, shutdown: threading.Event) -> int:
    """Serve mx on ``mx_host:mx_port`` until ``shutdown`` is set."""
    try:
        server = MxServer(settings, stopping=shutdown)
    except TactusError:
        if shutdown.is_set():
            return 0  # stopped while waiting for the store at start
        raise
    return server.serve(shutdown)
