"""Authentication, roles, CSRF and the audit trail of mx: secure by default.

- Every endpoint needs a principal unless its view is marked :func:`public` (health, the OpenAPI
  document, the login page, static files): a route someone adds later is protected without
  anyone remembering to.
- A principal comes from ``Authorization: Bearer <token>`` (scripts, the remote command line) or
  from the page's session after :func:`login`. An executor token is kept in memory for
  :data:`~mx.runtime.EXECUTOR_TOKEN_TTL` once it authenticated (its revocation takes that long);
  every other token is looked up on each request. A request whose Authorization header is present but
  wrong is refused; it never falls back to the session.
- Roles: GET and HEAD need ``viewer``; any other method needs ``operator`` unless the view asks
  for more with :func:`requires`, or calls :func:`require_role` once it knows (a body carrying a
  ``command`` needs ``admin``).
- A mutating request made with the session must carry the session's CSRF token in the
  ``X-CSRF-Token`` header or the ``csrf_token`` form field; bearer-token requests are exempt (a
  browser never adds that header on its own, so a forged cross-site request cannot carry it).
- Every mutating request to an endpoint is written to the audit trail (who, what, target, when,
  status), refused ones included (the executors' claims, heartbeats and outcomes only when
  refused: each unit of work's history records them). GET never writes anything to the store.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from db.credentials import CredentialKind, Role
from db.errors import StoreUnavailable, TactusError
from mx.runtime import runtime
from mx.services.credentials import (
    Principal,
    authenticate_password,
    authenticate_token,
    create_token,
    create_user,
    ensure_admin_token,
    principal_by_id,
    token_hash,
)

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue
    from werkzeug.wrappers import Response

__all__ = [
    "CsrfRefused",
    "Forbidden",
    "Principal",
    "Unauthenticated",
    "bp",
    "create_token",
    "create_user",
    "csrf_token",
    "current_principal",
    "ensure_admin_token",
    "init_app",
    "public",
    "quiet_audit",
    "require_role",
    "requires",
]

log = logging.getLogger(f"tactus.{__name__}")

F = TypeVar("F", bound=Callable[..., Any])

#: Methods that never change state.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Header and form field carrying the CSRF token of a session request.
CSRF_HEADER, CSRF_FIELD = "X-CSRF-Token", "csrf_token"
#: Audit columns are 191 characters wide.
AUDIT_TEXT = 191

#: The login page's template.
LOGIN_TEMPLATE = "auth/login.html"

bp = Blueprint("auth", __name__)


class Unauthenticated(TactusError):
    """No valid credentials came with the request."""

    code = "unauthenticated"
    http_status = 401


class Forbidden(TactusError):
    """The principal's role does not allow this."""

    code = "forbidden"
    http_status = 403

    def __init__(self, principal: Principal, needed: Role) -> None:
        self.needed = needed
        super().__init__(f"{principal.actor} has role {principal.role}; this needs {needed}")


class TooManyAttempts(TactusError):
    """Logins from this address or for this user failed too often lately."""

    code = "too_many_attempts"
    http_status = 429


class CsrfRefused(TactusError):
    """A mutating session request without the session's CSRF token."""

    code = "csrf_refused"
    http_status = 403

    def __init__(self) -> None:
        super().__init__(
            f"a request made with the session must carry its CSRF token ({CSRF_HEADER} header "
            f"or {CSRF_FIELD} field)"
        )


# -- marking views ---------------------------------------------------------------------------------


def public(view: F) -> F:
    """Mark a view as open to everyone (no credentials needed)."""
    view._tactus_public = True  # type: ignore[attr-defined]
    return view


def requires(role: Role) -> Callable[[F], F]:
    """Mark a view as needing at least ``role`` (checked before it runs)."""

    def mark(view: F) -> F:
        view._tactus_role = role  # type: ignore[attr-defined]
        return view

    return mark


def current_principal() -> Principal | None:
    """Who the current request acts for (None on a public view without credentials)."""
    return g.get("principal")


