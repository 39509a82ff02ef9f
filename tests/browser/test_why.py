"""The why panel in a real browser against a real installation: the job page of today's daily
period says it is not due yet, and until when, with the facts the API gives."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import LIVE

pytestmark = pytest.mark.slow


def test_the_job_page_says_why_todays_period_has_not_run(page):
    # once the scheduler has caught up on the closed days
    expect(
        page.locator('tr[data-process="rollup_daily"] a.cell[data-state="processed"]').first
    ).to_be_visible(timeout=LIVE)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    timeperiod = today.strftime("%Y%m%d00")
    ends_at = (today + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    page.goto(f"/jobs/rollup_daily/{timeperiod}")
    panel = page.locator("#why")
    expect(panel).to_be_visible()
    reason = panel.locator('.why-reason[data-code="not_due"]')
    expect(reason).to_contain_text(f"the period {timeperiod} has not ended yet")
    expect(reason.locator('dd[data-fact="ends_at"]')).to_have_text(ends_at)
    # the facts the page carries are the API's
    facts = json.loads(reason.get_attribute("data-facts"))
    answer = page.request.get(f"/api/v1/processes/rollup_daily/why?timeperiod={timeperiod}")
    assert answer.ok
    api = {r["code"]: r["facts"] for r in answer.json()["reasons"]}
    assert api["not_due"] == facts
