"""Outcomes a worker could not store yet: kept on local disk until the store takes them.

A command that finished must never run again because the store was away when its outcome was
to be written (SPEC section 15). A slot that meets the outage keeps the outcome in memory and
waits for the store (:class:`db.outage.PatientStore`), but a worker killed meanwhile would take
that memory with it, and the unit of work, still ``in_progress``, would be retried. So before
it waits, the slot writes the outcome here: one JSON line in a file of its own worker process
(``<var_dir>/journal/<process>/<worker pid>-<token>.jsonl``), flushed to disk. Once the store
has the outcome the line is dropped; a file left by a worker that died is replayed by the next
worker of the same process on the box as it starts (:func:`replay`), before it takes any work.

A worker holds an exclusive ``flock`` on a lock file beside its journal for as long as it runs
(the kernel releases it when the process ends, however it ends), so a journal is replayed only
once its writer is gone, and by one starting worker at a time. Replaying is safe to repeat: an
outcome is stored through the funnel only while the unit of work is still ``in_progress`` at
the same attempt (a compare-and-set), so a unit that was stored meanwhile, or was declared lost
and retried, is left as it is.

Nothing is written here while the store answers: the journal costs nothing on the hot path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db.errors import NotFound, StateConflict, TransitionRefused
from db.state_change import change_uow
from db.states import UowState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from db.clock import Clock
    from db.models import UnitOfWork
    from db.store import Store

log = logging.getLogger(f"tactus.{__name__}")

#: Version written into every line and checked on replay.
JOURNAL_VERSION = 1
#: Changes of an outcome that are instants (stored as ISO strings in the file).
_INSTANTS = frozenset({"finished_at"})


@dataclass(frozen=True, kw_only=True, slots=True)
class KeptOutcome:
    """One outcome waiting for the store: the funnel's trigger and what it writes."""

    uow_id: str
    attempt: int
    trigger: str
    reason: str
    changes: dict[str, Any]
    details: dict[str, Any]
    worker_id: str

    def to_json(self) -> str:
        changes = {
            k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.changes.items()
        }
        return json.dumps(
            {
                "v": JOURNAL_VERSION,
                "uow_id": self.uow_id,
                "attempt": self.attempt,
                "trigger": self.trigger,
                "reason": self.reason,
                "changes": changes,
                "details": self.details,
                "worker_id": self.worker_id,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> KeptOutcome:
        """Raises ValueError (or KeyError, TypeError) for a line that is not one of ours."""
        data = json.loads(line)
        if data.get("v") != JOURNAL_VERSION:
            raise ValueError(f"journal version {data.get('v')!r}")
        changes = dict(data["changes"])
        for key in _INSTANTS & changes.keys():
            if changes[key] is not None:
                changes[key] = datetime.fromisoformat(changes[key])
        return cls(
            uow_id=str(data["uow_id"]),
            attempt=int(data["attempt"]),
            trigger=str(data["trigger"]),
            reason=str(data.get("reason", "")),
            changes=changes,
            details=dict(data.get("details") or {}),
            worker_id=str(data["worker_id"]),
        )


def journal_dir(var_dir: str, process: str) -> Path:
    """Where the journals of ``process``'s workers on this box live."""
    return Path(var_dir) / "journal" / process


class Journal:
    """The journal file of one worker process (created on first use, removed when empty)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        stem = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.path = self.directory / f"{stem}.jsonl"
        self.lock_path = self.directory / f"{stem}.lock"
        self._kept: dict[str, KeptOutcome] = {}
        self._lock = threading.Lock()
        self._owner: int | None = None  # the lock file's descriptor, held while we run

    def keep(self, outcome: KeptOutcome) -> None:
        """Write ``outcome`` to disk (flushed and synced) before the slot waits for the store."""
        with self._lock:
            self._hold()
            self._kept[outcome.uow_id] = outcome
            self._rewrite()
        log.warning(
            "uow %s: the store is away; outcome %s kept in %s until it is back",
            outcome.uow_id,
            outcome.trigger,
            self.path,
        )

    def forget(self, uow_id: str) -> None:
        """The store has it: drop it from the file (removed once empty)."""
        with self._lock:
            if self._kept.pop(uow_id, None) is None:
                return
            self._rewrite()

    def __len__(self) -> int:
        return len(self._kept)

    def close(self) -> None:
        """The worker ends: release the lock; the files go too unless outcomes are left, which
        the next worker replays."""
        with self._lock:
            if self._owner is None:
                return
            if not self._kept:
                with contextlib.suppress(FileNotFoundError):
                    self.lock_path.unlink()
            os.close(self._owner)
            self._owner = None

    def _hold(self) -> None:
        if self._owner is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._owner = fd

    def _rewrite(self) -> None:
        if not self._kept:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        with open(partial, "w", encoding="utf-8") as file:
            for outcome in self._kept.values():
                file.write(outcome.to_json() + "\n")
            file.flush()
            os.fsync(file.fileno())
        # the rename replaces the file whole: a crash leaves the old or the new one, never half
        os.replace(partial, self.path)
        _sync_directory(self.directory)


def replay(
    store: Store,
    directory: Path,
    *,
    clock: Clock,
    actor: str,
    notify: Callable[[UnitOfWork], None],
) -> int:
    """Store the outcomes that workers of a process on this box kept and could not store
    before they ended; called by a starting worker before it takes work.

    Args:
        store: the store (a daemon's waits out an outage here).
        directory: the journals of the process's workers on this box (:func:`journal_dir`).
        clock: stamps the history events.
        actor: who replays, for the history.
        notify: called with each unit of work whose outcome was stored (sends its status).

    Returns:
        How many outcomes were stored.
    """
    stored = 0
    if not directory.is_dir():
        return 0
    for lock_path in sorted(directory.glob("*.lock")):
        with _orphaned(lock_path) as path:
            if path is None:
                continue  # its worker is alive, or another starting worker replays it
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:
                lines = []
            for line in filter(str.strip, lines):
                stored += _replay_line(store, line, path, clock=clock, actor=actor, notify=notify)
            for done in (path, lock_path):
                with contextlib.suppress(FileNotFoundError):
                    done.unlink()
    return stored


def _replay_line(
    store: Store,
    line: str,
    path: Path,
    *,
    clock: Clock,
    actor: str,
    notify: Callable[[UnitOfWork], None],
) -> int:
    try:
        kept = KeptOutcome.from_json(line)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("journal %s: dropping a line that cannot be read (%s): %.200s", path, exc, line)
        return 0
    try:
        uow = store.get_uow(kept.uow_id)
    except NotFound:
        log.warning("uow %s: in journal %s but not in the store; dropped", kept.uow_id, path)
        return 0
    if uow.state is not UowState.IN_PROGRESS or uow.attempt != kept.attempt:
        log.info(
            "uow %s: journal outcome %s not needed (now %s, attempt %d)",
            uow.id,
            kept.trigger,
            uow.state,
            uow.attempt,
        )
        return 0
    try:
        done = change_uow(
            store,
            uow,
            kept.trigger,
            clock=clock,
            actor=actor,
            reason=kept.reason,
            changes=kept.changes,
            details={**kept.details, "journal": True, "ran_by": kept.worker_id},
        )
    except (StateConflict, TransitionRefused) as exc:
        log.info("uow %s: journal outcome %s not stored: %s", uow.id, kept.trigger, exc)
        return 0
    log.warning("uow %s: outcome %s stored from journal %s", uow.id, kept.trigger, path)
    notify(done)
    return 1


@contextlib.contextmanager
def _orphaned(lock_path: Path) -> Iterator[Path | None]:
    """The journal beside ``lock_path`` while we hold its lock, or None if its writer (or
    another replaying worker) still holds it."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield lock_path.with_suffix(".jsonl")
    finally:
        os.close(fd)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
