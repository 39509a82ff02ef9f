"""Why a process has not run (SPEC section 14): one test per reason, each set up the way a user
and the scheduler would (a registration file, the real scheduler's passes, workers' claims and
beats through the store), with the clock injected (5 Jan 2026 13:00 UTC) instead of sleeping;
and the command line (local, ``--json``), the API and the page agreeing on the same state."""

from __future__ import annotations

import argparse
import html
import json
import re
from datetime import timedelta

import pytest

from db.credentials import Role
from db.models import WorkerRecord
from db.state_change import change_uow
from mx.cli.backend import Installation
from mx.cli.why import cmd_why
from mx.services import actions, processes
from mx.services.context import ServiceContext
from scheduler.config import SchedulerConfig
from scheduler.service import Scheduler
from tests.scheduler.conftest import RecordingBroker

#: Liveness of the default settings: heartbeat_interval 5 s x heartbeat_misses 3.
SILENT = timedelta(seconds=16)


class WhyKit:
    """A store with processes registered from a file, the real scheduler, and presence beats."""

    def __init__(self, store, clock, tmp_path) -> None:
        self.store = store
        self.clock = clock
        self.tmp_path = tmp_path
        self.broker = RecordingBroker()
        self.scheduler = Scheduler(store, self.broker, clock, SchedulerConfig())

    def register(self, yaml: str) -> None:
        path = self.tmp_path / "ctx.yaml"
        path.write_text(yaml)
        processes.register_file(self.store, str(path), clock=self.clock, actor="test")
        self.scheduler.reload()

    def run(self, seconds: float = 0) -> None:
        if seconds:
            self.clock.advance(seconds)
        self.scheduler.run_pass()

    def beat(self, process: str, worker_id: str | None = None) -> str:
        """A worker of ``process`` (``scheduler``: the scheduler's presence) registers or beats."""
        worker_id = worker_id or f"{process}@b1"
        now = self.clock.now()
        if any(w.worker_id == worker_id for w in self.store.list_workers()):
            self.store.beat_worker(worker_id, now)
        else:
            self.store.save_worker(
                WorkerRecord(
                    worker_id=worker_id,
                    process=process,
                    box_id="b1",
                    pid=7,
                    started_at=now,
                    heartbeat_at=now,
                )
            )
        return worker_id

    def claim(self, uow_id: str, worker_id: str = "w1"):
        uow = self.store.get_uow(uow_id)
        return change_uow(
            self.store,
            uow,
            "claim",
            clock=self.clock,
            actor=f"worker {worker_id}",
            changes={"worker_id": worker_id, "started_at": self.clock.now()},
        )

    def fail(self, uow_id: str):
        claimed = self.claim(uow_id)
        return change_uow(
            self.store,
            claimed,
            "fail",
            clock=self.clock,
            actor="worker w1",
            changes={"finished_at": self.clock.now(), "error": "exit code 1"},
        )

    def succeed(self, uow_id: str):
        claimed = self.claim(uow_id)
        return change_uow(
            self.store,
            claimed,
            "succeed",
            clock=self.clock,
            actor="worker w1",
            changes={"finished_at": self.clock.now()},
        )

    def job(self, process: str, timeperiod: str):
        return self.store.get_job(process, timeperiod)

    def context(self) -> ServiceContext:
        return ServiceContext(
            store=self.store, clock=self.clock, publish=lambda *a: None, actor="test"
        )


@pytest.fixture
def inst(app_store, clock, tmp_path):
    return WhyKit(app_store, clock, tmp_path)


def why(client, auth, name: str, timeperiod: str | None = None) -> dict:
    url = f"/api/v1/processes/{name}/why" + (f"?timeperiod={timeperiod}" if timeperiod else "")
    response = client.get(url, headers=auth.headers(Role.VIEWER))
    assert response.status_code == 200, response.json
    assert response.json["reasons"], "the answer is never empty"
    return response.json


def by_code(answer: dict) -> dict[str, dict]:
    return {r["code"]: r["facts"] for r in answer["reasons"]}


def codes(answer: dict) -> list[str]:
    return [r["code"] for r in answer["reasons"]]


HOURLY = """
processes:
  - name: h
    kind: managed
    time_qualifier: hourly
    command: ["true"]
    start_timeperiod: "2026010510"
    lag: {lag}
    max_active: {max_active}
    retries: 2
    retry_delay: 60
"""


# -- disabled, scheduler and workers ----------------------------------------------------------------


