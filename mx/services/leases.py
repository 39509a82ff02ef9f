"""Leases of executors (SPEC section 11): heartbeats and outcomes of the units of work they
claimed.

A lease is the identity of one claim as the store keeps it: the claimer's worker id, the
attempt and ``started_at`` (to the millisecond, the precision every store keeps). It holds as
long as the unit of work is ``in_progress`` with those three values. Nothing else is stored for
it, so it survives a restart of mx, and it stops holding by itself when the claim ends:

- the executor went silent: the scheduler's liveness rules (:mod:`db.liveness`) make the unit
  of work ``invalid`` once its ``heartbeat_at`` is ``heartbeat_interval * heartbeat_misses``
  old, and retry it (a new attempt, another claim);
- it ran past its ``timeout`` (plus :data:`TIMEOUT_GRACE`) while still beating: the heartbeat
  that notices fails it here, mx's side of the timeout, whatever the executor does;
- it was canceled by hand.

An outcome under a lease that holds is recorded through the funnel
(:func:`db.state_change.change_uows`, with the flow's changes for a step). An outcome repeated
under the same lease (its answer was lost on the way) finds the unit of work ended by that very
lease, told by the ``lease`` in the history event the first one wrote: 200, nothing changes.
Any other outcome or heartbeat under a lease that no longer holds is refused with
:class:`~db.errors.LeaseLost` (409), and changes nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from db import flows
from db.errors import (
    BrokerUnavailable,
    InvalidInput,
    LeaseLost,
    NotFound,
    StateConflict,
    TactusError,
)
from db.models import UnitOfWork
from db.payloads import message_text
from db.state_change import UowChange, change_uows
from db.states import UowState
from mq.message import status_message, status_queue
from mx.services import validate

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from db.store import Store
    from mx.services.context import ServiceContext

    #: The unit of work of an id as mx's claim wrote it, if remembered (then forgotten).
    Recall = Callable[[str], UnitOfWork | None]

log = logging.getLogger(f"tactus.{__name__}")

#: How long past its ``timeout`` a unit of work may still beat before mx fails it: the
#: executor's own kill (SIGTERM, then SIGKILL two seconds later) and one heartbeat fit in it.
TIMEOUT_GRACE = timedelta(seconds=10)
#: The outcome states an executor may report, and the trigger of each.
OUTCOME_TRIGGERS = {
    UowState.PROCESSED: "succeed",
    UowState.NOOP: "finish_noop",
    UowState.INVALID: "fail",
}
#: Longest output tail kept (the shell driver's 64 KiB, with room for its note).
MAX_OUTPUT = 64 * 1024 + 200
#: Longest error kept (a traceback).
MAX_ERROR = 64 * 1024
#: The fields of an outcome's body.
OUTCOME_FIELDS = (
    "lease",
    "state",
    "exit_code",
    "output_tail",
    "error",
    "result",
    "messages",
    "seconds",
    "next",
)
#: Longest run an outcome may report, in seconds (a year).
MAX_SECONDS = 366 * 86400
#: Times an outcome is written again when its unit of work changed between the read and the
#: write (a heartbeat of the same lease bumps its version).
OUTCOME_TRIES = 5
#: Most messages one outcome may carry.
MAX_MESSAGES = 1000
#: Most characters of a lease.
MAX_LEASE = 300
#: Most outcomes one ``POST outcomes`` may carry (as many as an executor may have slots).
MAX_BATCH = 1000
#: The fields of a batch of outcomes (``POST outcomes``).
BATCH_FIELDS = ("outcomes", "next")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Lease:
    """One claim's identity: ``<attempt>.<started_at in ms>.<worker id>``."""

    attempt: int
    started_ms: int
    worker_id: str

    @classmethod
    def parse(cls, text: Any) -> Lease:
        """Raises: InvalidInput (field ``lease``): not a lease this server handed out."""
        if isinstance(text, str) and len(text) <= MAX_LEASE:
            attempt, _, rest = text.partition(".")
            started, _, worker_id = rest.partition(".")
            if attempt.isdigit() and started.isdigit() and worker_id:
                return cls(int(attempt), int(started), worker_id)
        raise InvalidInput("lease", "is not a lease this server handed out")

    def __str__(self) -> str:
        return f"{self.attempt}.{self.started_ms}.{self.worker_id}"

    def names(self, uow: UnitOfWork) -> bool:
        """Whether ``uow``'s last claim is this one (in whatever state it is now)."""
        return (
            uow.attempt == self.attempt
            and uow.worker_id == self.worker_id
            and uow.started_at is not None
            and _ms(uow.started_at) == self.started_ms
        )

    def holds(self, uow: UnitOfWork) -> bool:
        """Whether the lease still holds: its claim is the running one."""
        return uow.state is UowState.IN_PROGRESS and self.names(uow)


