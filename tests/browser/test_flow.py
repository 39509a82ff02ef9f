"""A flow run on the page in a real browser against a real installation: its DAG, a node that
changes colour when its step's state changes in the store (the live part, no reload), a node
that leads to its step's page, "Retry failed" on the canceled flow run, and the dashboard's
count of its steps.

The flow's process is disabled, so no worker of the installation runs it: the test moves its
steps through the funnel itself, as workers would, in the installation's store."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from db import open_store
from db.clock import SystemClock
from tests.browser.conftest import LIVE, screenshot
from tests.mx.flows import PageFlow, register_flow

pytestmark = pytest.mark.slow

#: The fill of a processed node (the stylesheet's ``--processed``).
PROCESSED_FILL = "rgb(46, 157, 91)"


@pytest.fixture
def flow(installation):
    store = open_store(f"sqlite:///{installation.directory / 'var' / 'tactus.db'}")
    clock = SystemClock()
    register_flow(
        store, clock, "flow_browser", enabled=False, description="A flow the test drives."
    )
    yield PageFlow(store, clock, "flow_browser")
    store.close()


def test_a_flow_runs_dag_follows_its_steps_and_retries_the_failed_ones(page, flow):
    run_id = flow.run.id
    page.goto(f"/uows/{run_id}")
    dag = page.locator("#flow svg.dag")
    expect(dag.locator("g.node")).to_have_count(4)
    expect(dag.locator("path.edge")).to_have_count(4)

    def node(step: str):
        return dag.locator(f'g.node[data-step="{step}"]')

    expect(node("extract")).to_have_attribute("data-state", "requested")
    expect(node("load")).to_have_attribute("data-state", "pending")
    expect(node("extract").locator("text.detail")).to_have_text("requested · #1")
    fill = node("extract").locator("rect").evaluate("rect => getComputedStyle(rect).fill")
    # when its step ends in the store, the node turns green without a reload
    page.evaluate("window.notReloaded = true")
    flow.end("extract")
    expect(node("extract")).to_have_attribute("data-state", "processed", timeout=LIVE)
    changed = node("extract").locator("rect").evaluate("rect => getComputedStyle(rect).fill")
    assert (fill, changed) != (PROCESSED_FILL, PROCESSED_FILL)
    assert changed == PROCESSED_FILL
    assert page.evaluate("window.notReloaded") is True
    expect(node("t1")).to_have_attribute("data-state", "requested")

    # a node leads to its step's page, which names its flow run
    dag.locator('a:has(g.node[data-step="t1"])').click()
    expect(page).to_have_url(re.compile(rf"/uows/{flow.get('t1').id}$"))
    expect(page.locator("#uow-step")).to_have_text("t1")
    expect(page.locator("#uow-parent")).to_have_text(run_id)

    # t1 fails for good, t2 succeeds: load can no longer run and the flow run is canceled
    flow.fail_for_good("t1")
    flow.end("t2")
    page.click("#uow-parent")
    expect(page.locator("#uow-state .badge")).to_have_attribute("data-state", "canceled")
    expect(node("t1")).to_have_attribute("data-state", "canceled")
    expect(node("load")).to_have_attribute("data-state", "upstream_failed")
    screenshot(page, "flow")
    page.click("button:has-text('Retry failed')")  # the confirm dialog is accepted
    expect(page.locator(".flash.ok")).to_have_text(
        f"Retrying flow run {run_id}: re-running load, t1."
    )
    expect(page.locator("#uow-state .badge")).to_have_attribute("data-state", "in_progress")
    expect(node("t1")).to_have_attribute("data-state", "requested")
    expect(node("t1").locator("text.detail")).to_have_text("requested · #2")
    expect(node("load")).to_have_attribute("data-state", "pending")
    expect(node("t2")).to_have_attribute("data-state", "processed")
    expect(page.locator("button:has-text('Retry failed')")).to_have_count(0)

    # the dashboard counts the steps of the process's newest run
    page.goto("/?q=flow_browser")
    steps = page.locator('tr[data-process="flow_browser"] a.steps')
    expect(steps).to_have_text("2/4 steps")
    expect(steps).to_have_attribute("href", f"/uows/{run_id}")