def test_disabled(client, auth, inst):
    inst.register(HOURLY.format(lag=0, max_active=1) + "    enabled: false\n")
    inst.beat("scheduler")
    answer = why(client, auth, "h")
    assert codes(answer)[0] == "disabled"
    assert by_code(answer)["disabled"] == {
        "process": "h",
        "enabled": False,
        "updated_at": "2026-01-05T13:00:00Z",
    }


def test_no_live_scheduler_names_its_last_heartbeat(client, auth, inst):
    inst.register(HOURLY.format(lag=0, max_active=1))
    # no scheduler has ever registered its presence
    facts = by_code(why(client, auth, "h"))["no_scheduler"]
    assert facts["last_heartbeat"] is None and facts["schedulers"] == []
    # one beats at 13:00, then falls silent past heartbeat_interval x heartbeat_misses
    inst.beat("scheduler")
    inst.run()
    assert "no_scheduler" not in codes(why(client, auth, "h"))
    inst.clock.advance(SILENT)
    facts = by_code(why(client, auth, "h"))["no_scheduler"]
    assert facts["last_heartbeat"] == "2026-01-05T13:00:00Z"
    assert facts["schedulers"] == [
        {
            "worker_id": "scheduler@b1",
            "box_id": "b1",
            "state": "alive",
            "heartbeat_at": "2026-01-05T13:00:00Z",
        }
    ]
    assert facts["liveness_seconds"] == 15


def test_no_live_worker_names_the_last_heartbeat_seen(client, auth, inst):
    inst.register(HOURLY.format(lag=0, max_active=1))
    inst.beat("scheduler")
    inst.run()  # the job of 10:00 starts: its unit of work is requested
    uow_id = inst.job("h", "2026010510").uow_id
    answer = why(client, auth, "h", "2026010510")
    assert by_code(answer)["queued"]["uow_id"] == uow_id
    assert by_code(answer)["no_worker"]["last_heartbeat"] is None
    # a worker of h beat at 13:00 and went silent
    inst.beat("h", "w1")
    assert "no_worker" not in codes(why(client, auth, "h", "2026010510"))
    inst.clock.advance(SILENT)
    inst.beat("scheduler")
    facts = by_code(why(client, auth, "h", "2026010510"))["no_worker"]
    assert facts["process"] == "h"
    assert facts["last_heartbeat"] == "2026-01-05T13:00:00Z"
    assert [w["worker_id"] for w in facts["workers"]] == ["w1"]


# -- when: not due, lag -----------------------------------------------------------------------------


def test_not_due_managed_the_period_has_not_ended(client, auth, inst):
    inst.register(HOURLY.format(lag=300, max_active=24))
    inst.beat("scheduler")
    inst.beat("h")
    inst.run()
    answer = why(client, auth, "h", "2026010513")
    assert answer["state"] == "embryo"
    assert by_code(answer)["not_due"] == {
        "timeperiod": "2026010513",
        "ends_at": "2026-01-05T14:00:00Z",
        "runs_after": "2026-01-05T14:05:00Z",
    }
    # a period that has not started has no job yet
    facts = by_code(why(client, auth, "h", "2026010515"))["not_due"]
    assert facts["starts_at"] == "2026-01-05T15:00:00Z"


def test_not_due_freerun_next_fire(client, auth, inst):
    inst.register(
        "processes:\n  - {name: cron, kind: freerun, trigger: every 3600, command: ['true']}\n"
    )
    inst.beat("scheduler")
    inst.beat("cron")
    facts = by_code(why(client, auth, "cron"))["not_due"]
    assert facts["next_fire"] == "2026-01-05T14:00:00Z"
    assert facts["trigger"] == "every 3600" and facts["last_fire"] is None


def test_lag_not_passed_until_when(client, auth, inst):
    inst.register(HOURLY.format(lag=300, max_active=24))
    inst.beat("scheduler")
    inst.beat("h")
    inst.clock.advance(60)  # 13:01: the hour of 12:00 ended a minute ago
    inst.run()
    assert inst.job("h", "2026010512").state.value == "embryo"
    assert by_code(why(client, auth, "h", "2026010512"))["lag"] == {
        "timeperiod": "2026010512",
        "ended_at": "2026-01-05T13:00:00Z",
        "lag_seconds": 300,
        "until": "2026-01-05T13:05:00Z",
    }
    # the scheduler agrees: past the lag it starts the job
    inst.run(240)
    assert inst.job("h", "2026010512").state.value == "in_progress"


# -- max_active and order ---------------------------------------------------------------------------