def require_role(role: Role) -> Principal:
    """Refuse the current request unless its principal has at least ``role``.

    Raises:
        Unauthenticated: no principal.
        Forbidden: the role is too low.
    """
    principal = current_principal()
    if principal is None:
        raise Unauthenticated("credentials are required (a bearer token or a login)")
    if not principal.role.allows(role):
        raise Forbidden(principal, role)
    return principal


def quiet_audit() -> None:
    """Leave the current request out of the audit trail unless it is refused: for the
    executors' claims, heartbeats and outcomes, machine traffic that each unit of work's
    history records already (a refused one is still audited)."""
    g.audit_quiet = True


def csrf_token() -> str:
    """The session's CSRF token, made on first use (templates put it in their forms)."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


# -- every request ---------------------------------------------------------------------------------


def _view() -> Callable[..., Any] | None:
    if request.endpoint is None:
        return None  # no route matched: the 404 or 405 follows
    return current_app.view_functions.get(request.endpoint)


def _authenticate() -> None:
    """Find the principal, then refuse what it may not do (before every request)."""
    view = _view()
    if view is None:
        return
    # Flask's own static view cannot be marked; the page's CSS and scripts hold no secrets.
    is_public = getattr(view, "_tactus_public", False) or request.endpoint == "static"
    store = runtime().store
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, secret = header.strip().partition(" ")
        principal = None
        if scheme.lower() == "bearer":
            principal = _token_principal(store, secret.strip(), is_public)
        if principal is None and not is_public:
            raise Unauthenticated("the Authorization header holds no valid bearer token")
        g.principal, g.via = principal, "token"
    elif session.get("credential"):
        kind, name, credential_id = session["credential"]
        try:
            g.principal = principal_by_id(store, CredentialKind(kind), name, credential_id)
        except StoreUnavailable:
            if not is_public:
                raise
            g.principal = None  # health and the login page answer during an outage
        g.via = "session"
        if g.principal is None:
            session.pop("credential", None)  # the credential was deleted: log out
    if is_public:
        return
    needed = getattr(view, "_tactus_role", None) or (
        Role.VIEWER if request.method in SAFE_METHODS else Role.OPERATOR
    )
    require_role(needed)
    if g.via == "session" and request.method not in SAFE_METHODS:
        _check_csrf()


def _token_principal(store: Any, secret: str, is_public: bool) -> Principal | None:
    """The principal of a bearer token. An executor token that authenticated within
    :data:`~mx.runtime.EXECUTOR_TOKEN_TTL` is not looked up again (so its revocation takes up to
    that long). While the store is away, a token that authenticated in
    the last minutes still may read ``/metrics`` (which says the store is down); any other
    request meets the outage (503), and a public one goes on without a principal."""
    rt = runtime()
    recent, digest = rt.recent_tokens, token_hash(secret)
    cached = rt.executor_tokens.recall(digest)
    if cached is not None:
        return cached
    try:
        principal = authenticate_token(store, secret)
    except StoreUnavailable:
        if is_public:
            return None
        remembered = recent.recall(digest) if request.path == "/metrics" else None
        if remembered is None:
            raise
        return remembered
    if principal is not None:
        recent.remember(digest, principal)
        if principal.role is Role.EXECUTOR:
            rt.executor_tokens.remember(digest, principal)
    return principal


def _check_csrf() -> None:
    expected = session.get("csrf")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.mimetype in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        sent = request.form.get(CSRF_FIELD)
    if not expected or not sent or not hmac.compare_digest(str(sent), str(expected)):
        raise CsrfRefused()


def _audit(response: Response) -> Response:
    """Write one audit entry for each mutating request to an endpoint (after it ran)."""
    if request.method in SAFE_METHODS or request.endpoint is None:
        return response
    if request.endpoint == "static":
        return response
    if g.get("audit_quiet") and response.status_code < 400:
        return response  # machine traffic kept in the units' histories (quiet_audit)
    principal = current_principal()
    who = principal.actor if principal is not None else "anonymous"
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    target = g.get("audit_target") or ", ".join(
        f"{k}={v}" for k, v in sorted((request.view_args or {}).items())
    )
    details: dict[str, Any] = {"status": response.status_code, "remote": request.remote_addr}
    details.update(g.get("audit_details") or {})
    rt = runtime()
    try:
        rt.store.append_audit(
            who=who[:AUDIT_TEXT],
            what=f"{request.method} {rule}"[:AUDIT_TEXT],
            target=str(target).replace("\x00", "\\x00")[:1000],  # a refused NUL stays visible
            at=rt.clock.now(),
            details=details,
        )
    except TactusError as exc:
        # The action itself is done (or refused) already; losing its audit line must not turn
        # the answer into an error, but it is logged loudly, unless the request was refused
        # because the store is away (the outage is logged once, not once per request).
        level = logging.DEBUG if response.status_code == 503 else logging.ERROR
        log.log(level, "audit: cannot record %s %s by %s: %s", request.method, rule, who, exc)
    return response


# -- login and logout ------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a local path: never redirect to another site after a login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> ResponseReturnValue:
    """The login page (GET), and a login with user and password or a token (POST, a form or
    JSON). JSON answers ``{"user", "role", "csrf_token"}``."""
    next_page = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template(LOGIN_TEMPLATE, next=next_page, error="")
    as_json = request.is_json
    data = request.get_json(silent=True) if as_json else request.form
    if not hasattr(data, "get"):
        data = {}
    if not as_json:
        # The login form carries the pre-login session's token (no login CSRF); a JSON login
        # cannot be sent cross-site without CORS, which mx never allows.
        _check_csrf()
    rt = runtime()
    g.audit_target = "login"
    g.audit_details = {"username": str(data.get("username") or "(token)")[:64]}
    keys = [f"ip:{request.remote_addr}"]
    if not data.get("token") and data.get("username"):
        keys.append(f"user:{str(data.get('username'))[:200]}")
    now = rt.clock.now()
    wait = rt.throttle.retry_after(keys, now)
    if wait:
        log.warning("login: refused %s for %d s after repeated failures", ", ".join(keys), wait)
        return _login_refused(
            TooManyAttempts(f"too many failed logins: try again in {wait} s"),
            as_json,
            next_page,
            {"Retry-After": str(wait)},
        )
    principal = None
    if data.get("token"):
        principal = authenticate_token(rt.store, data.get("token"))
    elif data.get("username"):
        principal = authenticate_password(rt.store, data.get("username"), data.get("password"))
    if principal is None:
        rt.throttle.failed(keys, now)
        return _login_refused(
            Unauthenticated("wrong user name, password or token"), as_json, next_page, {}
        )
    rt.throttle.succeeded(keys[1:])
    session.clear()
    session.permanent = True
    session["credential"] = [principal.kind.value, principal.name, principal.credential_id]
    g.principal, g.via = principal, "session"
    log.info("%s: logged in from %s", principal.actor, request.remote_addr)
    if as_json:
        return jsonify(user=principal.name, role=principal.role.value, csrf_token=csrf_token())
    return redirect(next_page)


def _login_refused(
    exc: TactusError, as_json: bool, next_page: str, headers: dict[str, str]
) -> ResponseReturnValue:
    if as_json:
        body = jsonify(error={"code": exc.code, "message": exc.message})
        return body, exc.http_status, headers
    page = render_template(LOGIN_TEMPLATE, next=next_page, error=exc.message.capitalize() + ".")
    return page, exc.http_status, headers


@bp.route("/logout", methods=["POST"])
@requires(Role.VIEWER)
def logout() -> ResponseReturnValue:
    """End the session (a POST with the CSRF token, so no other site can log a user out)."""
    session.clear()
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        return redirect(url_for("auth.login"))
    return jsonify(logged_out=True)


def init_app(app: Flask) -> None:
    """Install authentication, CSRF, the audit trail and the login routes on ``app``."""
    app.register_blueprint(bp)
    app.before_request(_authenticate)
    app.after_request(_audit)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["current_principal"] = current_principal