def lease_of(uow: UnitOfWork) -> str:
    """The lease of a unit of work just claimed."""
    assert uow.worker_id is not None and uow.started_at is not None
    return str(Lease(uow.attempt, _ms(uow.started_at), uow.worker_id))


def _ms(value: datetime) -> int:
    """Milliseconds since the epoch (what every store keeps of an instant)."""
    return (value - _EPOCH) // timedelta(milliseconds=1)


# -- heartbeat -------------------------------------------------------------------------------------


def heartbeat(
    ctx: ServiceContext,
    uow_id: str,
    body: Mapping[str, Any],
    *,
    timeout_of: Callable[[UnitOfWork], timedelta | None],
    max_messages: int = 1000,
) -> dict[str, Any]:
    """Stamp ``heartbeat_at`` of a unit of work under a lease (the caller beats its
    executor's record).

    Args:
        ctx: the service context.
        uow_id: the unit of work.
        body: ``{"lease", "messages"?}``: the messages the run emitted since the last
            heartbeat (SPEC section 12), stored with the attempt, stamped now.
        timeout_of: the ``timeout`` of a unit of work (its entry's or step's; None: unknown).
        max_messages: messages kept per unit of work (``max_messages_per_uow``).

    Returns:
        ``{"uow_id", "state"}``.

    Raises:
        InvalidInput: a bad body.
        NotFound: no such unit of work.
        LeaseLost: the lease no longer holds (409); also when this heartbeat finds the unit
            of work past its timeout and fails it.
    """
    validate.only_fields(body, ("lease", "messages"))
    lease = Lease.parse(body.get("lease"))
    emitted = messages_of(body)
    store = ctx.store
    for _ in range(3):
        uow = store.get_uow(validate.identifier(uow_id, "uow_id"))
        if not lease.holds(uow):
            raise LeaseLost(uow.id, _why(uow))
        now = ctx.clock.now()
        timeout = timeout_of(uow)
        if timeout is not None and uow.started_at is not None:
            if now - uow.started_at > timeout + TIMEOUT_GRACE:
                _time_out(ctx, uow, lease, timeout)
                raise LeaseLost(uow.id, f"ran past its timeout of {timeout.total_seconds():g} s")
        try:
            store.update_uow(
                uow.id,
                expected_state=UowState.IN_PROGRESS,
                changes={"heartbeat_at": now},
                expected_version=uow.version,
            )
        except StateConflict:
            continue  # changed meanwhile: look again
        store_messages(ctx, uow, emitted, limit=max_messages)
        return {"uow_id": uow.id, "state": UowState.IN_PROGRESS.value}
    raise LeaseLost(uow_id, "the unit of work keeps changing")


def _time_out(ctx: ServiceContext, uow: UnitOfWork, lease: Lease, timeout: timedelta) -> None:
    reason = f"timed out after {timeout.total_seconds():g} s (enforced by mx: still beating)"
    request = UowChange(
        uow=uow,
        trigger="fail",
        reason=reason,
        changes={"finished_at": ctx.clock.now(), "error": reason},
        details={"attempt": uow.attempt, "executor": lease.worker_id},
        check_version=True,
    )
    (result,) = change_uows(
        ctx.store, [request], clock=ctx.clock, actor=ctx.actor, announce=ctx.announce_all
    )
    if isinstance(result, UnitOfWork):
        tell(ctx, result)


# -- outcome ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """An executor's report of one run."""

    lease: Lease
    state: UowState
    exit_code: int | None
    output: str | None
    error: str | None
    result: dict[str, Any] | None
    seconds: float | None
    #: What the run emitted (SPEC section 12), in order.
    messages: tuple[str, ...] = ()


