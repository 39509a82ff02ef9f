"""A small client of the REST API (SPEC section 6) for the remote command line and scripts.

Standard library only (``urllib.request``): JSON in and out, a bearer token, a timeout, and
cursor pagination followed only when asked (:meth:`ApiClient.get_all`). An API error comes back
as the :mod:`db.errors` exception its ``code`` names, carrying the server's message as is, so a
refusal reads the same and exits with the same code whether the command line acted on the store
or through the API. The token is sent only in the ``Authorization`` header and never logged or
put in a message.
"""

from __future__ import annotations

import copy
import http.client
import ipaddress
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from db.errors import (
    BrokerUnavailable,
    Conflict,
    InvalidInput,
    LeaseLost,
    NotFound,
    PayloadTooLarge,
    StoreUnavailable,
    TactusError,
    TransitionRefused,
)

log = logging.getLogger(f"tactus.{__name__}")

#: Prefix of every API route.
API_PREFIX = "/api/v1"
#: Seconds one request may take (connecting and answering) before it is given up.
DEFAULT_TIMEOUT = 30.0
#: Page size :meth:`ApiClient.get_all` asks for (the API's largest).
PAGE_SIZE = 1000
#: Pages :meth:`ApiClient.get_all` follows at most (a server that keeps issuing cursors is wrong).
MAX_PAGES = 1000
#: The API's error ``code`` and the exception the client raises for it.
ERRORS_BY_CODE: dict[str, type[TactusError]] = {
    cls.code: cls
    for cls in (
        InvalidInput,
        NotFound,
        TransitionRefused,
        Conflict,
        LeaseLost,
        PayloadTooLarge,
        StoreUnavailable,
        BrokerUnavailable,
    )
}
#: For an error ``code`` this client does not know: the exception by HTTP status.
ERRORS_BY_STATUS: dict[int, type[TactusError]] = {
    400: InvalidInput,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,
    503: StoreUnavailable,
}


class RemoteFailure(TactusError):
    """The API could not be reached, or what answered is not the Tactus API."""

    code = "remote_failure"


class AuthRefused(TactusError):
    """The API refused the credentials (401) or their role (403); nothing changed."""

    code = "auth_refused"