def test_max_active_reached_by_which_units(client, auth, inst):
    inst.register(HOURLY.format(lag=0, max_active=1))
    inst.beat("scheduler")
    inst.beat("h")
    inst.run()
    first = inst.job("h", "2026010510")
    assert by_code(why(client, auth, "h", "2026010511"))["max_active"] == {
        "timeperiod": "2026010511",
        "max_active": 1,
        "in_flight": [{"uow_id": first.uow_id, "timeperiod": "2026010510", "state": "requested"}],
    }
    # with max_active 1 the later periods wait their turn behind the earlier one
    facts = by_code(why(client, auth, "h", "2026010512"))["held_back"]
    assert facts["earlier_timeperiod"] == "2026010511" and facts["earlier_state"] == "embryo"


def test_max_active_freerun(client, auth, inst):
    inst.register(
        "processes:\n  - {name: cron, kind: freerun, trigger: every 60, command: ['true']}\n"
    )
    inst.beat("scheduler")
    inst.beat("cron")
    inst.run(60)  # fires at 13:01
    (uow_id,) = [m.uow_id for _, m, _ in inst.broker.published if getattr(m, "uow_id", None)]
    inst.clock.advance(60)
    facts = by_code(why(client, auth, "cron"))["max_active"]
    assert facts["max_active"] == 1
    assert facts["in_flight"] == [{"uow_id": uow_id, "state": "requested"}]


# -- dependencies and children ----------------------------------------------------------------------


DEPENDENT = """
processes:
  - {name: src, kind: managed, time_qualifier: hourly, command: ["true"], start_timeperiod: "2026010512", lag: 0}
  - {name: dst, kind: managed, time_qualifier: hourly, command: ["true"], start_timeperiod: "2026010512", lag: 0, depends_on: [src], blocking: dependencies}
"""

TREE = """
processes:
  - {name: t_hourly, kind: managed, time_qualifier: hourly, command: ["true"], start_timeperiod: "2026010500", lag: 0, tree: t, max_active: 24}
  - {name: t_daily, kind: managed, time_qualifier: daily, command: ["true"], start_timeperiod: "2026010400", lag: 0, tree: t, blocking: children}
"""


def test_blocked_by_a_dependency_in_its_state(client, auth, inst):
    inst.register(DEPENDENT)
    inst.beat("scheduler")
    inst.beat("dst")
    inst.run()
    answer = why(client, auth, "dst", "2026010512")
    facts = by_code(answer)["blocked_by_dependency"]
    assert facts["process"] == "src"
    assert facts["jobs"] == [{"timeperiod": "2026010512", "state": "in_progress"}]
    assert facts["unfinished"] == 1 and facts["not_created"] == []


def test_a_skipped_dependency_skips_the_job(client, auth, inst):
    # given dst turned off, and src's unit of work canceled by hand: src's job is skipped
    inst.register(DEPENDENT)
    inst.beat("scheduler")
    inst.beat("dst")
    inst.run()
    response = client.patch(
        "/api/v1/processes/dst", json={"enabled": False}, headers=auth.headers(Role.OPERATOR)
    )
    assert response.status_code == 200, response.json
    inst.scheduler.reload()
    actions.cancel(inst.context(), inst.job("src", "2026010512").uow_id)
    inst.scheduler.wake("src")
    inst.run()
    assert inst.job("src", "2026010512").state.value == "skipped"
    answer = why(client, auth, "dst", "2026010512")
    assert codes(answer) == ["disabled", "dependency_skipped"]
    assert by_code(answer)["dependency_skipped"] == {
        "timeperiod": "2026010512",
        "dependencies": ["src"],
        "blocking": "dependencies",
    }
    # when dst is turned on, the scheduler does what the reason says
    response = client.patch(
        "/api/v1/processes/dst", json={"enabled": True}, headers=auth.headers(Role.OPERATOR)
    )
    assert response.status_code == 200, response.json
    inst.scheduler.reload()
    inst.run(60)  # its next look, on its trigger
    inst.beat("scheduler")
    assert inst.job("dst", "2026010512").state.value == "skipped"
    assert codes(why(client, auth, "dst", "2026010512")) == ["skipped"]


def test_blocked_by_children_in_their_states(client, auth, inst):
    inst.register(TREE)
    inst.beat("scheduler")
    inst.beat("t_daily")
    inst.run()
    # 4 Jan's hours come before t_hourly's first period: never waited for, so 4 Jan runs
    assert "blocked_by_child" not in codes(why(client, auth, "t_daily", "2026010400"))
    assert inst.job("t_daily", "2026010400").state.value == "in_progress"
    # 5 Jan, once closed, waits for its hours (all started, none finished yet)
    inst.run(11 * 3600 + 1800)  # 6 Jan 00:30
    inst.beat("scheduler")
    facts = by_code(why(client, auth, "t_daily", "2026010500"))["blocked_by_child"]
    assert facts["process"] == "t_hourly"
    assert facts["unfinished"] == 24 and facts["not_created"] == []
    assert {"timeperiod": "2026010500", "state": "in_progress"} in facts["jobs"]
    assert inst.job("t_daily", "2026010500").state.value == "embryo"


