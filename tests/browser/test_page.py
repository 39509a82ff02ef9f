"""The web page in a real browser against a real installation: log in, watch the grid go green,
reprocess a job and watch it go green again, create a freerun and see it fire, stop and start a
process on the supervisor page."""

from __future__ import annotations

import re

import psutil
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import LIVE, screenshot
from tests.fixtures.contexts.browser import HOURS_BACK

pytestmark = pytest.mark.slow


def processed_cell(page, process: str):
    return page.locator(f'tr[data-process="{process}"] a.cell[data-state="processed"]')


def test_log_in_and_see_the_grid_go_green(page):
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(
        page.locator('table.grid[data-section="hourly"] tr[data-process="rollup_hourly"]')
    ).to_be_visible()
    # The closed hours and days are processed by the real scheduler and workers, and the
    # freerun fires; htmx keeps the grid live without a reload.
    # (At least: an hour or a day may close while the test runs.)
    expect(processed_cell(page, "rollup_hourly").nth(HOURS_BACK - 1)).to_be_visible(timeout=LIVE)
    expect(processed_cell(page, "rollup_daily").nth(5)).to_be_visible(timeout=LIVE)
    expect(processed_cell(page, "ping").first).to_be_visible(timeout=LIVE)
    screenshot(page, "dashboard")


def test_reprocess_a_job_and_watch_it_go_green_again(page):
    expect(processed_cell(page, "rollup_hourly").first).to_be_visible(timeout=LIVE)
    processed_cell(page, "rollup_hourly").first.click()
    expect(page).to_have_url(re.compile(r"/jobs/rollup_hourly/\d{10}$"))
    state = page.locator("#job-state .badge")
    expect(state).to_have_attribute("data-state", "processed")
    uows_before = page.locator("#job table.list tbody tr[data-uow]").count()
    page.click("button:has-text('Reprocess')")  # the confirm dialog is accepted
    expect(page.locator(".flash.ok")).to_contain_text("Reprocessing rollup_hourly")
    # It goes back to work and returns to processed with one more unit of work; the page
    # follows on its own.
    expect(page.locator("#job table.list tbody tr[data-uow]")).to_have_count(
        uows_before + 1, timeout=LIVE
    )
    expect(state).to_have_attribute("data-state", "processed", timeout=LIVE)
    expect(page.locator("#job table.history")).to_contain_text("reprocess")
    # The new unit of work is the job's; the one before it is marked superseded.
    expect(page.locator("#job tr.current[data-uow]")).to_have_count(1)
    expect(page.locator("#job tr.superseded[data-uow]")).to_have_count(uows_before)


def test_create_a_freerun_and_see_it_fire(page):
    page.click("nav >> text=Processes")
    page.click("text=New freerun entry")
    page.fill("input[name=name]", "browser_tick")
    page.fill("input[name=trigger]", "every 2")
    page.fill("input[name=worker]", "tests.fixtures.workers:Succeeding")
    page.fill("input[name=description]", "Made in the browser test.")
    page.click("button:has-text('Create')")
    expect(page.locator(".flash.ok")).to_have_text("Created freerun entry browser_tick.")
    expect(page.locator("h1")).to_contain_text("browser_tick")
    screenshot(page, "freerun")
    # The supervisor starts a worker for it, the scheduler fires it, the worker runs it.
    page.goto("/?q=browser_tick")
    expect(processed_cell(page, "browser_tick").first).to_be_visible(timeout=LIVE)


def test_a_bad_trigger_is_refused_on_the_form(page):
    page.goto("/entries/new")
    page.fill("input[name=name]", "typo")
    page.fill("input[name=trigger]", "61 * * * *")
    page.fill("input[name=worker]", "tests.fixtures.workers:Succeeding")
    page.click("button:has-text('Create')")
    expect(page.locator(".flash.error")).to_contain_text("trigger")
    expect(page.locator("input[name=trigger]")).to_have_value("61 * * * *")
    page.goto("/processes")
    expect(page.locator('tr[data-process="typo"]')).to_have_count(0)


def test_stop_and_start_a_process_on_the_supervisor_page(page):
    page.click("nav >> text=Supervisor")
    row = page.locator('tr[data-process="sleeper"]')
    expect(row.locator(".state .badge")).to_have_attribute("data-state", "running", timeout=LIVE)
    pid = int(row.locator(".pid").inner_text())
    assert psutil.pid_exists(pid)
    screenshot(page, "supervisor")
    row.locator("button:has-text('Stop')").click()
    expect(page.locator(".flash.ok")).to_contain_text("to stop sleeper")
    row = page.locator('tr[data-process="sleeper"]')
    expect(row.locator(".state .badge")).to_have_attribute("data-state", "stopped", timeout=LIVE)
    assert not _alive(pid)
    row.locator("button:has-text('Start')").click()
    expect(row.locator(".state .badge")).to_have_attribute("data-state", "running", timeout=LIVE)
    new_pid = int(row.locator(".pid").inner_text())
    assert new_pid != pid
    assert _alive(new_pid)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
