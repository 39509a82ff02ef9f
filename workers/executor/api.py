"""What an executor needs of mx, and how mx can fail it.

The executor never touches the store or the broker: every call goes through an
:class:`ExecutorApi`, which the command line makes from its HTTP client (``launch.py
executor``). Its errors tell the executor what to do next:

- :class:`Unreachable`: mx did not answer, or answered that it cannot serve now (5xx, the
  store away): try again after a backoff;
- :class:`~db.errors.LeaseLost`: the lease no longer holds (409): stop the run, drop its
  outcome;
- :class:`Refused`: mx refused the request itself (401/403: a wrong or revoked token; 400/404:
  a request it will never take): trying again cannot help.
"""

from __future__ import annotations

from typing import Any, Protocol

from db.errors import TactusError


class Unreachable(TactusError):
    """mx cannot be reached or cannot serve now; the request may be tried again."""

    code = "mx_unreachable"


class Refused(TactusError):
    """mx refused the request for good (credentials, role, or the request itself)."""

    code = "refused"


class ExecutorApi(Protocol):
    """The executor routes of mx (``/api/v1/executor/...``)."""

    def claim(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """``POST claim``: the claim, or None (204: nothing due within ``body["wait"]``).

        Raises:
            Unreachable, Refused.
        """

    def heartbeat(self, uow_id: str, lease: str, messages: list[str]) -> None:
        """``POST uows/<id>/heartbeat``, with the messages the run emitted since the last one.

        Raises:
            Unreachable, Refused, LeaseLost.
        """

    def outcome(self, uow_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST uows/<id>/outcome``: ``{"uow_id", "state", "changed"}``.

        Raises:
            Unreachable, Refused, LeaseLost.
        """

    def outcomes(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST outcomes``: several outcomes and the next claims (``{"outcomes": [...],
        "next": [...]}``; each outcome's answer, or its ``error`` when refused alone).

        Raises:
            Unreachable, Refused.
        """

    def leave(self, body: dict[str, Any]) -> None:
        """``POST leave``: the executor stopped.

        Raises:
            Unreachable, Refused.
        """