# -- retries, running, done -------------------------------------------------------------------------


def test_waiting_for_a_retry_until_when(client, auth, inst):
    inst.register(HOURLY.format(lag=0, max_active=1))
    inst.beat("scheduler")
    inst.beat("h")
    inst.run()
    uow_id = inst.job("h", "2026010510").uow_id
    inst.fail(uow_id)
    inst.scheduler.wake("h")
    inst.run()  # recovery stores the retry time: 60 s after the failure
    stored = inst.store.get_uow(uow_id)
    facts = by_code(why(client, auth, "h", "2026010510"))["retry_wait"]
    assert facts["uow_id"] == uow_id and facts["attempt"] == 1 and facts["retries"] == 2
    assert facts["until"] == "2026-01-05T13:01:00Z"
    assert stored.retry_at.isoformat().startswith("2026-01-05T13:01:00")
    assert facts["error"] == "exit code 1"


def test_running_then_ran(client, auth, inst):
    inst.register(HOURLY.format(lag=0, max_active=1))
    inst.beat("scheduler")
    inst.beat("h", "w1")
    inst.run()
    uow_id = inst.job("h", "2026010510").uow_id
    inst.claim(uow_id)
    facts = by_code(why(client, auth, "h", "2026010510"))["running"]
    assert facts["uow_id"] == uow_id and facts["worker_id"] == "w1"
    change_uow(
        inst.store,
        inst.store.get_uow(uow_id),
        "succeed",
        clock=inst.clock,
        actor="worker w1",
        changes={"finished_at": inst.clock.now()},
    )
    assert codes(why(client, auth, "h", "2026010510")) == ["due"]
    inst.scheduler.wake("h")
    inst.run()
    answer = why(client, auth, "h", "2026010510")
    assert codes(answer) == ["ran"]
    assert by_code(answer)["ran"]["state"] == "processed"


def test_before_the_first_period_there_is_no_job(client, auth, inst):
    inst.register(HOURLY.format(lag=0, max_active=1))
    inst.beat("scheduler")
    inst.run()
    assert by_code(why(client, auth, "h", "2026010509"))["no_job"] == {
        "timeperiod": "2026010509",
        "first_timeperiod": "2026010510",
    }


def test_without_a_timeperiod_the_oldest_unfinished_job_is_explained(client, auth, inst):
    inst.register(HOURLY.format(lag=0, max_active=1))
    inst.beat("scheduler")
    inst.beat("h")
    inst.run()
    answer = why(client, auth, "h")
    assert answer["timeperiod"] == "2026010510" and answer["state"] == "in_progress"
    assert codes(answer) == ["queued"]


# -- errors -----------------------------------------------------------------------------------------


def test_unknown_process_is_404_and_bad_timeperiods_are_400(client, auth, inst):
    inst.register(
        HOURLY.format(lag=0, max_active=1)
        + "  - {name: cron, kind: freerun, trigger: every 60, command: ['true']}\n"
    )
    headers = auth.headers(Role.VIEWER)
    response = client.get("/api/v1/processes/nope/why", headers=headers)
    assert response.status_code == 404
    assert "nope" in json.dumps(response.json)
    for url, problem in [
        ("/api/v1/processes/h/why?timeperiod=2026-01-05", "ten digits"),
        ("/api/v1/processes/h/why?timeperiod=2026023013", "2026023013"),
        ("/api/v1/processes/cron/why?timeperiod=2026010513", "freerun process has no"),
    ]:
        response = client.get(url, headers=headers)
        assert response.status_code == 400, url
        assert response.json["error"]["field"] == "timeperiod"
        assert problem in response.json["error"]["message"], response.json


# -- one state, three front ends --------------------------------------------------------------------


def panel_reasons(page: str) -> list[dict]:
    """The reasons of the page's why panel: each item's code and the facts it carries."""
    items = re.findall(r'data-code="([a-z_]+)" data-facts="([^"]*)"', page)
    return [{"code": code, "facts": json.loads(html.unescape(facts))} for code, facts in items]


