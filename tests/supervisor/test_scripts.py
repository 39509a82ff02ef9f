"""The init-system files in ``scripts/``: systemd units, the SysV init script, logrotate.

A checker that is not installed, or cannot run here, skips with the reason locally and fails when
``CI=true`` (scripts/test-services installs them); a checker that runs and finds a problem fails.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import unavailable
from tests.supervisor.installation import BOX, Installation

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
UNITS = sorted((SCRIPTS / "systemd").glob("*.service"))
#: The daemons' units (process_starter.py NAME --console); the executor's runs launch.py executor.
DAEMON_UNITS = [u for u in UNITS if u.name != "tactus-executor.service"]
INIT_SCRIPT = SCRIPTS / "sysv" / "tactus"
LOGROTATE = SCRIPTS / "logrotate" / "tactus"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (scripts/test-services installs it)")
    return path


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    # a line ending in a backslash goes on on the next one, as systemd reads it
    text = re.sub(r"\\\n\s*", " ", unit.read_text())
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_units_exist_for_the_three_daemons_and_the_executor():
    assert [u.name for u in UNITS] == [
        "tactus-executor.service",
        "tactus-mx.service",
        "tactus-scheduler.service",
        "tactus-supervisor.service",
    ]


def test_executor_unit_runs_launch_executor_with_its_token_as_its_user():
    d = directives(SCRIPTS / "systemd" / "tactus-executor.service")
    (start,) = d["ExecStart"]
    assert start.startswith("/opt/tactus/.venv/bin/python /opt/tactus/launch.py executor")
    assert "--token-file /etc/tactus/executor.token" in start
    assert d["Restart"] == ["on-failure"] and d["User"] == ["tactus"]
    assert d["NoNewPrivileges"] == ["yes"] and d["PrivateTmp"] == ["yes"]
    # SIGTERM drains: running units of work end and are reported before the stop
    assert d["KillMode"] == ["mixed"]


@pytest.mark.parametrize("unit", DAEMON_UNITS, ids=lambda u: u.name)
def test_unit_restarts_runs_as_its_user_and_is_hardened(unit):
    d = directives(unit)
    name = unit.stem.removeprefix("tactus-")
    assert d["ExecStart"] == [
        f"/opt/tactus/.venv/bin/python /opt/tactus/process_starter.py {name} --console"
    ]
    assert d["Restart"] == ["on-failure"] and d["User"] == ["tactus"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert d[key] == [value], key
    # the supervisor's processes must outlive a crash of the supervisor, to be re-adopted
    assert d["KillMode"] == ["process" if name == "supervisor" else "mixed"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_passes_systemd_analyze_verify(unit, tmp_path):
    analyze = tool("systemd-analyze")
    # verify checks that ExecStart's program exists: point the unit at this checkout
    local = tmp_path / unit.name
    local.write_text(unit.read_text().replace("/opt/tactus", str(ROOT)))
    result = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 and unit.name not in output:
        unavailable(f"systemd-analyze cannot run here: {output[:200]}")
    # it reports unknown keys and bad values as warnings with exit 0: any output is a finding
    assert result.returncode == 0 and output == "", output


def test_init_script_passes_shellcheck():
    shellcheck = tool("shellcheck")
    result = subprocess.run(
        [shellcheck, "--shell=sh", str(INIT_SCRIPT)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.slow
def test_init_script_starts_reports_and_stops_the_supervisor(tmp_path):
    # given defaults for this checkout and a temporary installation, as the current user
    inst = Installation(tmp_path)
    var = tmp_path / "var"
    defaults = tmp_path / "defaults"
    defaults.write_text(
        f"TACTUS_HOME={ROOT}\nTACTUS_USER={pwd.getpwuid(os.getuid()).pw_name}\n"
        f"TACTUS_SERVICES=supervisor\nTACTUS_VAR_DIR={var}\nTACTUS_LOG_DIR={var}/log\n"
        f"TACTUS_PID_DIR={var}/run\nTACTUS_BOX_ID={BOX}\n"
    )
    env = {**inst.env, "TACTUS_DEFAULTS": str(defaults)}

    def init(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sh", str(INIT_SCRIPT), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,
        )

    try:
        # when / then
        started = init("start")
        assert started.returncode == 0, started.stdout + started.stderr
        assert "supervisor started" in started.stdout
        status = init("status")
        assert status.returncode == 0 and "running" in status.stdout
        assert init("start", "supervisor").stdout.strip() == "tactus: supervisor is already running"
        stopped = init("stop")
        assert stopped.returncode == 0 and "supervisor: stopped" in stopped.stdout
        assert init("status").returncode == 3
        assert init("bogus").returncode == 2
    finally:
        init("stop")
        inst.cleanup()


def test_logrotate_rotates_the_output_files(tmp_path):
    logrotate = tool("logrotate")
    # given the installed configuration, pointed at a temporary log directory
    logs = tmp_path / "log"
    logs.mkdir(mode=0o750)
    (logs / "supervisor.out").write_text("printed\n" * 100)
    (logs / "supervisor.log").write_text("rotated by the process itself\n")
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    conf = tmp_path / "tactus.conf"
    conf.write_text(
        LOGROTATE.read_text()
        .replace("/var/log/tactus", str(logs))
        .replace("su tactus tactus", f"su {user} {group}")
    )
    conf.chmod(0o644)
    # when a rotation is forced
    result = subprocess.run(
        [logrotate, "--force", "--state", str(tmp_path / "state"), str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # then the output file was copied and truncated in place; the .log was left alone
    assert result.returncode == 0, result.stderr
    assert (logs / "supervisor.out.1").read_text().count("printed") == 100
    assert (logs / "supervisor.out").read_text() == ""
    assert not (logs / "supervisor.log.1").exists()
