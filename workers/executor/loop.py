"""The executor: N slots that claim, run and report units of work over HTTP, and a heartbeat.

Per slot (a thread of its own, with its own :class:`~workers.executor.run.Runner`):

1. claim (``POST claim``, a long poll of ``wait`` seconds) with the executor's identity,
   processes and the units of work it runs now; 204: claim again;
2. run the claim within its timeout (the shell driver kills the command's process group; a
   Python call past it is abandoned and the executor then stops for a clean restart);
3. report the outcome under the claim's lease, again and again with backoff while mx is
   unreachable (never by running the unit of work again); 409 ``lease_lost``: the claim was
   taken away meanwhile, and the outcome is dropped. Outcomes of slots that end while another
   slot's request is on the way go to mx together, with one claim for all their next units of
   work (:mod:`workers.executor.batch`).

The heartbeat thread renews the lease of every running unit of work every
``heartbeat_interval`` (mx names it in each claim); a heartbeat answered 409 stops that run (its
process group is killed): mx declared it lost, timed it out or it was canceled. While nothing
runs, the long-polling claims keep the executor alive in mx's registry.

While mx cannot be reached, each slot waits before its next claim, the delay fixed or doubling up
to a cap, with jitter (:mod:`workers.executor.retry`); the outage is logged once when it starts,
once a minute while it lasts, and once when it ends (:class:`~db.outage.Outage`).

Stopping (SIGTERM, or :meth:`Executor.stop`) drains: nothing new is claimed, running units of
work finish and their outcomes are delivered; a claim already in flight that brings a unit of
work runs it too (it is this executor's once mx has claimed it). A second SIGTERM or SIGINT
(:meth:`Executor.hurry`) kills what still runs and reports nothing: those units of work are
retried by mx once their leases run out.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from db.clock import SystemClock
from db.errors import LeaseLost
from db.outage import Outage
from workers.executor.api import Refused, Unreachable
from workers.executor.batch import OutcomeBatcher
from workers.executor.retry import Backoff, BackoffPolicy
from workers.executor.run import Claim, Emitted, Runner
from workers.orphans import reap_orphans

if TYPE_CHECKING:
    from types import FrameType

    from db.clock import Clock
    from workers.base import WorkerSettings
    from workers.executor.api import ExecutorApi
    from workers.executor.run import Report

log = logging.getLogger(f"tactus.{__name__}")

#: Exit codes: stopped as asked; refused by mx (token, role); left a Python call running.
EXIT_OK, EXIT_FAILURE, EXIT_RESTART = 0, 1, 3
#: Seconds of a claim's long poll (mx answers 204 after it when nothing came).
DEFAULT_WAIT = 20.0
#: Heartbeat interval until mx names one in a claim.
DEFAULT_HEARTBEAT = 5.0
#: Longest pause of the heartbeat thread between two looks at what runs.
BEAT_TICK = 0.5


@dataclass(frozen=True, kw_only=True, slots=True)
class ExecutorConfig:
    """``launch.py executor``'s options."""

    name: str
    box_id: str
    processes: tuple[str, ...] = ()
    slots: int = 1
    wait: float = DEFAULT_WAIT
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)


@dataclass(slots=True)
class _Running:
    claim: Claim
    #: Set to stop the run (lease lost, or a hurried stop).
    cancel: threading.Event = field(default_factory=threading.Event)
    #: When its lease was last renewed (its claim counts), monotonic.
    beaten: float = field(default_factory=time.monotonic)
    #: What it emitted that mx has not been sent yet.
    emitted: Emitted = field(default_factory=Emitted)


