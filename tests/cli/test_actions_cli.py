"""The action commands and the quick start, as users run them (real subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from db import open_store
from db.errors import StoreUnavailable
from db.models import JobQuery, UowQuery
from db.states import JobState, UowState
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TACTUS_")}
    env.update(PYTHONPATH=str(ROOT), TACTUS_HEARTBEAT_INTERVAL="0.5")
    return env


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )


def store_of(tmp_path: Path):
    return open_store(f"sqlite:///{tmp_path / 'var' / 'tactus.db'}")


@pytest.fixture
def registered(tmp_path):
    context = tmp_path / "ctx.yaml"
    context.write_text(
        """
processes:
  - name: cron
    kind: freerun
    trigger: every 3600
    command: [echo, hello]
  - name: hourly
    kind: managed
    time_qualifier: hourly
    start_timeperiod: "2026010100"
    command: ["true"]
"""
    )
    assert run(tmp_path, "register", str(context)).returncode == 0
    return tmp_path


def test_submit_then_status_of(registered):
    # when a task is submitted for later
    submitted = run(
        registered, "submit", "--command", "echo {x} | wc -c", "--at", "2030-01-01T00:00:00Z"
    )
    # then its id is printed, and status-of shows it requested at that time
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    status = run(registered, "status-of", task_id, "--json")
    data = json.loads(status.stdout)
    assert (data["task_id"], data["state"], data["scheduled_at"]) == (
        task_id,
        "requested",
        "2030-01-01T00:00:00Z",
    )
    assert data["command"] == "echo {x} | wc -c"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["submit", "--command", ""], "command"),
        (["submit", "--command", "true", "--at", "tomorrow"], "scheduled_at"),
        (["submit", "--command", "true", "--retries", "-1"], "retries"),
    ],
)
def test_submit_bad_input_exits_2(registered, args, field):
    result = run(registered, *args)
    assert result.returncode == 2 and f"'{field}'" in result.stderr


def test_trigger_enable_disable(registered):
    triggered = run(registered, "trigger", "cron", "--json")
    assert triggered.returncode == 0, triggered.stderr
    uow_id = json.loads(triggered.stdout)["uow"]["id"]
    with store_of(registered) as store:
        assert store.get_uow(uow_id).state is UowState.REQUESTED
    assert run(registered, "trigger", "cron").returncode == 1  # max_active 1: refused, exit 1
    assert "disabled" in run(registered, "disable", "cron").stdout
    with store_of(registered) as store:
        assert store.get_process("cron").entry.enabled is False
    assert "enabled" in run(registered, "enable", "cron").stdout
    cancel = run(registered, "cancel", uow_id)
    assert cancel.returncode == 0 and "canceled" in cancel.stdout
    again = run(registered, "cancel", uow_id)
    assert again.returncode == 1 and "cannot cancel from state canceled" in again.stderr
    assert run(registered, "trigger", "ghost").returncode == 1


def test_skip_and_reprocess_refusals_and_changes(registered):
    with store_of(registered) as store:
        from db.clock import SystemClock
        from db.ids import new_id
        from db.models import Job

        now = SystemClock().now()
        store.create_job(
            Job(
                id=new_id(),
                process="hourly",
                qualifier="hourly",
                timeperiod="2026010100",
                created_at=now,
                updated_at=now,
            )
        )
    assert run(registered, "reprocess", "hourly", "2026010100").returncode == 1  # embryo
    skipped = run(registered, "skip", "hourly", "2026010100")
    assert skipped.returncode == 0 and "hourly 2026010100 -> skipped" in skipped.stdout
    redo = run(registered, "reprocess", "hourly", "2026010100", "--json")
    assert [j["state"] for j in json.loads(redo.stdout)] == ["embryo"]
    assert run(registered, "skip", "hourly", "2099010100").returncode == 1  # not found


@pytest.mark.slow
def test_standalone_runs_the_examples_until_jobs_go_green(tmp_path):
    # given a fresh directory: the quick start with the example context, mx on a free port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "standalone.out", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "standalone"],
        cwd=tmp_path,
        env={**env_for(tmp_path), "TACTUS_MX_PORT": str(port)},
        stdout=log,
        stderr=log,
    )
    try:
        # then jobs and freerun units of work get processed by the workers it supervises
        def processed():
            if not (tmp_path / "var" / "tactus.db").exists():
                return False
            try:
                with store_of(tmp_path) as store:
                    jobs = store.find_jobs(
                        JobQuery(states=frozenset({JobState.PROCESSED})), limit=5
                    )
                    uows = store.find_uows(
                        UowQuery(states=frozenset({UowState.PROCESSED})), limit=5
                    )
                    return jobs.items and uows.items
            except StoreUnavailable:
                return False  # the file exists but the starting daemons have not made the tables

        wait_until(processed, deadline=120, interval=1.0, what="processed jobs in standalone")
        # and mx answers; the first-start admin token (mode 0600) opens the API
        token_file = tmp_path / "var" / "admin.token"
        wait_until(token_file.exists, deadline=30, what="the admin token file")
        assert token_file.stat().st_mode & 0o777 == 0o600
        base = f"http://127.0.0.1:{port}/api/v1"
        health = json.load(urllib.request.urlopen(f"{base}/health", timeout=10))
        assert health["status"] == "ok"
        assert health["scheduler"]["alive"] is True
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/processes", timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(
            f"{base}/processes",
            headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
        )
        names = {p["name"] for p in json.load(urllib.request.urlopen(request, timeout=10))["items"]}
        assert {"site_hourly", "nightly_export", "adhoc"} <= names
        # and the page it printed the address of shows the grid of the example processes
        page = urllib.request.Request(
            f"http://127.0.0.1:{port}/",
            headers={"Authorization": f"Bearer {token_file.read_text().strip()}"},
        )
        html = urllib.request.urlopen(page, timeout=10).read().decode()
        assert '<tr data-process="site_hourly">' in html
        assert "data-timeperiod=" in html  # cells of jobs that exist
        printed = (tmp_path / "standalone.out").read_text()
        assert f"open http://127.0.0.1:{port}/ and log in with the admin token" in printed
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
    assert code == 0, (tmp_path / "standalone.out").read_text()[-3000:]


def test_standalone_on_a_port_in_use_says_so_and_starts_nothing(tmp_path):
    # given mx's port taken by another program
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # when the quick start runs
        done = subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), "standalone"],
            cwd=tmp_path,
            env={**env_for(tmp_path), "TACTUS_MX_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    # then it stops at once with the reason, before the scheduler or a worker started
    assert done.returncode == 2, done.stderr
    assert f"field 'mx_port': cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "open http://" not in done.stdout
    with store_of(tmp_path) as store:
        assert store.list_workers() == []
        assert store.find_jobs(JobQuery(), limit=1).items == []
