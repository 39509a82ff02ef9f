"""What the page's views share: the acting context, htmx fragments, and running an action."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request

from db.errors import TactusError
from mx.auth import current_principal
from mx.runtime import runtime

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

    from mx.services.context import ServiceContext

T = TypeVar("T")

#: How often live parts of a page poll (htmx ``every``).
REFRESH = "5s"


def ctx() -> ServiceContext:
    """The service context of this request, acting as the logged-in principal."""
    principal = current_principal()
    return runtime().context(principal.actor if principal is not None else "anonymous")


def is_fragment_request() -> bool:
    """An htmx request (polling a live part): answer with the fragment only."""
    return request.headers.get("HX-Request") == "true"


def render(template: str, *, fragment: str | None = None, **context: Any) -> str:
    """``template``, or only ``fragment`` (a template it includes) for an htmx request."""
    chosen = fragment if fragment is not None and is_fragment_request() else template
    return render_template(chosen, refresh=REFRESH, **context)


def back(default: str) -> str:
    """Where to return after an action: the form's ``next`` if it is a local path."""
    target = request.form.get("next") or ""
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//") or parts.scheme or parts.netloc:
        return default
    return target


def act(action: Callable[[], T], *, done: Callable[[T], str], to: str) -> ResponseReturnValue:
    """Run ``action``; flash ``done(result)`` or the reason it was refused; redirect to ``to``.

    A refusal the user can act on (bad input, not found, a transition the machine refuses, a
    conflict) is shown on the page it came from; anything else (the store is down) propagates
    to the error page.
    """
    try:
        result = action()
    except TactusError as exc:
        if not 400 <= exc.http_status < 500 or exc.http_status in (401, 403):
            raise
        flash(f"Refused: {exc.message}", "error")
    else:
        flash(done(result), "ok")
    return redirect(back(to), code=303)
