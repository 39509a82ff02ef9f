"""launch.py as users run it: real subprocesses, exit codes, output, and what lands in the store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from db import open_store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TACTUS_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=tmp_path,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def store_of(tmp_path: Path):
    return open_store(f"sqlite:///{tmp_path / 'var' / 'tactus.db'}")


def test_next_runs_new_york_fall_back(tmp_path):
    result = run(
        tmp_path,
        "next-runs",
        "30 1 * * *",
        "--tz",
        "America/New_York",
        "--after",
        "2026-10-31T12:00:00Z",
        "--count",
        "3",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "2026-11-01T05:30:00Z",
        "2026-11-02T06:30:00Z",
        "2026-11-03T06:30:00Z",
    ]
    assert "01:30:00" in lines[0] and "EDT" in lines[0] and "EST" in lines[1]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["next-runs", "61 * * * *"], "trigger"),
        (["next-runs", "every 5", "--tz", "Nowhere/Land"], "timezone"),
        (["next-runs", "every 5", "--after", "yesterday"], "after"),
        (["next-runs", "every 5", "--count", "0"], "count"),
    ],
)
def test_next_runs_bad_input_exits_2_naming_field(tmp_path, args, field):
    result = run(tmp_path, *args)
    assert result.returncode == 2
    assert f"'{field}'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_register_is_idempotent(tmp_path):
    # given
    first = run(tmp_path, "register", str(EXAMPLES / "process_context.yaml"))
    # when
    second = run(tmp_path, "register", str(EXAMPLES / "process_context.yaml"))
    listed = run(tmp_path, "list", "processes", "--json")
    # then
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout and " 0 created" not in first.stdout
    assert second.returncode == 0 and "0 created, 0 updated" in second.stdout
    names = [p["name"] for p in json.loads(listed.stdout)]
    assert "site_hourly" in names and "client_daily" in names
    with store_of(tmp_path) as store:
        assert all(r.version == 1 for r in store.list_processes())


def test_register_same_content_in_python_and_yaml(tmp_path):
    run(tmp_path, "register", str(EXAMPLES / "process_context.yaml"))
    again = run(tmp_path, "register", str(EXAMPLES / "process_context.py"))
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 updated" in again.stdout


def test_register_bad_file_changes_nothing(tmp_path):
    # given a registered store and a copy of the example with one broken field
    run(tmp_path, "register", str(EXAMPLES / "process_context.yaml"))
    before = run(tmp_path, "list", "processes", "--json").stdout
    broken = tmp_path / "broken.yaml"
    text = (EXAMPLES / "process_context.yaml").read_text()
    assert "time_qualifier: daily" in text
    broken.write_text(text.replace("time_qualifier: daily", "time_qualifier: weekly", 1))
    # when
    result = run(tmp_path, "register", str(broken))
    # then
    assert result.returncode == 2
    assert "field 'time_qualifier'" in result.stderr and "weekly" in result.stderr
    assert run(tmp_path, "list", "processes", "--json").stdout == before


def test_register_check_writes_nothing(tmp_path):
    result = run(tmp_path, "register", str(EXAMPLES / "process_context.yaml"), "--check")
    assert result.returncode == 0 and "check only" in result.stdout
    with store_of(tmp_path) as store:
        store.init_schema()
        assert store.list_processes() == []


def test_register_keeps_runtime_edit_unless_file_changes_it(tmp_path):
    # given a registered file and a process disabled at run time (as the API will do)
    context = tmp_path / "ctx.yaml"
    shutil.copy(EXAMPLES / "process_context.yaml", context)
    run(tmp_path, "register", str(context))
    with store_of(tmp_path) as store:
        record = store.get_process("site_hourly")
        store.update_process(
            replace(record, entry=replace(record.entry, enabled=False)),
            expected_version=record.version,
        )
    # when the same file is registered again
    run(tmp_path, "register", str(context))
    # then the run-time edit survives
    with store_of(tmp_path) as store:
        assert store.get_process("site_hourly").entry.enabled is False
    # when the file itself changes another field of that process
    text = context.read_text()
    context.write_text(text.replace("name: site_hourly", "name: site_hourly\n    retries: 7", 1))
    run(tmp_path, "register", str(context))
    # then the file's change lands and the run-time edit still survives
    with store_of(tmp_path) as store:
        entry = store.get_process("site_hourly").entry
        assert entry.retries == 7 and entry.enabled is False


def test_db_reset_needs_confirmation(tmp_path):
    run(tmp_path, "register", str(EXAMPLES / "process_context.yaml"))
    refused = run(tmp_path, "db", "--reset")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    with store_of(tmp_path) as store:
        assert store.list_processes()
    done = run(tmp_path, "db", "--reset", "--yes")
    assert done.returncode == 0, done.stderr
    with store_of(tmp_path) as store:
        assert store.list_processes() == []


def test_list_tables_and_bad_state(tmp_path):
    run(tmp_path, "db", "--init")
    for target in ("processes", "jobs", "uows", "boxes", "workers"):
        result = run(tmp_path, "list", target)
        assert result.returncode == 0, (target, result.stderr)
        assert "(none)" in result.stdout
    bad = run(tmp_path, "list", "jobs", "--state", "done")
    assert bad.returncode == 2 and "'state'" in bad.stderr


def test_bad_setting_exits_2_naming_key(tmp_path):
    env_run = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "list", "processes"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TACTUS_MX_PORT": "http"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert env_run.returncode == 2 and "'mx_port'" in env_run.stderr


def test_usage_error_exits_2(tmp_path):
    assert run(tmp_path, "list", "everything").returncode == 2
    assert run(tmp_path).returncode == 2