class ApiClient:
    """Requests to one installation's REST API, authenticated by a bearer token."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        insecure: bool = False,
    ) -> None:
        """Check the address and the token (nothing is sent yet).

        Args:
            url: the mx address, e.g. ``https://tactus.example.com`` (``/api/v1`` may follow).
            token: the bearer token, or None to send no credentials.
            timeout: seconds per request.
            insecure: allow plain ``http://`` to a host other than loopback, where the token
                would travel in clear text.

        Raises:
            InvalidInput: field ``url``: not an http(s) address, or plain http to another host
                without ``insecure``; field ``token``: empty or with whitespace.
        """
        self.base = normalize_url(url, insecure=insecure)
        if token is not None and (not token or any(c.isspace() or ord(c) < 32 for c in token)):
            raise InvalidInput("token", "is empty or contains whitespace or control characters")
        self._token = token
        self._timeout = timeout
        # Redirects are refused: urllib would resend the token to wherever they point and
        # turn a POST into a GET.
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"ApiClient({self.base!r})"  # never the token

    def with_timeout(self, timeout: float) -> ApiClient:
        """The same client with another timeout per request (an executor's long poll)."""
        other = copy.copy(self)
        other._timeout = timeout
        return other

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``/api/v1<path>``; parameters that are None are left out."""
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """POST ``/api/v1<path>`` with a JSON body (none when None)."""
        return self.request("POST", path, body=body)

    def post_bytes(self, path: str, data: bytes, content_type: str) -> Any:
        """POST ``/api/v1<path>`` with ``data`` as the body, as it is (a payload)."""
        return self.request("POST", path, raw=data, content_type=content_type)

    def patch(self, path: str, body: Mapping[str, Any]) -> Any:
        """PATCH ``/api/v1<path>`` with a JSON body."""
        return self.request("PATCH", path, body=body)

    def put(self, path: str, body: Mapping[str, Any]) -> Any:
        """PUT ``/api/v1<path>`` with a JSON body."""
        return self.request("PUT", path, body=body)

    def get_all(self, path: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Every item of a paginated list, following ``next_cursor`` page after page.

        Raises:
            RemoteFailure: the answer is not a page, or the pages never end.
        """
        items: list[Any] = []
        cursor = None
        for _ in range(MAX_PAGES):
            page = self.get(path, {**(params or {}), "limit": PAGE_SIZE, "cursor": cursor})
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise RemoteFailure(f"{self.base}{path} answered something other than a page")
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items
        raise RemoteFailure(f"{self.base}{path}: more than {MAX_PAGES} pages")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        raw: bytes | None = None,
        content_type: str = "application/octet-stream",
    ) -> Any:
        """One request with a JSON ``body``, or the bytes ``raw`` of ``content_type``; returns
        the decoded JSON answer of a 2xx.

        Raises:
            TactusError: the :mod:`db.errors` class of the API's error ``code`` (InvalidInput,
                NotFound, TransitionRefused, Conflict ...) with the server's message.
            AuthRefused: 401 or 403.
            RemoteFailure: unreachable, timed out, a redirect, or an answer that is not JSON.
        """
        url = self.base + path
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw
            headers["Content-Type"] = content_type
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        log.info("%s %s", method, url)
        try:
            with self._opener.open(req, timeout=self._timeout) as response:
                kind = response.headers.get_content_type()
                return self._decode(url, response.status, kind, response.read())
        except urllib.error.HTTPError as exc:
            try:
                raw = exc.read() if exc.fp is not None else b""
            except OSError:
                raw = b""
            finally:
                exc.close()
            raise self._error(url, exc.code, raw, exc.headers.get("Location")) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise RemoteFailure(f"cannot reach {self.base}: {reason}") from None

    def _decode(self, url: str, status: int, kind: str, raw: bytes) -> Any:
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise RemoteFailure(
                f"{url} answered {status} with {kind}, not JSON: is the URL an mx of Tactus?"
            ) from None

    def _error(self, url: str, status: int, raw: bytes, location: str | None) -> TactusError:
        if 300 <= status < 400:
            return RemoteFailure(
                f"{url} redirects to {location or '?'} (not followed): give that address as URL"
            )
        try:
            error = json.loads(raw)["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            return RemoteFailure(f"{url} answered HTTP {status} without the API's error object")
        if status == 401 and self._token is None:
            return AuthRefused(
                f"{self.base} needs a token: pass --token or --token-file, or set TACTUS_TOKEN"
            )
        if status == 401:
            return AuthRefused(
                f"{self.base} refused the token (unknown, revoked or mistyped): {message}"
            )
        if status == 403:
            return AuthRefused(f"{self.base}: the token lacks the role: {message}")
        cls = ERRORS_BY_CODE.get(code) or ERRORS_BY_STATUS.get(status)
        if cls is None:
            return RemoteFailure(f"{self.base} answered HTTP {status}: {message}")
        return rebuild(cls, message, field=error.get("field"))


def rebuild(cls: type[TactusError], message: str, *, field: Any = None) -> TactusError:
    """An instance of ``cls`` carrying the server's ``message`` as is (and ``field`` for
    :class:`InvalidInput`).

    The constructors build the message from identifying values that the API's error object does
    not carry apart; the server built it already, so it is kept word for word.
    """
    exc = cls.__new__(cls)
    TactusError.__init__(exc, message)
    if isinstance(exc, InvalidInput):
        exc.field, exc.problem, exc.entity = str(field or "body"), message, None
    return exc


def normalize_url(url: str, *, insecure: bool = False) -> str:
    """The API's base address (``scheme://host[:port][/prefix]/api/v1``) from what a user types.

    Raises:
        InvalidInput: field ``url``: not http(s) with a host, a user or password in it, or plain
            http to a host other than loopback without ``insecure``.
    """
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host, _ = parts.hostname, parts.port  # a bad port or IPv6 literal raises here
    except ValueError:
        raise InvalidInput("url", "is not a valid http(s) address") from None
    if "@" in parts.netloc:
        # Refused rather than echoed: a password in it would land in messages and logs.
        raise InvalidInput("url", "must not carry a user or password (use --token)")
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidInput("url", f"must be http(s)://host[:port], got {url!r}")
    if parts.query or parts.fragment:
        raise InvalidInput("url", "must not carry a query or a fragment")
    if parts.scheme == "http" and not is_loopback(host):
        if not insecure:
            raise InvalidInput(
                "url",
                f"plain http to {host} would send the token in clear text: use https:// (or "
                "--insecure on a trusted network)",
            )
        log.warning("mx at %s: plain http, the token travels in clear text", host)
    path = parts.path.rstrip("/")
    if path.endswith(API_PREFIX):
        path = path[: -len(API_PREFIX)]
    return f"{parts.scheme}://{parts.netloc}{path}{API_PREFIX}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand a redirect back as the HTTPError it is instead of following it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