def outcome_from(body: Mapping[str, Any]) -> Outcome:
    """The outcome a body reports.

    Raises:
        InvalidInput: an unknown field or a bad value (the field is named).
    """
    validate.only_fields(body, OUTCOME_FIELDS)
    lease = Lease.parse(body.get("lease"))
    try:
        state = UowState(body.get("state"))
    except ValueError:
        state = None
    if state not in OUTCOME_TRIGGERS:
        raise InvalidInput("state", "must be processed, noop or invalid")
    exit_code = validate.whole(body.get("exit_code"))
    if exit_code is not None and (
        not isinstance(exit_code, int) or isinstance(exit_code, bool) or abs(exit_code) > 2**31
    ):
        raise InvalidInput("exit_code", "must be an integer or null")
    seconds = body.get("seconds")
    if seconds is not None and (
        not isinstance(seconds, int | float)
        or isinstance(seconds, bool)
        or not 0 <= seconds <= MAX_SECONDS
    ):
        raise InvalidInput("seconds", "must be a number of seconds or null")
    result = body.get("result")
    if result is not None:
        if not isinstance(result, dict):
            raise InvalidInput("result", "must be a JSON object or null")
        try:
            result = flows.check_result(json.dumps(result))
        except InvalidInput as exc:
            raise InvalidInput("result", exc.problem) from None
        if state is not UowState.PROCESSED:
            result = None  # a step hands on a result only when it succeeds
    messages = messages_of(body)
    return Outcome(
        lease=lease,
        state=state,
        exit_code=exit_code,
        output=_text(body, "output_tail", MAX_OUTPUT),
        error=_text(body, "error", MAX_ERROR),
        result=result,
        seconds=None if seconds is None else float(seconds),
        messages=messages,
    )


