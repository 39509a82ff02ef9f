"""The parts of the page issue 13 asked for, in a real browser against a real installation: the
grid's date labels and legend, the last 24 hours on the dashboard, a job's children, dependency
and current unit of work after a reprocess, and a process's duration chart."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import LIVE, screenshot
from tests.browser.test_page import processed_cell
from tests.fixtures.contexts.browser import HOURS_BACK

pytestmark = pytest.mark.slow


def test_the_grid_names_days_hours_and_months_and_shows_its_legend(page):
    now = datetime.now(UTC)
    hourly = page.locator('table.grid[data-section="hourly"]')
    # The hour columns, the newest on the right, under a row naming their days.
    columns = hourly.locator("tr.columns th[data-timeperiod]")
    expect(columns).to_have_count(24)
    last = columns.last
    expect(last).to_have_attribute("data-timeperiod", re.compile(r"^\d{10}$"))
    newest = last.get_attribute("data-timeperiod")
    hour = datetime.strptime(newest, "%Y%m%d%H").replace(tzinfo=UTC)
    assert abs(hour - now.replace(minute=0, second=0, microsecond=0)) <= timedelta(hours=1)
    expect(last).to_have_text(hour.strftime("%H"))
    expect(last).to_have_attribute("title", hour.strftime("%Y-%m-%d %H:00 UTC"))
    days = hourly.locator("tr.groups th.group")
    expect(days.last).to_have_text(hour.strftime("%a %b %-d"))
    expect(days.first).to_have_text((hour - timedelta(hours=23)).strftime("%a %b %-d"))
    # The daily grid names its months.
    daily = page.locator('table.grid[data-section="daily"] tr.groups th.group')
    expect(daily.last).to_have_text(hour.strftime("%b %Y"))
    # Freerun rows are labelled with their runs' times.
    expect(processed_cell(page, "ping").first).to_be_visible(timeout=LIVE)
    instants = page.locator('tr.instants[data-runs-of="ping"] span')
    expect(instants.last).to_have_text(re.compile(r"^\d\d:\d\d$"))
    # The colours are explained on the page, not behind a click.
    legend = page.locator("#legend")
    expect(legend).to_be_visible()
    for state in ("embryo", "in_progress", "final_run", "processed", "skipped", "noop"):
        expect(legend.locator(f".badge.s-{state}").first).to_be_visible()
    expect(legend).to_contain_text("Units of work")
    expect(legend.locator(".badge.s-invalid")).to_be_visible()


def test_the_dashboard_draws_the_last_24_hours(page):
    expect(processed_cell(page, "rollup_hourly").nth(HOURS_BACK - 1)).to_be_visible(timeout=LIVE)
    gantt = page.locator("svg.chart.gantt")
    expect(gantt).to_be_visible()
    lanes = gantt.locator("text.lane")
    expect(lanes.first).to_have_text("rollup_hourly")
    expect(lanes.filter(has_text="ping")).to_have_count(1)
    # A bar per run of the last day: at least the closed hours and the ping's fires; hour
    # labels on the axis.
    bars = gantt.locator("rect.bar")
    expect(bars.first).to_be_visible()
    assert bars.count() >= HOURS_BACK + 1
    expect(gantt.locator("rect.bar.s-processed").first).to_be_visible()
    ticks = gantt.locator("text.tick:not(.day)")
    assert ticks.count() >= 7
    assert all(re.fullmatch(r"\d\d:00", t) for t in ticks.all_text_contents())
    # Every bar says what it was.
    assert "rollup_hourly" in bars.first.locator("title").text_content()


def test_a_daily_job_lists_its_hours_and_its_dependents_wait_for_it(page):
    today = datetime.now(UTC).strftime("%Y%m%d00")
    page.goto(f"/jobs/rollup_daily/{today}")
    children = page.locator('.relation[data-relation="children"][data-process="rollup_hourly"]')
    expect(children).to_be_visible()
    expect(children.locator("h3")).to_contain_text("Children rollup_hourly")
    made = children.locator("a.badge[data-timeperiod]")
    expect(made.first).to_be_visible()
    expect(made.first).to_have_attribute("data-timeperiod", re.compile(f"^{today[:8]}"))
    # Every hour of the day is either a job (with its state), said to be not created yet, or
    # (after noon UTC, when the hourly process starts later the same day) counted among the
    # hours before its first period, which never get a job.
    not_yet = children.locator('span.badge[title="no job yet"]')
    note = children.locator("p.empty")
    before_first = int(note.text_content().split()[0]) if note.count() else 0
    assert made.count() + not_yet.count() + before_first == 24
    made.first.click()
    expect(page).to_have_url(re.compile(rf"/jobs/rollup_hourly/{today[:8]}\d\d$"))
    # The report of a closed day waits for that day's rollup, and shows its state.
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y%m%d00")
    page.goto(f"/jobs/report_daily/{yesterday}")
    dependency = page.locator('.relation[data-relation="dependency"][data-process="rollup_daily"]')
    expect(dependency).to_be_visible()
    rollup = dependency.locator(f'a.badge[data-timeperiod="{yesterday}"]')
    expect(rollup).to_have_attribute("data-state", "processed", timeout=LIVE)
    expect(dependency.locator("h3 .tag")).to_have_text("all done", timeout=LIVE)


def test_after_a_reprocess_the_job_marks_its_current_unit_and_draws_its_attempts(page):
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y%m%d00")
    page.goto(f"/jobs/rollup_daily/{day}")
    state = page.locator("#job-state .badge")
    expect(state).to_have_attribute("data-state", "processed", timeout=LIVE)
    rows = page.locator("#job table.list tbody tr[data-uow]")
    before = rows.count()
    page.click("button:has-text('Reprocess')")
    expect(page.locator(".flash.ok")).to_contain_text("Reprocessing rollup_daily")
    expect(rows).to_have_count(before + 1, timeout=LIVE)
    expect(state).to_have_attribute("data-state", "processed", timeout=LIVE)
    # The newest unit of work is the job's; the older ones were superseded.
    current = page.locator("#job tr.current[data-uow]")
    expect(current).to_have_count(1)
    expect(current.locator(".tag.current")).to_have_text("current")
    expect(rows.first).to_have_class(re.compile("current"))
    expect(page.locator("#job tr.superseded[data-uow]")).to_have_count(before)
    # What the worker class returned stands in the exit column.
    expect(current.locator(".returned")).to_have_text("processed", timeout=LIVE)
    # One bar per attempt on the timeline, the current one marked.
    timeline = page.locator("svg.chart.timeline")
    expect(timeline).to_be_visible()
    expect(timeline.locator("rect.bar")).to_have_count(before + 1, timeout=LIVE)
    expect(timeline.locator("rect.bar.current")).to_have_count(1)
    expect(timeline.locator("text.lane.current")).to_have_text(
        re.compile(rf"^{current.get_attribute('data-uow')} #1$")
    )
    screenshot(page, "job")


def test_the_process_page_charts_its_run_durations(page):
    expect(processed_cell(page, "rollup_hourly").nth(HOURS_BACK - 1)).to_be_visible(timeout=LIVE)
    page.goto("/processes/rollup_hourly")
    chart = page.locator("svg.chart.durations")
    expect(chart).to_be_visible()
    table = page.locator("#runs table.runs tbody tr")
    runs = table.count()
    assert runs >= HOURS_BACK
    # One bar per run, and one landing mark per finished run.
    expect(chart.locator("rect.bar:not(.s-landed)")).to_have_count(runs)
    finished = page.locator("#runs table.runs tbody tr td:nth-child(6):not(:empty)").count()
    expect(chart.locator("rect.bar.s-landed")).to_have_count(finished)
    expect(chart.locator("text.lane").first).to_contain_text("took")
    title = chart.locator("rect.bar:not(.s-landed) title").first.text_content()
    assert re.search(r"^\d{10}: processed, took [\d.]+s", title), title
    # A closed hour landed after its period closed, and the table says by how much.
    expect(page.locator("#runs table.runs tbody tr").first.locator("td").nth(6)).to_have_text(
        re.compile(r"^\d+[smhd]")
    )
    screenshot(page, "process")
