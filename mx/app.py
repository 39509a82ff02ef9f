"""The mx application factory (flaskr's ``create_app``): the REST API, the page, metrics and
security, wired to one store, broker and clock.

``mx/__init__.py`` stays empty so that ``launch.py`` can import ``mx.services`` without Flask.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from db import open_store
from db.errors import (
    BrokerUnavailable,
    InvalidInput,
    InvalidInputs,
    StoreUnavailable,
    TactusError,
)
from db.outage import Outage, PatientStore
from mq import open_broker
from mx import api, auth, metrics
from mx.runtime import EXTENSION, MxRuntime
from mx.services import validate
from mx.views import register_views

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

    from db.clock import Clock
    from db.store import Store
    from mq.broker import Broker
    from settings import Settings

log = logging.getLogger(f"tactus.{__name__}")

#: Largest request body accepted (an entry or a task); ``POST /api/v1/payloads`` takes up to
#: ``max_payload_bytes`` (mx/api/payloads.py).
MAX_BODY = 1024 * 1024
#: File under ``var_dir`` keeping the key that signs session cookies across restarts.
SECRET_FILE = "mx.secret"
#: Name of the session cookie (the OpenAPI document names it too).
SESSION_COOKIE = "tactus_session"


class TextSafeResponse(Response):
    """A response whose text body is encoded with lone surrogates replaced: the last guard
    (after the templates' ``finalize``) so that no stored string can make a page a 500."""

    def set_data(self, value: bytes | str) -> None:
        if isinstance(value, str):
            value = value.encode("utf-8", "replace")
        super().set_data(value)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    broker: Broker | None = None,
    clock: Clock | None = None,
    testing: bool = False,
    stopping: threading.Event | None = None,
) -> Flask:
    """Build the mx application.

    Args:
        settings: the installation's settings.
        store: a ready store; default: open ``settings.store_uri`` (closed by
            ``app.extensions["tactus"].close()``).
        broker: a ready broker; default: open ``settings.broker_uri`` on the store.
        clock: default: the store's clock (:class:`db.clock.StoreClock`), by which workers'
            heartbeats are judged.
        testing: Flask's testing mode, a throw-away session key, and no first-start token file.
        stopping: with it, a store that is away at start is waited for (SPEC 15: mx waits out
            an outage at start like every daemon, answering 503 once it serves) until it is set.

    Returns:
        The application. On first start (no credential in the store, not ``testing``) an admin
        token is written to ``settings.admin_token_file`` and its path logged.
    """
    app = Flask(__name__)
    app.response_class = TextSafeResponse
    app.config.update(
        TESTING=testing,
        SECRET_KEY=secrets.token_bytes(32) if testing else _secret_key(settings),
        MAX_CONTENT_LENGTH=MAX_BODY,
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )
    owned: list[Store | Broker] = []

    def make_broker(patient_store: Store) -> Broker:
        if broker is not None:
            return broker
        opened = open_broker(
            settings.broker_uri,
            patient_store,
            visibility=timedelta(seconds=settings.visibility_timeout),
            attempts=1,  # a request answers at once; the announcer and the next one try again
        )
        owned.append(opened)
        return opened

    try:
        if store is None:
            # The embedded SQLite store lives under var_dir, which a fresh installation lacks.
            Path(settings.var_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
            store = open_store(settings.store_uri)
            owned.append(store)
        # Idempotent: adds what an older schema lacks (the credential and audit tables).
        starting = Outage("store", backoff_max=timedelta(seconds=settings.outage_backoff_max))
        PatientStore(store, starting, stopping=stopping, wait=stopping is not None).init_schema()
        rt = MxRuntime.wire(
            settings=settings,
            store=store,
            open_broker=make_broker,
            clock=clock,
            owned=owned,
        )
    except BaseException:
        for resource in reversed(owned):
            resource.close()
        raise
    app.extensions[EXTENSION] = rt
    # first: the payload route's larger body limit applies before anything reads a body
    app.before_request(api.payloads.allow_payload_body)
    app.before_request(_refuse_bad_text)
    auth.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(metrics.bp)
    _register_errors(app)
    register_views(app)
    if not testing:
        auth.ensure_admin_token(rt.store, settings)
    return app


def _secret_key(settings: Settings) -> bytes:
    """The session-signing key kept in ``<var_dir>/mx.secret`` (mode 0600), made on first use,
    so logins survive a restart and every mx of the installation accepts the same cookies."""
    path = Path(settings.var_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


# -- errors: one shape everywhere ----------------------------------------------------------------


def _wants_page() -> bool:
    """A browser asking for a page (not the API or metrics): it gets redirects and HTML."""
    path = request.path
    if path.startswith("/api/") or path == "/metrics":
        return False
    if request.headers.get("HX-Request") == "true":
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


def error_response(
    status: int, code: str, message: str, **extra: object
) -> tuple[ResponseReturnValue, int]:
    """``{"error": {"code", "message", ...}}`` with ``status``."""
    return jsonify(error={"code": code, "message": message, **extra}), status


def _tactus_error(exc: TactusError) -> ResponseReturnValue:
    if _wants_page():
        if isinstance(exc, auth.Unauthenticated):
            if request.headers.get("HX-Request") == "true":
                return "", 401  # a live part: tactus.js sends the browser to the login page
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        if exc.http_status >= 500 and not _is_outage(exc):
            log.error("%s %s: %s", request.method, request.path, exc)
        page = render_template(
            "error.html", status=exc.http_status, title=exc.code.replace("_", " "), message=exc
        )
        return page, exc.http_status
    extra: dict[str, object] = {}
    if isinstance(exc, InvalidInput):
        extra["field"] = exc.field
    if isinstance(exc, InvalidInputs):
        extra["errors"] = [{"field": e.field, "message": e.message} for e in exc.errors]
    response, status = error_response(exc.http_status, exc.code, exc.message, **extra)
    if status == 401:
        return response, status, {"WWW-Authenticate": 'Bearer realm="tactus"'}
    if status >= 500 and not _is_outage(exc):
        log.error("%s %s: %s", request.method, request.path, exc)
    return response, status


def _is_outage(exc: TactusError) -> bool:
    """An outage of the store or the broker: logged once by its tracker (``db.outage``), not
    once per request it refuses."""
    return isinstance(exc, StoreUnavailable | BrokerUnavailable) and getattr(exc, "transient", True)


def _http_error(exc: HTTPException) -> ResponseReturnValue:
    if _wants_page():
        return exc
    code = (exc.name or "error").lower().replace(" ", "_")
    response, status = error_response(exc.code or 500, code, exc.description or exc.name)
    headers = {}
    if exc.code == 405:
        headers["Allow"] = exc.get_response().headers.get("Allow", "")
    return response, status, headers


def _unexpected(exc: Exception) -> ResponseReturnValue:
    # A bug, not the client's input: logged with its traceback, answered in the same shape.
    log.exception("%s %s: unexpected error", request.method, request.path)
    return error_response(500, "internal", "internal error (logged on the server)")


def _refuse_bad_text() -> None:
    """Refuse a path part, query parameter or (on the page) form field that no store can keep
    or no page can show, naming it (:func:`mx.services.validate.text`: NUL characters, lone
    surrogates). JSON bodies are checked by ``mx.api.common.json_body``; the API never reads
    its body as a form, whatever the content type."""
    sources: list[tuple[str, Any]] = [
        ("path", (request.view_args or {}).items()),
        ("query", request.args.items(multi=True)),
    ]
    if _is_api():
        # Keep the raw body before anything reads it as a form (the CSRF check may): the API
        # parses it as JSON whatever its content type, and a form parsed later reads a copy.
        request.get_data(cache=True, parse_form_data=False)
    elif request.mimetype.endswith("form-urlencoded"):
        sources.append(("form", request.form.items(multi=True)))
    for source, items in sources:
        for name, value in items:
            field = str(name).replace("\x00", "") or source
            validate.text(field, str(name))
            validate.text(field, str(value))


def _is_api() -> bool:
    return request.path.startswith("/api/")


def _register_errors(app: Flask) -> None:
    """One handler per family: Tactus errors, HTTP errors (404, 405, 413 ...), and bugs."""
    app.register_error_handler(TactusError, _tactus_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