def messages_of(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``messages`` of a heartbeat or an outcome: strings, each cut as a worker's are.

    Raises:
        InvalidInput: not a list of at most :data:`MAX_MESSAGES` strings.
    """
    messages = body.get("messages")
    if messages is None:
        return ()
    if (
        not isinstance(messages, list)
        or len(messages) > MAX_MESSAGES
        or not all(isinstance(m, str) for m in messages)
    ):
        raise InvalidInput("messages", f"must be a list of at most {MAX_MESSAGES} strings")
    return tuple(message_text(validate.text("messages", m)) for m in messages if m.strip())


def store_messages(
    ctx: ServiceContext, uow: UnitOfWork, messages: Sequence[str], *, limit: int
) -> None:
    """Store a run's messages with its attempt, in order, stamped now (at most ``limit`` per
    unit of work are kept)."""
    if not messages:
        return
    now = ctx.clock.now()
    ctx.store.append_messages(uow.id, uow.attempt, [(now, m) for m in messages], limit=limit)


def _text(body: Mapping[str, Any], field: str, limit: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string or null")
    return validate.text(field, value[-limit:])


def record_outcome(
    ctx: ServiceContext,
    uow_id: str,
    outcome: Outcome,
    *,
    write: Callable[[UowChange], tuple[UnitOfWork | TactusError, bool]] | None = None,
    max_messages: int = 1000,
    recall: Recall | None = None,
) -> tuple[UnitOfWork, bool]:
    """Record an executor's outcome under its lease (see the module docstring).

    Args:
        ctx: the service context.
        uow_id: the unit of work.
        outcome: what the executor reports.
        write: writes the outcome's change; answers what became of it and whether its status
            message went with it (the executor's next claim goes in the same commit,
            :func:`mx.services.executors.claim_with`); None: through the funnel alone, then
            the status.
        max_messages: messages kept per unit of work; the outcome's are stored before it,
            as a worker's are.
        recall: the unit of work as mx's claim wrote it, if remembered (read instead of the
            store when the lease holds on it; a change since fails the compare-and-set, and
            the store is read).

    Returns:
        (the unit of work as stored, whether this call changed it: False for a repeat).

    Raises:
        NotFound: no such unit of work.
        LeaseLost: the lease no longer holds, and the unit of work was not ended by it (409).
    """
    store = ctx.store
    uow_id = validate.identifier(uow_id, "uow_id")
    uow = _recalled(recall, uow_id, outcome) or store.get_uow(uow_id)
    if outcome.lease.holds(uow):
        store_messages(ctx, uow, outcome.messages, limit=max_messages)
    for _ in range(OUTCOME_TRIES):
        if not outcome.lease.holds(uow):
            return _repeated(store, uow, outcome.lease), False
        request = _outcome_change(ctx, uow, outcome)
        told = False
        if write is None:
            (result,) = change_uows(
                store, [request], clock=ctx.clock, actor=ctx.actor, announce=ctx.announce_all
            )
        else:
            result, told = write(request)
            # A write that came back refused may still have claimed the executor's next unit
            # of work: a try again writes the outcome alone.
            write = None
        if isinstance(result, UnitOfWork):
            if not told:
                tell(ctx, result)
            return result, True
        if not isinstance(result, StateConflict):
            raise result
        # Changed between the read and the write: a heartbeat of this very lease (it bumps
        # the version), a repeat that won, or the lease lost. Look again.
        uow = store.get_uow(uow.id)
    return _repeated(store, uow, outcome.lease), False


def outcomes_from(body: Mapping[str, Any]) -> list[tuple[str, Outcome]]:
    """The (unit of work id, outcome) pairs a batch reports, all checked before any is written.

    Raises:
        InvalidInput: an unknown field; ``outcomes`` not a list of 1 to :data:`MAX_BATCH`
            objects; a bad outcome (``outcomes[i].<field>``); a unit of work named twice; or
            leases of more than one executor.
    """
    validate.only_fields(body, BATCH_FIELDS)
    items = body.get("outcomes")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise InvalidInput("outcomes", f"must be a list of 1 to {MAX_BATCH} outcomes")
    parsed: list[tuple[str, Outcome]] = []
    for i, item in enumerate(items):
        where = f"outcomes[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(where, "must be an outcome object (uow_id, lease, state ...)")
        if "next" in item:
            raise InvalidInput(f"{where}.next", "the batch's next claim is the body's next")
        fields = {k: v for k, v in item.items() if k != "uow_id"}
        try:
            uow_id = validate.identifier(item.get("uow_id"), "uow_id")
            outcome = outcome_from(fields)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}.{exc.field}", exc.problem) from None
        if any(uow_id == seen for seen, _ in parsed):
            raise InvalidInput(f"{where}.uow_id", f"{uow_id} is reported twice")
        if parsed and outcome.lease.worker_id != parsed[0][1].lease.worker_id:
            raise InvalidInput(f"{where}.lease", "names another executor than outcomes[0]")
        parsed.append((uow_id, outcome))
    return parsed


def record_outcomes(
    ctx: ServiceContext,
    items: Sequence[tuple[str, Outcome]],
    *,
    write: Callable[[list[UowChange]], tuple[list[UnitOfWork | TactusError], bool]],
    max_messages: int = 1000,
    recall: Recall | None = None,
) -> list[tuple[UnitOfWork, bool] | TactusError]:
    """Record several outcomes of one executor, as :func:`record_outcome` does each, their
    changes written together by ``write`` (one commit, with the executor's next claims).

    Args:
        ctx: the service context.
        items: (unit of work id, outcome) pairs, as :func:`outcomes_from` reads them.
        write: writes the changes; answers what became of each, in their order, and whether
            their status messages went with them.
        max_messages: messages kept per unit of work.
        recall: as for :func:`record_outcome`.

    Returns:
        For each item in its order: (the unit of work as stored, whether this call changed
        it), or the error that refused it alone (NotFound, LeaseLost ...). A change that lost
        its compare-and-set to a change between the read and the write is recorded again
        alone (:func:`record_outcome`).
    """
    store = ctx.store
    results: list[tuple[UnitOfWork, bool] | TactusError | None] = [None] * len(items)
    pending: list[tuple[int, UowChange]] = []
    for i, (uow_id, outcome) in enumerate(items):
        try:
            uow = _recalled(recall, uow_id, outcome) or store.get_uow(uow_id)
            if not outcome.lease.holds(uow):
                results[i] = (_repeated(store, uow, outcome.lease), False)
                continue
        except (NotFound, LeaseLost) as exc:
            results[i] = exc
            continue
        store_messages(ctx, uow, outcome.messages, limit=max_messages)
        pending.append((i, _outcome_change(ctx, uow, outcome)))
    written, told = write([change for _, change in pending])
    for (i, _), result in zip(pending, written, strict=True):
        if isinstance(result, UnitOfWork):
            if not told:
                tell(ctx, result)
            results[i] = (result, True)
        elif isinstance(result, StateConflict):
            uow_id, outcome = items[i]
            # its messages are stored already
            alone = replace(outcome, messages=())
            try:
                results[i] = record_outcome(ctx, uow_id, alone, max_messages=max_messages)
            except (NotFound, LeaseLost) as exc:
                results[i] = exc
        else:
            results[i] = result
    return [r for r in results if r is not None]


def _recalled(recall: Recall | None, uow_id: str, outcome: Outcome) -> UnitOfWork | None:
    """The unit of work as mx's claim wrote it, when remembered and the outcome's lease holds
    on it; an outcome with messages reads the store (they are stored before the outcome, and
    only while the lease holds)."""
    uow = None if recall is None else recall(uow_id)
    if uow is None or outcome.messages or not outcome.lease.holds(uow):
        return None
    return uow


def _outcome_change(ctx: ServiceContext, uow: UnitOfWork, outcome: Outcome) -> UowChange:
    """The funnel's change that records ``outcome`` on ``uow`` as last read (its version
    expected: a unit of work re-claimed since is never written)."""
    trigger = OUTCOME_TRIGGERS[outcome.state]
    reason = ""
    if trigger == "fail":
        reason = (outcome.error or f"exit code {outcome.exit_code}").splitlines()[0][:500]
    return UowChange(
        uow=uow,
        trigger=trigger,
        reason=reason,
        changes={
            "finished_at": ctx.clock.now(),
            "exit_code": outcome.exit_code,
            "output": outcome.output,
            "error": outcome.error if trigger == "fail" else None,
            **({} if outcome.result is None else {"result": outcome.result}),
        },
        details={
            "attempt": uow.attempt,
            "exit_code": outcome.exit_code,
            "lease": str(outcome.lease),
            **({} if outcome.seconds is None else {"seconds": round(outcome.seconds, 3)}),
        },
        check_version=True,
    )


def _repeated(store: Store, uow: UnitOfWork, lease: Lease) -> UnitOfWork:
    """``uow`` when its claim under ``lease`` was ended by an outcome under that lease.

    Raises:
        LeaseLost: it was not.
    """
    if lease.names(uow) and uow.state in OUTCOME_TRIGGERS:
        # the change that ended the claim: the executor's own outcome carries its lease (the
        # liveness rules, a timeout or a cancel do not)
        for event in reversed(store.history("uow", uow.id, limit=50)):
            if event.from_state == UowState.IN_PROGRESS.value:
                if event.details.get("lease") == str(lease):
                    return uow
                break
    raise LeaseLost(uow.id, _why(uow))


def _why(uow: UnitOfWork) -> str:
    if uow.state is UowState.IN_PROGRESS:
        return f"it is attempt {uow.attempt}, claimed by {uow.worker_id}"
    return f"it is {uow.state.value} (attempt {uow.attempt})"


def status_notice(ctx: ServiceContext, uow: UnitOfWork) -> tuple[str, bytes]:
    """The (queue, body) of the status message of ``uow``."""
    return status_queue(ctx.queue_prefix), status_message(uow.id, uow.process).encode()


def tell(ctx: ServiceContext, uow: UnitOfWork) -> None:
    """Tell the scheduler a unit of work changed state (after the change is stored), as a
    worker does with its status message; a broker away sends it later (or the scheduler's
    next pass sees the change anyway)."""
    queue, body = status_notice(ctx, uow)
    try:
        ctx.publish(queue, body, None)
    except BrokerUnavailable as exc:
        if ctx.later is not None:
            ctx.later(queue, body, None)
        log.info("uow %s: status not sent now (%s)", uow.id, exc)
