"""Commands whose worker died without stopping them, and their end.

A worker stopped the ordinary way (SIGTERM, a timeout, a cancel) kills the process group of
the command it runs. A worker killed outright (SIGKILL, the OOM killer) cannot: its command
runs in a session of its own (so that its whole group can be killed), and lives on, reparented
to init, while the scheduler retries its unit of work elsewhere: the same work twice at once.

Every command therefore carries its worker's pid in its environment
(:data:`WORKER_PID_VARIABLE`, inherited by whatever it starts). When a worker starts, before it
takes any work, :func:`reap_orphans` ends the processes of this box whose worker is gone: it
sends SIGTERM to each orphan's process group, then SIGKILL to what is left after a grace
period. A pid that now names a younger process (reused) counts as gone; one that names an
older, living process is its worker, alive: never touched.
"""

from __future__ import annotations

import logging
import os
import signal

import psutil

log = logging.getLogger(f"tactus.{__name__}")

#: The command's environment names its worker's pid under this name.
WORKER_PID_VARIABLE = "TACTUS_WORKER_PID"
#: Seconds between SIGTERM and SIGKILL.
GRACE = 2.0


def reap_orphans(*, grace: float = GRACE) -> list[int]:
    """End the commands (and what they started) whose worker has died.

    Returns:
        The pids that were signalled (empty when there were none).
    """
    orphans = _find_orphans()
    if not orphans:
        return []
    pids = sorted(p.pid for p in orphans)
    log.warning(
        "ending %d process(es) left running by worker(s) that died: pids %s",
        len(pids),
        ", ".join(map(str, pids)),
    )
    for proc in orphans:
        _signal(proc, signal.SIGTERM)
    _, alive = psutil.wait_procs(orphans, timeout=grace)
    for proc in alive:
        _signal(proc, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=grace)
    return pids


def _find_orphans() -> list[psutil.Process]:
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid", "create_time"]):
        if proc.pid == me:
            continue
        try:
            worker = proc.environ().get(WORKER_PID_VARIABLE)
        except (psutil.Error, OSError):
            continue  # gone meanwhile, another user's, or a kernel thread
        if worker and worker.isdigit() and not _alive_before(int(worker), proc):
            found.append(proc)
    return found


def _alive_before(pid: int, child: psutil.Process) -> bool:
    """Whether ``pid`` is a living process that started no later than ``child``: its worker."""
    try:
        parent = psutil.Process(pid)
        return parent.status() != psutil.STATUS_ZOMBIE and (
            parent.create_time() <= child.info["create_time"]
        )
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # cannot tell: leave it alone


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    """``sig`` to the process's group when it leads one (the command's session), else to it."""
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass
    except (PermissionError, psutil.AccessDenied) as exc:
        log.warning("pid %d: cannot signal it: %s", proc.pid, exc)
