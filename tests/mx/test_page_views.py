"""What issue 13 asked of the page, through Flask's test client: the grid's date labels and its
legend, freerun column labels, no "None" for a run without a timeperiod, a job's children and
dependencies with their states, its current unit of work and its attempts' timeline, a process's
duration chart, the dashboard's last 24 hours, and what a worker class returned."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from db.clock import FakeClock
from db.state_change import change_uow
from db.states import JobState, UowState
from mx.services import actions, tasks
from mx.services.context import ServiceContext
from scheduler.config import SchedulerConfig
from scheduler.service import Scheduler
from tests.contract.store_helpers import stamped
from tests.mx.conftest import T0, register
from tests.scheduler.conftest import RecordingBroker


def text(response) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def get(client, auth, path: str) -> str:
    return text(client.get(path, headers=auth.headers("viewer")))


def section(page: str, name: str) -> str:
    return re.search(rf'<table class="grid" data-section="{name}">(.*?)</table>', page, re.S)[1]


def run_pass(store, clock) -> None:
    Scheduler(store, RecordingBroker(), clock, SchedulerConfig()).run_pass()


def context(store, clock) -> ServiceContext:
    return ServiceContext(store=store, clock=clock, publish=lambda *a: None, actor="test")


def run(store, clock, uow_id: str, *, seconds: float, trigger="succeed", **details) -> None:
    """One attempt of ``uow_id`` as a worker makes it: claimed now, ended ``seconds`` later."""
    uow = store.get_uow(uow_id)
    uow = change_uow(
        store,
        uow,
        "claim",
        clock=clock,
        actor="worker w1",
        changes={"started_at": clock.now(), "finished_at": None, "box_id": "b1"},
        details={"attempt": uow.attempt},
    )
    clock.advance(seconds)
    change_uow(
        store,
        uow,
        trigger,
        clock=clock,
        actor="worker w1",
        changes={"finished_at": clock.now(), "output": f"output of {uow_id}\n"},
        details={"attempt": uow.attempt, "exit_code": None, **details},
    )


# -- 1. the grid ---------------------------------------------------------------------------------


def test_the_hourly_grid_names_the_day_and_the_hour(client, auth, seed):
    grid = section(get(client, auth, "/"), "hourly")
    # 24 hours ending with 13:00 on Monday 5 January: a day label row over the hours.
    groups = re.findall(
        r'<th scope="colgroup" colspan="(\d+)" class="group[^"]*" title="[^"]*"><span>([^<]+)</span></th>',
        grid,
    )
    assert groups == [("10", "Sun Jan 4"), ("14", "Mon Jan 5")]
    labels = re.findall(
        r'<th scope="col" title="([^"]+)" data-timeperiod="(\d+)">(\d\d)</th>', grid
    )
    assert len(labels) == 24
    assert labels[-1] == ("2026-01-05 13:00 UTC", "2026010513", "13")
    assert labels[0] == ("2026-01-04 14:00 UTC", "2026010414", "14")


@pytest.mark.parametrize(
    ("qualifier", "groups", "last"),
    [
        ("daily", [("9", "Dec 2025"), ("5", "Jan 2026")], ("Mon 2026-01-05", "05")),
        ("monthly", [("11", "2025"), ("1", "2026")], ("January 2026", "Jan")),
        ("yearly", [], ("2026", "2026")),
    ],
)
def test_coarser_grids_name_the_month_or_the_year(
    client, auth, app_store, clock, seed, qualifier, groups, last
):
    register(app_store, clock, name="g", kind="managed", time_qualifier=qualifier, command=["true"])
    grid = section(get(client, auth, "/"), qualifier)
    found = re.findall(
        r'<th scope="colgroup" colspan="(\d+)" class="group[^"]*" title="[^"]*"><span>([^<]+)</span></th>',
        grid,
    )
    assert found == groups
    labels = re.findall(r'<th scope="col" title="([^"]+)" data-timeperiod="\d+">([^<]+)</th>', grid)
    assert labels[-1] == last


def test_the_legend_of_job_and_uow_states_is_always_shown(client, auth, seed):
    page = get(client, auth, "/")
    legend = re.search(r'<div class="legend" id="legend">(.*?)</div>', page, re.S)[1]
    assert "<details" not in page
    for state in JobState:
        assert f'<span class="badge s-{state.value}">{state.value}</span>' in legend
    for state in UowState:
        assert f'<span class="badge s-{state.value}">{state.value}</span>' in legend
    assert "no job yet" in legend


def test_freerun_rows_are_labelled_with_their_runs_instants(client, auth, app_store, clock, seed):
    ctx = context(app_store, clock)
    run(app_store, clock, actions.trigger(ctx, "cron")["uow"]["id"], seconds=5)
    clock.advance(60)
    actions.trigger(ctx, "cron")
    grid = section(get(client, auth, "/"), "freerun")
    labels = re.search(r'<tr class="instants" data-runs-of="cron">(.*?)</tr>', grid, re.S)[1]
    assert '<th scope="row" class="name day">Jan 5</th>' in labels
    assert re.findall(r'<span title="([^"]+)">(\d\d:\d\d)</span>', labels) == [
        ("2026-01-05 13:00:00Z", "13:00"),
        ("2026-01-05 13:01:05Z", "13:01"),
    ]


@pytest.mark.parametrize("path", ["/uows", "/uows?process=adhoc", "/uows/{task}", "/uows/{cron}"])
def test_no_page_prints_a_missing_timeperiod(client, auth, app_store, clock, seed, path):
    cron = actions.trigger(context(app_store, clock), "cron")["uow"]["id"]
    page = get(client, auth, path.format(task=seed.task_id, cron=cron))
    assert "None" not in page
    assert '<span class="instant" title="scheduled or submitted at">2026-01-05 13:00:00Z' in page


# -- 2. the job page -----------------------------------------------------------------------------


@pytest.fixture
def tree(app_store, clock, seed):
    """site_hourly under site_daily (one tree), site_daily depending on ref_daily, each with
    jobs for 5 January up to 13:00."""
    common = {"kind": "managed", "command": ["true"], "lag": 0}
    register(app_store, clock, name="ref_daily", time_qualifier="daily", **common,
             start_timeperiod="2026010500")  # fmt: skip
    register(app_store, clock, name="site_daily", time_qualifier="daily", tree="site",
             depends_on=["ref_daily"], start_timeperiod="2026010500", **common)  # fmt: skip
    register(app_store, clock, name="site_hourly", time_qualifier="hourly", tree="site",
             start_timeperiod="2026010500", **common)  # fmt: skip
    run_pass(app_store, clock)


def test_the_job_page_lists_its_children_and_dependencies_with_their_states(
    client, auth, app_store, tree
):
    page = get(client, auth, "/jobs/site_daily/2026010500")
    children = re.search(
        r'<div class="relation" data-relation="children" data-process="site_hourly">(.*?)</div>\s*</div>',
        page,
        re.S,
    )[1]
    shown = re.findall(r'data-state="(\w*)" data-timeperiod="(\d+)"', children)
    assert [tp for _, tp in shown] == [f"20260105{h:02d}" for h in range(14)]
    for state, tp in shown:
        assert app_store.get_job("site_hourly", tp).state.value == state
    # The hours of the day still ahead have no job yet: waited for and said so.
    assert children.count('title="no job yet">') == 10
    assert "waiting: 14 unfinished, 10 not created yet" in children
    dependency = re.search(
        r'data-relation="dependency" data-process="ref_daily">(.*?)</div>\s*</div>', page, re.S
    )[1]
    state = app_store.get_job("ref_daily", "2026010500").state.value
    assert f'data-state="{state}" data-timeperiod="2026010500"' in dependency
    # An hourly job has neither children nor dependencies.
    assert "Waits for" not in get(client, auth, "/jobs/site_hourly/2026010503")


def test_after_a_reprocess_the_new_unit_is_current_and_the_old_superseded(
    client, auth, app_store, clock, seed
):
    process, timeperiod = seed.job
    run(app_store, clock, seed.uow_id, seconds=30, returned="processed")
    # h runs one job at a time: the next hour's goes first.
    run_pass(app_store, clock)
    run(app_store, clock, app_store.get_job(process, "2026010512").uow_id, seconds=5)
    run_pass(app_store, clock)
    actions.reprocess(context(app_store, clock), process, timeperiod)
    clock.advance(5)
    run_pass(app_store, clock)
    job = app_store.get_job(process, timeperiod)
    assert job.uow_id not in (None, seed.uow_id)
    page = get(client, auth, f"/jobs/{process}/{timeperiod}")
    rows = dict(re.findall(r'<tr data-uow="([^"]+)"(?: class="(\w+)")?', page))
    assert rows == {job.uow_id: "current", seed.uow_id: "superseded"}
    assert page.count('<span class="tag current"') == 1
    # The old unit's exit column says what its worker class returned.
    old_row = re.search(rf'<tr data-uow="{seed.uow_id}".*?</tr>', page, re.S)[0]
    assert '<span class="returned" title="what process_uow returned">processed</span>' in old_row


def test_the_job_page_draws_a_timeline_of_its_attempts(client, auth, app_store, clock, seed):
    process, timeperiod = seed.job
    run(app_store, clock, seed.uow_id, seconds=20, trigger="fail", returned="exception")
    clock.advance(10)
    uow = app_store.get_uow(seed.uow_id)
    change_uow(app_store, uow, "retry", clock=clock, actor="t", changes={"attempt": 2})
    run(app_store, clock, seed.uow_id, seconds=40, returned="processed")
    page = get(client, auth, f"/jobs/{process}/{timeperiod}")
    svg = re.search(r'<svg class="chart timeline".*?</svg>', page, re.S)[0]
    bars = re.findall(r'<rect class="bar s-(\w+) (\w+)" data-state="\w+" x="([\d.]+)"', svg)
    assert [(state, mark) for state, mark, _ in bars] == [
        ("invalid", "current"),
        ("processed", "current"),
    ]
    assert float(bars[0][2]) < float(bars[1][2])
    titles = re.findall(r"<title>([^<]+)</title>", svg)
    assert f"{seed.uow_id} attempt 1: invalid (exception), 2026-01-05 13:00:00Z" in titles[1]
    assert "took 20s" in titles[1]
    assert f"{seed.uow_id} attempt 2: processed (processed)" in titles[2]
    assert f">{seed.uow_id} #1</a></text>" in svg
    # Hour and minute labels on the axis.
    assert re.search(r'<text class="tick" x="[\d.]+" y="[\d.]+" text-anchor="middle">13:00', svg)


# -- 3. the process page -------------------------------------------------------------------------


def test_the_process_page_charts_durations_and_landing_times(client, auth, app_store, clock, seed):
    clock.set(clock.now() + timedelta(hours=3))
    done = []
    for tp in ("2026010511", "2026010512", "2026010513"):
        run_pass(app_store, clock)  # h runs one job at a time
        uow_id = app_store.get_job("h", tp).uow_id
        run(app_store, clock, uow_id, seconds=60 * (len(done) + 1))
        done.append(uow_id)
    page = get(client, auth, "/processes/h")
    svg = re.search(r'<svg class="chart durations".*?</svg>', page, re.S)[0]
    took = re.findall(
        r'<rect class="bar s-processed" data-state="processed"[^>]*height="([\d.]+)"', svg
    )
    assert [float(h) for h in took] == [40.0, 80.0, 120.0]
    landed = re.findall(r'<rect class="bar s-landed"', svg)
    assert len(landed) == 3
    titles = re.findall(r"<title>([^<]+)</title>", svg)
    assert "2026010513: processed, took 3m 00s" in titles[3]
    # 2026010513 closed at 14:00; it finished at 16:06: landed 2h 06m after.
    assert any(
        "2026010513: finished 2026-01-05 16:06:00Z, 2h 06m after its period closed" in t
        for t in titles
    )
    table = re.search(r'<table class="list runs">(.*?)</table>', page, re.S)[1]
    assert table.count("<tr data-uow=") == 3
    assert "2h 06m" in table
    # The chart stays live: its section answers htmx alone.
    fragment = text(
        client.get("/processes/h", headers={**auth.headers("viewer"), "HX-Request": "true"})
    )
    assert re.match(r'\s*<section id="runs"', fragment)
    assert "<html" not in fragment


def test_a_freerun_page_charts_its_runs_by_instant(client, auth, app_store, clock, seed):
    uow_id = actions.trigger(context(app_store, clock), "cron")["uow"]["id"]
    clock.advance(3)
    run(app_store, clock, uow_id, seconds=5)
    page = get(client, auth, "/processes/cron")
    svg = re.search(r'<svg class="chart durations".*?</svg>', page, re.S)[0]
    assert svg.count('<rect class="bar s-processed"') == 1
    assert "after its scheduled time" in page
    assert "8s after its scheduled time" in svg


def test_a_daemon_page_has_no_run_chart(client, auth, seed):
    assert "Recent runs" not in get(client, auth, "/processes/d")


# -- 4. the dashboard's last 24 hours ------------------------------------------------------------


def test_the_dashboard_draws_the_last_24_hours(client, auth, app_store, clock, seed):
    run(app_store, clock, seed.uow_id, seconds=90)
    task = tasks.submit(context(app_store, clock), "echo gantt")["task_id"]
    run(app_store, clock, task, seconds=30, trigger="fail")
    page = get(client, auth, "/")
    svg = re.search(r'<svg class="chart gantt".*?</svg>', page, re.S)[0]
    lanes = re.findall(r'<text class="lane"[^>]*><a href="/processes/(\w+)">', svg)
    assert lanes == ["h", "adhoc", "cron"]
    bars = re.findall(r'<rect class="bar s-(\w+)" data-state="\w+" x="([\d.]+)" y="([\d.]+)"', svg)
    assert [(s, float(y)) for s, _, y in bars] == [("processed", 4.0), ("invalid", 26.0)]
    # Ticks every three hours, the day named where it changes.
    ticks = re.findall(r'text-anchor="middle">(\d\d:\d\d)</text>', svg)
    assert ticks == ["15:00", "18:00", "21:00", "00:00", "03:00", "06:00", "09:00", "12:00"]
    assert re.findall(r'<text class="tick day"[^>]*>([^<]+)</text>', svg) == ["Jan 4", "Jan 5"]
    assert "<title>h 2026010511: processed, 2026-01-05 13:00:00Z" in svg


# -- 5. the unit of work's page ------------------------------------------------------------------


def test_a_worker_class_attempt_shows_its_output_and_what_it_returned(
    client, auth, app_store, clock, seed
):
    run(app_store, clock, seed.uow_id, seconds=2, trigger="finish_noop", returned="noop")
    page = get(client, auth, f"/uows/{seed.uow_id}")
    assert re.search(
        r'<dt>returned</dt><dd id="uow-exit"><span class="returned"[^>]*>noop</span></dd>', page
    )
    assert f'<pre class="output">output of {seed.uow_id}\n</pre>' in page


def test_a_run_that_lands_before_its_period_closed_is_not_said_to_land_after():
    # a continuous process's run of an open hour finishes 20 minutes before the hour ends
    from datetime import UTC, datetime

    from mx.services.runs import Run
    from mx.views.charts import durations

    start = datetime(2026, 1, 5, 13, 30, tzinfo=UTC)
    run = Run(
        process="c",
        uow_id="u1",
        state="processed",
        label="2026010513",
        started=start,
        finished=start + timedelta(minutes=10),
        seconds=600.0,
        landed_after=-1200.0,
        timeperiod="2026010513",
    )
    chart = durations([run], uow_href=lambda uow_id: f"/uows/{uow_id}")
    assert "20m 00s before" in chart.bars[0].title
    assert "20m 00s before its period closed" in chart.below.bars[0].title
    assert "after" not in chart.bars[0].title + chart.below.bars[0].title


def test_the_page_of_a_task_shows_its_messages_live_and_its_payload(client, auth, app_store, seed):
    # given a task with a payload that emitted three messages, the cap dropping one
    ctx = context(app_store, FakeClock(T0))
    task = tasks.submit(ctx, "echo hi", payload={"n": 1})
    app_store.append_messages(
        task["task_id"], 1, stamped(T0, "first", "<b>second</b>", "third"), limit=2
    )
    # when its page, and the fragment htmx polls, are read
    page = get(client, auth, f"/uows/{task['task_id']}")
    fragment = text(
        client.get(
            f"/uows/{task['task_id']}", headers={**auth.headers("viewer"), "HX-Request": "true"}
        )
    )
    # then both show the messages in order, escaped, with what the cap dropped
    for shown in (page, fragment):
        rows = re.findall(r'<td class="message mono">(.*?)</td>', shown)
        assert rows == ["first", "&lt;b&gt;second&lt;/b&gt;"]
        assert "1 later message(s) dropped" in shown
        assert f'href="/api/v1/payloads/{task["payload_id"]}"' in shown
    assert "No messages." in get(client, auth, f"/uows/{seed.uow_id}")
