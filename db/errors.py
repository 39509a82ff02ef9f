"""The one error hierarchy of Tactus.

Every layer imports from here; this module imports nothing from the package. Each error carries a
machine-readable ``code`` and the HTTP status the API answers with, and builds its message from the
identifying values it is given, so the same refusal reads the same on the page, in the API and on
the command line.
"""

from __future__ import annotations


class TactusError(Exception):
    """Base of every error Tactus raises on purpose."""

    #: Stable, machine-readable identifier returned by the API in ``error.code``.
    code = "error"
    #: HTTP status the API answers with.
    http_status = 500
    #: Exit code of ``launch.py`` for this error (1: the action failed; 2: bad usage or input).
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(TactusError):
    """Bad input: a field of a file, a request body, a setting or an argument.

    ``field`` names what is wrong (``"trigger"``, ``"processes[3].depends_on"``, ``"mx_port"``).
    """

    code = "invalid_input"
    http_status = 400
    exit_code = 2

    def __init__(self, field: str, problem: str, *, entity: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.entity = entity
        where = f"{entity}, field {field!r}" if entity else f"field {field!r}"
        super().__init__(f"{where}: {problem}")


class InvalidInputs(InvalidInput):
    """Several pieces of bad input found at once (a registration file with many mistakes)."""

    def __init__(self, errors: list[InvalidInput]) -> None:
        if not errors:
            raise ValueError("InvalidInputs needs at least one error")
        self.errors = list(errors)
        first = errors[0]
        super().__init__(first.field, first.problem, entity=first.entity)
        self.message = "; ".join(e.message for e in errors)
        self.args = (self.message,)


class NotFound(TactusError):
    """The entity named does not exist."""

    code = "not_found"
    http_status = 404

    def __init__(self, entity: str, key: object) -> None:
        self.entity = entity
        self.key = key
        super().__init__(f"{entity} {key} not found")


class TransitionRefused(TactusError):
    """The state machine does not allow ``trigger`` from the current state; nothing changed."""

    code = "transition_refused"
    http_status = 409

    def __init__(
        self, entity: str, key: object, state: str, trigger: str, reason: str = ""
    ) -> None:
        self.entity = entity
        self.key = key
        self.state = state
        self.trigger = trigger
        self.reason = reason
        text = f"{entity} {key}: cannot {trigger} from state {state}"
        super().__init__(f"{text} ({reason})" if reason else text)


class Conflict(TactusError):
    """A compare-and-set lost its race, or a create-once key already exists; nothing changed."""

    code = "conflict"
    http_status = 409

    def __init__(self, entity: str, key: object, detail: str) -> None:
        self.entity = entity
        self.key = key
        self.detail = detail
        super().__init__(f"{entity} {key}: {detail}")


class StateConflict(Conflict):
    """The stored state was not the expected one: another actor changed it first."""

    def __init__(self, entity: str, key: object, expected: str, actual: str | None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            entity,
            key,
            f"expected state {expected} but it is {actual} (changed concurrently)",
        )


class DuplicateKey(Conflict):
    """A create-once key (job, unit of work, fire, ...) already exists."""

    def __init__(self, entity: str, key: object) -> None:
        super().__init__(entity, key, "already exists")


class LeaseLost(Conflict):
    """An executor's lease on a unit of work no longer holds (SPEC section 11): the unit of
    work was declared lost and retried, canceled, or claimed again; nothing changed."""

    code = "lease_lost"

    def __init__(self, uow_id: str, detail: str) -> None:
        super().__init__("uow", uow_id, f"the lease no longer holds: {detail}")


class PayloadTooLarge(TactusError):
    """A payload larger than the ``max_payload_bytes`` setting (SPEC section 12)."""

    code = "payload_too_large"
    http_status = 413
    exit_code = 2

    def __init__(self, limit: int, size: int | None = None) -> None:
        self.limit = limit
        self.size = size
        what = "the payload" if size is None else f"the payload of {size} bytes"
        super().__init__(f"{what} is larger than max_payload_bytes ({limit} bytes)")


class StoreUnavailable(TactusError):
    """The store cannot be reached or failed for a reason that is not the caller's input.

    ``transient`` is False when trying again cannot help (no driver installed): daemons wait out
    every other one (:mod:`db.outage`).
    """

    code = "store_unavailable"
    http_status = 503

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class BrokerUnavailable(TactusError):
    """The broker cannot be reached, or refused (``transient`` False: a bad login, an unknown
    virtual host, a queue declared with other arguments; trying again cannot help)."""

    code = "broker_unavailable"
    http_status = 503

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class MalformedMessage(TactusError):
    """A message body that cannot be decoded; ``raw`` keeps the bytes for the dead-letter queue."""

    code = "malformed_message"
    http_status = 400

    def __init__(self, raw: bytes, problem: str) -> None:
        self.raw = raw
        self.problem = problem
        super().__init__(f"malformed message ({problem}): {raw[:80]!r}")
