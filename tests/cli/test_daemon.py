"""``launch.py --start / --stop / --restart / --status``: daemons with pid files, as SPEC section 5."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from tests.polling import wait_until
from tests.supervisor.installation import ROOT, Installation, gone

pytestmark = pytest.mark.slow

TICKER = """
processes:
  - name: ticker
    kind: daemon
    command: [sleep, "2010"]
"""


@pytest.fixture
def inst(tmp_path):
    installation = Installation(tmp_path)
    yield installation
    installation.launch("--stop", "supervisor")
    installation.cleanup()


def status_row(inst: Installation, name: str | None = None) -> tuple[int, list[list[str]]]:
    result = inst.launch("--status", *([name] if name else []))
    return result.returncode, [line.split() for line in result.stdout.splitlines()[1:]]


def test_daemon_start_status_restart_stop(inst):
    # when
    started = inst.launch("--start", "supervisor")
    # then it runs detached, with its pid file and log
    assert started.returncode == 0, started.stderr
    pid = inst.pid("supervisor")
    assert f"supervisor started (pid {pid})" in started.stdout
    daemon = psutil.Process(pid)
    assert daemon.ppid() != os.getpid() and os.getsid(pid) != os.getsid(0)
    code, rows = status_row(inst, "supervisor")
    assert code == 0 and rows[0][:3] == ["supervisor", "running", str(pid)]
    code, rows = status_row(inst)
    assert code == 0
    assert {r[0]: r[1] for r in rows} == {
        "mx": "stopped",
        "scheduler": "stopped",
        "supervisor": "running",
    }
    # a second one is refused
    again = inst.launch("--start", "supervisor")
    assert again.returncode == 1
    assert again.stderr.strip() == (f"launch.py --start: supervisor is already running (pid {pid})")
    # restart: a new process
    restarted = inst.launch("--restart", "supervisor")
    assert restarted.returncode == 0, restarted.stderr
    new_pid = inst.pid("supervisor")
    assert new_pid != pid and gone(pid)
    # stop
    stopped = inst.launch("--stop", "supervisor")
    assert (stopped.returncode, stopped.stdout.strip()) == (0, "supervisor: stopped")
    assert gone(new_pid) and not inst.pid_file("supervisor").exists()
    code, rows = status_row(inst, "supervisor")
    assert code == 1 and rows[0] == ["supervisor", "stopped"]
    assert inst.launch("--stop", "supervisor").stdout.strip() == "supervisor: not running"
    log = (inst.var / "log" / "supervisor.log").read_text()
    assert "daemon started" in log and "supervisor box1: stopped" in log


def test_daemon_pid_file_of_a_reused_pid_is_stale(inst):
    # given a pid file left by a crash, whose pid now belongs to another process (this one,
    # created before the file was written: the file is made to look older than it)
    path = inst.pid_file("supervisor")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")
    before = psutil.Process().create_time() - 60
    os.utime(path, (before, before))
    # then it does not count as running, --stop signals nothing, and --start works
    code, rows = status_row(inst, "supervisor")
    assert code == 1 and rows[0] == ["supervisor", "stopped"]
    assert inst.launch("--stop", "supervisor").stdout.strip() == "supervisor: not running"
    path.write_text(f"{os.getpid()}\n")
    os.utime(path, (before, before))
    started = inst.launch("--start", "supervisor")
    assert started.returncode == 0, started.stderr
    assert inst.pid("supervisor") != os.getpid()


def test_daemon_unknown_name_is_bad_input(inst):
    result = inst.launch("--start", "nope")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("launch.py --start: field 'process': unknown process")
    assert inst.launch("--console").returncode == 2


def test_registered_daemon_runs_as_a_daemon(inst):
    # given a registered daemon process with a command
    inst.register(TICKER)
    # when
    started = inst.launch("--start", "ticker")
    # then its command replaced the starter, so the pid file names the command itself
    assert started.returncode == 0, started.stderr
    pid = inst.pid("ticker")
    assert psutil.Process(pid).cmdline() == ["sleep", "2010"]
    assert status_row(inst, "ticker")[0] == 0
    assert inst.launch("--stop", "ticker").stdout.strip() == "ticker: stopped"
    assert gone(pid)


def test_console_mode_runs_in_the_foreground_with_a_pid_file(inst):
    # given
    console = inst.popen("--start", "supervisor", "--console")
    try:
        # when it is up, the pid file names the foreground process itself
        wait_until(lambda: inst.pid("supervisor") == console.pid, 15, what="the pid file")
        assert inst.launch("--start", "supervisor").returncode == 1
        # then SIGTERM ends it gracefully, and the pid file goes with it
        console.send_signal(signal.SIGTERM)
        assert console.wait(timeout=20) == 0
        assert not inst.pid_file("supervisor").exists()
        assert "supervisor box1: started" in console.stderr.read()
    finally:
        if console.poll() is None:
            console.kill()
            console.wait()


def test_standalone_holds_the_pid_files_of_what_it_runs(inst, tmp_path):
    # given the quick start running on a SQLite store, mx on a free port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        inst.env["TACTUS_MX_PORT"] = str(probe.getsockname()[1])
    (tmp_path / "ctx.yaml").write_text(TICKER)
    with open(tmp_path / "standalone.out", "wb") as out:
        standalone = subprocess.Popen(
            [sys.executable, str(ROOT / "launch.py"), "standalone", "--context", "ctx.yaml"],
            cwd=tmp_path,
            env=inst.env,
            stdout=out,
            stderr=out,
        )
    try:
        # when it is up, --status shows the scheduler, mx and the supervisor running in it
        def all_running():
            code, rows = status_row(inst)
            return code == 0 and {r[0]: r[1:3] for r in rows}

        pid = str(standalone.pid)
        rows = wait_until(
            lambda: (r := all_running()) and all(r[n] == ["running", pid] for n in PARTS) and r,
            deadline=60,
            interval=0.2,
            what="standalone's pid files",
        )
        assert set(rows) == {"mx", "scheduler", "supervisor", "standalone"}
        # then a second scheduler, or a second standalone, is refused
        again = inst.launch("--start", "scheduler")
        assert (again.returncode, again.stderr.strip()) == (
            1,
            f"launch.py --start: scheduler is already running (pid {pid})",
        )
        second = inst.launch("standalone", "--context", "ctx.yaml")
        assert second.returncode == 1
        assert f"is already running (pid {pid})" in second.stderr
        # and one of its parts cannot be stopped alone (its pid is standalone's)
        for verb in ("--stop", "--restart"):
            alone = inst.launch(verb, "scheduler")
            assert alone.returncode == 1, alone.stderr
            assert f"scheduler runs inside standalone (pid {pid})" in alone.stderr
        assert standalone.poll() is None
        # and --stop standalone ends it cleanly, taking its pid files with it
        stopped = inst.launch("--stop", "standalone")
        assert stopped.returncode == 0, stopped.stderr
        assert standalone.wait(timeout=60) == 0, (tmp_path / "standalone.out").read_text()[-3000:]
        assert not any(inst.pid_file(name).exists() for name in (*PARTS, "standalone"))
        code, rows = status_row(inst)
        assert code == 0 and all(row[1] == "stopped" for row in rows)
    finally:
        if standalone.poll() is None:
            standalone.kill()
            standalone.wait()


#: What ``launch.py standalone`` runs in its one process.
PARTS = ("scheduler", "mx", "supervisor")
