"""Running one claimed unit of work on an executor, as a local worker's slot runs it.

A claim (:class:`Claim`) carries what mx would otherwise read from the store: the command or
the worker class that runs the unit of work (its step's for a step, the task's own shell
command for an ad-hoc task), its timeout, arguments and window. It runs here:

- a ``command`` through the shell driver (:func:`workers.shell.run_command`): its own session
  and process group, killed whole (SIGTERM, then SIGKILL) when the timeout passes or the run is
  canceled, with the same exit-code rules, output tail and ``$TACTUS_*`` environment;
- a ``worker`` class through :class:`~workers.base.UowWorker`: one instance per class and
  :class:`Runner`, built, set up and called in the runner's one thread, its prints and logs
  captured as the output tail (:mod:`workers.capture`). A Python call cannot be killed: one that
  outlives its timeout is reported invalid and abandoned, and the runner says so
  (:attr:`Runner.abandoned`), so that the executor stops for a clean restart.
"""

from __future__ import annotations

import binascii
import json
import logging
import threading
import time
import traceback
from base64 import b64decode
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from db.errors import InvalidInput
from db.flows import check_result
from db.models import ProcessEntry, UnitOfWork
from db.payloads import message_text
from db.states import ProcessKind, UowKind, UowState
from workers.base import Outcome, load_worker_class
from workers.capture import capturing
from workers.shell import POLL_INTERVAL, OutputTail, run_command

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from workers.base import UowWorker, WorkerSettings

log = logging.getLogger(f"tactus.{__name__}")

#: Most messages one heartbeat or outcome carries (mx's limit per request).
MESSAGES_PER_REQUEST = 1000