def test_cli_api_and_page_give_the_same_reasons(client, auth, inst, settings, capsys):
    inst.register(DEPENDENT)
    inst.beat("scheduler", "scheduler@b1")
    inst.run()
    inst.clock.advance(SILENT)  # the scheduler and every worker silent: more reasons at once
    api = why(client, auth, "dst", "2026010512")
    assert codes(api) == ["no_scheduler", "blocked_by_dependency", "no_worker"]
    reasons = [{"code": r["code"], "facts": r["facts"]} for r in api["reasons"]]
    # the command line, on the same store, judged at the same instant
    lines: list[str] = []
    args = argparse.Namespace(process="dst", timeperiod="2026010512", json=True)
    assert cmd_why(args, Installation(settings, clock=inst.clock), lines.append) == 0
    cli = json.loads("\n".join(lines))
    assert [{"code": r["code"], "facts": r["facts"]} for r in cli] == reasons
    assert [r["message"] for r in cli] == [r["message"] for r in api["reasons"]]
    # the job page's panel
    auth.login(Role.VIEWER)
    page = client.get("/jobs/dst/2026010512")
    assert page.status_code == 200
    assert panel_reasons(page.get_data(as_text=True)) == reasons
    # and the process page's, for its oldest unfinished job (the same one)
    page = client.get("/processes/dst")
    assert panel_reasons(page.get_data(as_text=True)) == reasons


# -- found in review: the answer follows the scheduler's gates exactly ------------------------------


def _set_enabled(client, auth, inst, name: str, enabled: bool) -> None:
    response = client.patch(
        f"/api/v1/processes/{name}", json={"enabled": enabled}, headers=auth.headers(Role.OPERATOR)
    )
    assert response.status_code == 200, response.json
    inst.scheduler.reload()


def test_a_disabled_managed_job_is_never_due(client, auth, inst):
    # 10:00 started and ran; 11:00 is an embryo nothing blocks, but the process is off
    inst.register(HOURLY.format(lag=0, max_active=1))
    inst.beat("scheduler")
    inst.beat("h")
    inst.run()
    inst.succeed(inst.job("h", "2026010510").uow_id)
    assert "due" in codes(why(client, auth, "h", "2026010511"))
    _set_enabled(client, auth, inst, "h", False)
    inst.run(60)
    inst.beat("scheduler")
    inst.beat("h")
    assert inst.job("h", "2026010511").state.value == "embryo"  # the scheduler leaves it
    answer = why(client, auth, "h", "2026010511")
    assert codes(answer) == ["disabled"]


def test_a_disabled_freerun_is_neither_due_nor_given_a_next_fire(client, auth, inst):
    inst.register(
        "processes:\n  - {name: cron, kind: freerun, trigger: every 60, command: ['true']}\n"
    )
    inst.beat("scheduler")
    inst.beat("cron")
    _set_enabled(client, auth, inst, "cron", False)
    inst.clock.advance(120)
    inst.beat("scheduler")
    inst.beat("cron")
    inst.run()
    assert inst.store.last_fire("cron") is None  # the scheduler fires nothing
    assert codes(why(client, auth, "cron")) == ["disabled"]


DEPENDENCIES_IN_A_TREE = """
processes:
  - {name: c_hourly, kind: managed, time_qualifier: hourly, command: ["true"], start_timeperiod: "2026010400", lag: 0, tree: c, max_active: 1}
  - {name: c_daily, kind: managed, time_qualifier: daily, command: ["true"], start_timeperiod: "2026010400", lag: 0, tree: c, depends_on: [c_src], blocking: dependencies}
  - {name: c_src, kind: managed, time_qualifier: daily, command: ["true"], start_timeperiod: "2026010400", lag: 0}
"""


def test_blocking_dependencies_does_not_wait_for_children_to_start(client, auth, inst):
    inst.register(DEPENDENCIES_IN_A_TREE)
    inst.beat("scheduler")
    inst.beat("c_daily")
    inst.run()
    assert inst.job("c_daily", "2026010400").state.value == "embryo"
    answer = why(client, auth, "c_daily", "2026010400")
    assert by_code(answer)["blocked_by_dependency"]["process"] == "c_src"
    # the children (c_hourly's 4 Jan hours, one at a time) are unfinished, yet they do not
    # hold the start: the scheduler starts c_daily once c_src succeeded, as we check below
    assert "blocked_by_child" not in codes(answer)
    inst.succeed(inst.job("c_src", "2026010400").uow_id)
    inst.scheduler.wake("c_src")
    inst.run()
    assert inst.job("c_hourly", "2026010423").state.value == "embryo"
    assert inst.job("c_daily", "2026010400").state.value == "in_progress"