class Executor:
    """One executor process: :meth:`run` until stopped."""

    def __init__(
        self,
        api: ExecutorApi,
        config: ExecutorConfig,
        settings: WorkerSettings,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.api = api
        self.config = config
        self.settings = settings
        self.clock = clock or SystemClock()
        self.instance = f"{os.getpid()}-{secrets.token_hex(2)}"
        #: Set to drain: take nothing new.
        self.stopping = threading.Event()
        #: Set to stop at once: kill what runs, report nothing.
        self.hurried = threading.Event()
        self.exit_code = EXIT_OK
        self.outage = Outage("mx", backoff_max=config.backoff.cap)
        self._interval = DEFAULT_HEARTBEAT
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._beats_done = threading.Event()
        self._slots = [
            threading.Thread(target=self._slot, args=(i,), name=f"executor-slot-{i}", daemon=True)
            for i in range(config.slots)
        ]
        self._heartbeat = threading.Thread(
            target=self._beat_loop, name="executor-heartbeat", daemon=True
        )
        self._runners: list[Runner] = []
        #: Outcomes of slots that end together go in one request.
        self.outcomes = OutcomeBatcher(api)

    @property
    def worker_id(self) -> str:
        """The id mx knows this executor by (its record in ``/api/v1/workers``)."""
        return f"http:{self.config.name}@{self.config.box_id}:{self.instance}"

    def identity(self) -> dict[str, Any]:
        """Who claims: the claim's body less ``running`` and ``wait``."""
        return {
            "name": self.config.name,
            "box": self.config.box_id,
            "instance": self.instance,
            "slots": self.config.slots,
            "processes": list(self.config.processes),
            "pid": os.getpid(),
        }

    # -- lifecycle ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Claim and run until stopped; returns the exit code. From the main thread, SIGTERM
        and SIGINT drain, a second one hurries."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        # An executor of this box killed outright may have left a command running: end it
        # before taking work, so that a retry of its unit of work never runs beside it.
        reap_orphans()
        log.warning(
            "executor %s: %d slot(s), processes %s",
            self.worker_id,
            self.config.slots,
            ",".join(self.config.processes) or "all",
        )
        self.start()
        self.join()
        self._leave()
        log.warning("executor %s: stopped (exit code %d)", self.worker_id, self.exit_code)
        return self.exit_code

    def start(self) -> None:
        self._heartbeat.start()
        for thread in self._slots:
            thread.start()

    def join(self) -> None:
        """Wait for the slots to end (after :meth:`stop`), then for the heartbeat."""
        for thread in self._slots:
            while thread.is_alive():
                thread.join(0.5)
        self._beats_done.set()
        self._heartbeat.join(5.0)

    def stop(self) -> None:
        """Drain: claim nothing new; running units of work finish and are reported."""
        if not self.stopping.is_set():
            log.warning("executor %s: draining (%d running)", self.worker_id, len(self._running))
        self.stopping.set()

    def hurry(self) -> None:
        """Stop now: kill what runs and report nothing (mx retries it once the leases end)."""
        log.warning("executor %s: stopping now; running units are left to mx", self.worker_id)
        self.hurried.set()
        self.stopping.set()
        with self._lock:
            for running in self._running.values():
                running.cancel.set()

    @property
    def abandoned(self) -> bool:
        """Whether a slot left a Python call running (the process must ``os._exit``)."""
        return any(r.abandoned for r in self._runners)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping.is_set():
            self.hurry()
        else:
            self.stop()

    def _leave(self) -> None:
        try:
            self.api.leave(self.identity())
        except (Unreachable, Refused) as exc:
            log.info("executor %s: could not say it stopped (%s)", self.worker_id, exc)

    # -- slots -------------------------------------------------------------------------------------

    def _slot(self, index: int) -> None:
        runner = Runner(self.settings, f"{self.config.name}-{index}")
        with self._lock:
            self._runners.append(runner)
        retry = Backoff(self.config.backoff)
        following: dict[str, Any] | None = None
        try:
            # a claim that came with the last outcome (or with another slot's, left spare) is
            # run even when a stop came meanwhile: it is this executor's once mx has claimed it
            while True:
                if following is None:
                    following = self.outcomes.take_spare()
                if following is None and self.stopping.is_set():
                    break
                data = following if following is not None else self._claim(retry)
                following = None
                if data is not None:
                    following = self._run(runner, data)
                if runner.abandoned:
                    self.exit_code = EXIT_RESTART
                    self.stop()
        except Exception:
            log.exception("executor %s: slot %d failed; stopping", self.worker_id, index)
            self.exit_code = EXIT_FAILURE
            self.stop()
        finally:
            runner.close()

    def _claim(self, retry: Backoff) -> dict[str, Any] | None:
        """One claim; None when nothing came, mx is away (after a backoff) or refused."""
        body = {**self.identity(), "running": self._running_ids(), "wait": self.config.wait}
        try:
            data = self.api.claim(body)
        except Unreachable as exc:
            self.outage.failed(exc)
            retry.wait(self.stopping)
            return None
        except Refused as exc:
            log.error("executor %s: mx refused the claim, stopping: %s", self.worker_id, exc)
            self.exit_code = EXIT_FAILURE
            self.stop()
            return None
        self.outage.succeeded()
        retry.succeeded()
        return data

    def _running_ids(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def _run(self, runner: Runner, data: dict[str, Any]) -> dict[str, Any] | None:
        """Run a claim and report it; returns the next claim if it came with the outcome."""
        try:
            claim = Claim.from_json(data)
        except ValueError as exc:
            # Nothing to run it by: mx retries it once the lease runs out.
            log.error("executor %s: %s", self.worker_id, exc)
            return None
        running = _Running(claim)
        with self._lock:
            self._running[claim.uow_id] = running
            self._interval = claim.heartbeat_interval
        if self.hurried.is_set():
            running.cancel.set()
        log.info(
            "uow %s: claimed (%s%s, attempt %d)",
            claim.uow_id,
            claim.process,
            f".{claim.step}" if claim.step else "",
            claim.attempt,
        )
        try:
            report = runner.run(claim, running.cancel, self.clock.now(), running.emitted)
        finally:
            with self._lock:
                self._running.pop(claim.uow_id, None)
        if report.interrupted:
            log.warning("uow %s: run stopped (%s); not reported", claim.uow_id, report.error)
            return None
        return self._report(claim, report, runner, running.emitted)

    def _report(
        self, claim: Claim, report: Report, runner: Runner, emitted: Emitted
    ) -> dict[str, Any] | None:
        """Deliver the outcome, retrying while mx is unreachable (a stop waits for it; only a
        hurried stop gives up, leaving the unit of work to mx's liveness rules). Unless the
        executor stops, the outcome asks for the slot's next claim too (``next``): it comes
        back with the answer, claimed in the outcome's commit."""
        retry = Backoff(self.config.backoff)
        messages = emitted.take()
        while True:
            body = report.body(claim.lease)
            if messages:
                body["messages"] = messages
            if not (self.stopping.is_set() or runner.abandoned):
                body["next"] = {**self.identity(), "running": self._running_ids()}
            try:
                answer = self.outcomes.outcome(claim.uow_id, body)
            except Unreachable as exc:
                self.outage.failed(exc)
                if self.hurried.is_set():
                    log.warning("uow %s: outcome %s not delivered", claim.uow_id, report.state)
                    return None
                retry.wait(self.hurried)
                continue
            except LeaseLost as exc:
                log.warning("uow %s: outcome %s dropped: %s", claim.uow_id, report.state, exc)
                return None
            except Refused as exc:
                log.error("uow %s: outcome %s refused: %s", claim.uow_id, report.state, exc)
                return None
            self.outage.succeeded()
            log.info(
                "uow %s: %s%s",
                claim.uow_id,
                answer.get("state", report.state),
                "" if answer.get("changed", True) else " (reported before)",
            )
            return answer.get("next")

    # -- heartbeat ---------------------------------------------------------------------------------

    def _beat_loop(self) -> None:
        """Renew each running unit of work's lease once its ``heartbeat_interval`` has passed
        since its claim or its last renewal (the interval comes with each claim)."""
        while not self._beats_done.wait(min(self._interval / 4, BEAT_TICK)):
            with self._lock:
                running = list(self._running.values())
            for each in running:
                if time.monotonic() - each.beaten >= self._interval:
                    each.beaten = time.monotonic()
                    self._beat(each)

    def _beat(self, running: _Running) -> None:
        claim = running.claim
        messages = running.emitted.take()
        try:
            self.api.heartbeat(claim.uow_id, claim.lease, messages)
        except LeaseLost as exc:
            log.warning("uow %s: lease lost (%s); stopping its run", claim.uow_id, exc)
            running.cancel.set()
        except (Unreachable, Refused) as exc:
            # mx away: the run goes on; mx declares it lost if this lasts past its liveness
            running.emitted.give_back(messages)
            self.outage.failed(exc)
        except Exception:  # a beat must never end the heartbeat thread
            running.emitted.give_back(messages)
            log.exception("uow %s: heartbeat failed", claim.uow_id)
        else:
            self.outage.succeeded()