@dataclass(frozen=True, kw_only=True, slots=True)
class Claim:
    """A unit of work mx handed this executor, under ``lease``."""

    uow_id: str
    lease: str
    process: str
    kind: UowKind
    attempt: int
    retries: int
    timeout: timedelta
    arguments: Mapping[str, Any]
    start_timeperiod: str
    end_timeperiod: str
    timeperiod: str | None = None
    command: tuple[str, ...] | str | None = None
    shell: bool = False
    worker: str | None = None
    noop_exit_code: int | None = None
    step: str | None = None
    parent: str | None = None
    #: Seconds between heartbeats that mx asks for.
    heartbeat_interval: float = 5.0
    #: Its payload (SPEC section 12): the id, and the bytes mx sent with the claim.
    payload_id: str | None = None
    payload: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Claim:
        """The claim of mx's answer.

        Raises:
            ValueError: the answer is not a claim (a field is missing or of the wrong type).
        """
        try:
            command = data.get("command")
            return cls(
                uow_id=str(data["uow_id"]),
                lease=str(data["lease"]),
                process=str(data["process"]),
                kind=UowKind(data.get("kind", UowKind.FREERUN.value)),
                attempt=int(data["attempt"]),
                retries=int(data.get("retries", 0)),
                timeout=timedelta(seconds=float(data["timeout"])),
                arguments=dict(data.get("arguments") or {}),
                start_timeperiod=str(data.get("start_timeperiod", "")),
                end_timeperiod=str(data.get("end_timeperiod", "")),
                timeperiod=data.get("timeperiod"),
                command=tuple(command) if isinstance(command, list) else command,
                shell=bool(data.get("shell", False)),
                worker=data.get("worker"),
                noop_exit_code=data.get("noop_exit_code"),
                step=data.get("step"),
                parent=data.get("parent"),
                heartbeat_interval=float(data.get("heartbeat_interval") or 5.0),
                payload_id=data.get("payload_id"),
                payload=None if data.get("payload") is None else b64decode(data["payload"]),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ValueError(f"not a claim: {exc!r}") from None

    def entry(self) -> ProcessEntry:
        """The entry that runs it (what the shell driver and a worker class take)."""
        return ProcessEntry(
            name=self.process,
            kind=ProcessKind.MANAGED if self.kind is UowKind.MANAGED else ProcessKind.FREERUN,
            worker=self.worker,
            command=self.command,
            shell=self.shell,
            retries=self.retries,
            timeout=self.timeout,
            arguments=dict(self.arguments),
            noop_exit_code=self.noop_exit_code,
        )

    def uow(self, now: datetime) -> UnitOfWork:
        """The unit of work as its worker sees it: claimed, ``in_progress``."""
        return UnitOfWork(
            id=self.uow_id,
            process=self.process,
            kind=self.kind,
            start_timeperiod=self.start_timeperiod,
            end_timeperiod=self.end_timeperiod,
            run_key="",
            state=UowState.IN_PROGRESS,
            timeperiod=self.timeperiod,
            attempt=self.attempt,
            retries=self.retries,
            arguments=dict(self.arguments),
            created_at=now,
            updated_at=now,
            started_at=now,
            parent=self.parent,
            step=self.step,
            payload_id=self.payload_id,
            payload=self.payload,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    """How a run ended, as the outcome route takes it."""

    #: ``processed``, ``noop`` or ``invalid``.
    state: str
    exit_code: int | None = None
    output: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    seconds: float = 0.0
    #: The run was stopped by a cancel (lease lost, or a hard stop): nothing is reported.
    interrupted: bool = False

    def body(self, lease: str) -> dict[str, Any]:
        """The outcome route's body."""
        return {
            "lease": lease,
            "state": self.state,
            "exit_code": self.exit_code,
            "output_tail": self.output,
            "error": self.error,
            "result": self.result,
            "seconds": round(self.seconds, 3),
        }


def _failed(error: str, **fields: Any) -> Report:
    return Report(state=UowState.INVALID.value, error=error, **fields)


class Runner:
    """Runs one slot's claims, one at a time; owns the slot's worker-class instances and the
    one thread all their calls run in."""

    def __init__(self, settings: WorkerSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        #: True once a Python call was left running (timed out or canceled): the slot must
        #: take nothing more.
        self.abandoned = False
        self._instances: dict[str, UowWorker] = {}
        self._pool: ThreadPoolExecutor | None = None

    def run(self, claim: Claim, cancel: threading.Event, now: datetime, emitted: Emitted) -> Report:
        """Run ``claim`` to its end, its timeout, or ``cancel``; never raises for anything the
        unit of work does. What it emits (``$TACTUS_MESSAGES``, ``self.message``) goes to
        ``emitted``."""
        entry, uow = claim.entry(), claim.uow(now)
        if claim.payload_id is not None and claim.payload is None:
            return _failed(f"payload {claim.payload_id} is not in the store")
        if claim.worker is not None:
            return self._run_python(entry, uow, claim.worker, cancel, emitted)
        if claim.command is None:
            return _failed(f"process {claim.process}: the claim names no command or worker")
        done = run_command(entry, uow, cancel=cancel, messages=emitted.extend)
        if done.interrupted:
            return _failed(done.error or "interrupted", interrupted=True)
        if done.outcome is None:
            state = UowState.INVALID.value
        else:
            state = UowState.PROCESSED.value if done.outcome is Outcome.PROCESSED else "noop"
        return Report(
            state=state,
            exit_code=done.exit_code,
            output=done.output,
            error=done.error,
            result=done.result,
            seconds=done.seconds,
        )

    def _instance(self, path: str, entry: ProcessEntry) -> UowWorker:
        """The instance of a worker class, built with its ``setup()`` in the runner's thread
        the first time a claim needs it."""
        found = self._instances.get(path)
        if found is not None:
            return found
        worker_class = load_worker_class(path)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"uow-{self.name}")
        instance = self._pool.submit(worker_class, entry, self.settings).result()
        self._pool.submit(instance.setup).result()
        self._instances[path] = instance
        return instance

    def _run_python(
        self,
        entry: ProcessEntry,
        uow: UnitOfWork,
        path: str,
        cancel: threading.Event,
        emitted: Emitted,
    ) -> Report:
        try:
            instance = self._instance(path, replace(entry, command=None))
        except Exception as exc:  # a class that cannot load or set up fails this attempt
            return _failed(f"cannot load worker {path}: {exc}"[:500])
        assert self._pool is not None
        started = time.monotonic()
        timeout = entry.timeout.total_seconds()
        tail = OutputTail()
        future = self._pool.submit(_call_captured, instance, uow, tail, emitted)
        while True:
            try:
                value = future.result(timeout=POLL_INTERVAL)
                break
            except FutureTimeout:
                if cancel.is_set():
                    self.abandoned = True
                    return _failed("interrupted", interrupted=True)
                if time.monotonic() - started >= timeout:
                    self.abandoned = True
                    return _failed(
                        f"timed out after {timeout:g} s; a Python call cannot be killed, so the "
                        "executor stops for a clean restart",
                        output=tail.text(),
                        seconds=time.monotonic() - started,
                    )
            except BaseException as exc:  # SystemExit in a worker is a failed attempt too
                return _failed(
                    "".join(traceback.format_exception(exc)),
                    output=tail.text(),
                    seconds=time.monotonic() - started,
                )
        return _verdict(value, uow, tail.text(), time.monotonic() - started)

    def close(self) -> None:
        """Tear the instances down (in their thread) and end the thread; an abandoned call is
        left behind."""
        if self._pool is None:
            return
        if self.abandoned:
            self._pool.shutdown(wait=False, cancel_futures=True)
            return
        for path, instance in self._instances.items():
            try:
                self._pool.submit(instance.teardown).result()
            except Exception:
                log.exception("executor slot %s: teardown() of %s failed", self.name, path)
        self._pool.shutdown(wait=True)


def _call_captured(instance: UowWorker, uow: UnitOfWork, tail: OutputTail, sink: Emitted) -> Any:
    with capturing(tail), instance.emitting(sink):  # type: ignore[arg-type]
        return instance.process_uow(uow)


class Emitted:
    """The messages a run emitted (SPEC section 12) that mx has not been sent yet, in order:
    the heartbeat takes them (:meth:`take`), and the outcome takes the rest."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def add(self, text: str) -> None:
        """One message (a worker class's ``self.message``)."""
        line = message_text(str(text))
        if line.strip():
            with self._lock:
                self._lines.append(line)

    def extend(self, lines: list[str]) -> None:
        """Lines a command appended to ``$TACTUS_MESSAGES``."""
        with self._lock:
            self._lines.extend(lines)

    def take(self, limit: int = MESSAGES_PER_REQUEST) -> list[str]:
        """Up to ``limit`` of the oldest, now on their way."""
        with self._lock:
            taken, self._lines = self._lines[:limit], self._lines[limit:]
        return taken

    def give_back(self, lines: list[str]) -> None:
        """Messages whose request failed: first again."""
        with self._lock:
            self._lines[:0] = lines


def _verdict(value: Any, uow: UnitOfWork, output: str, seconds: float) -> Report:
    """What a worker class's return value comes to (as on a local worker)."""
    if isinstance(value, dict) and uow.step is not None:
        try:
            handed = check_result(json.dumps(value))
        except (InvalidInput, TypeError, ValueError) as exc:
            return _failed(f"step {uow.step}: {exc}", output=output, seconds=seconds)
        return Report(state="processed", output=output, result=handed, seconds=seconds)
    if value is None or value == Outcome.PROCESSED:
        return Report(state="processed", output=output, seconds=seconds)
    if value == Outcome.NOOP:
        return Report(state="noop", output=output, seconds=seconds)
    return _failed(
        f"process_uow returned {value!r}; expected None, Outcome.PROCESSED or Outcome.NOOP",
        output=output,
        seconds=seconds,
    )
