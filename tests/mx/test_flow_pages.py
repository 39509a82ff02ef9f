"""Flows on the page (SPEC sections 7 and 10), through Flask's test client: a flow run's DAG on
its page and on its job's page (a node per step coloured by its state and linked to the step's
page, refreshed with the rest of the live part), a step's page naming its flow run, "Retry
failed" for operators on a canceled flow run, and the dashboard's progress of a flow process."""

from __future__ import annotations

import re

import pytest

from db import flows
from db.models import UowQuery
from db.states import JobState, UowState
from mx.views import dag
from tests.mx.conftest import register
from tests.mx.flows import WAVES, PageFlow, register_flow
from tests.mx.test_page_views import run_pass
from tests.mx.test_pages import flashed, post, text

#: The header of an htmx poll: the page answers with its live part only.
HTMX = {"HX-Request": "true"}


def page(client, auth, path: str, role: str = "viewer", **headers: str) -> str:
    response = client.get(path, headers={**auth.headers(role), **headers})
    assert response.status_code == 200, text(response)[:500]
    return text(response)


def nodes(html: str) -> dict[str, dict[str, str]]:
    """The DAG's nodes by step: their state, class, link and box."""
    found = {}
    for match in re.finditer(
        r'(?:<a href="(?P<href>[^"]+)">)?<g class="node (?P<cls>[^"]+)" data-step="(?P<step>\w+)"'
        r' data-state="(?P<state>\w+)"><title>(?P<title>[^<]*)</title><rect x="(?P<x>[\d.]+)"'
        r' y="(?P<y>[\d.]+)"[^>]*/><text class="name"[^>]*>(?P<name>[^<]*)</text>'
        r'<text class="detail"[^>]*>(?P<detail>[^<]*)</text>',
        html,
    ):
        found[match["step"]] = match.groupdict()
    return found


@pytest.fixture
def flow(app, app_store, clock) -> PageFlow:
    register_flow(app_store, clock)
    return PageFlow(app_store, clock, "etl")


# -- the DAG ---------------------------------------------------------------------------------------


def test_the_flow_run_page_draws_a_node_per_step_linked_to_its_page(client, auth, flow):
    html = page(client, auth, f"/uows/{flow.run.id}")
    drawn = nodes(html)
    steps = {name: uow.id for name, uow in flows.steps_of(flow.store, flow.run.id).items()}
    assert set(drawn) == set(WAVES)
    for name, node in drawn.items():
        assert node["href"] == f"/uows/{steps[name]}"
        assert node["name"] == name
    # columns by dependency depth, the steps of a wave one under the other
    columns = sorted({float(n["x"]) for n in drawn.values()})
    assert {name: columns.index(float(n["x"])) for name, n in drawn.items()} == WAVES
    assert drawn["t1"]["y"] != drawn["t2"]["y"]
    # an edge from each upstream step to its dependent
    edges = set(re.findall(r'<path class="edge[^"]*" data-from="(\w+)" data-to="(\w+)"', html))
    assert edges == {("extract", "t1"), ("extract", "t2"), ("t1", "load"), ("t2", "load")}
    assert "<script" not in html.split('<svg class="dag"')[1].split("</svg>")[0]


def test_each_node_takes_its_step_state_and_attempt(client, auth, flow):
    flow.end("extract")
    flow.fail_for_good("t1")
    flow.claim("t2")
    drawn = nodes(page(client, auth, f"/uows/{flow.run.id}"))
    states = {name: n["state"] for name, n in drawn.items()}
    assert states == {
        "extract": "processed",
        "t1": "canceled",
        "t2": "in_progress",
        "load": "pending",  # judged once t2 ended too
    }
    for name, node in drawn.items():
        assert node["cls"] == f"s-{states[name]}"
        assert node["detail"] == f"{states[name].replace('_', ' ')} · #1"
    assert "step t1: canceled, attempt 1" in drawn["t1"]["title"]
    assert "after t1, t2 (all_succeeded)" in drawn["load"]["title"]
    flow.finish("t2")
    drawn = nodes(page(client, auth, f"/uows/{flow.run.id}"))
    assert (drawn["load"]["state"], drawn["load"]["cls"]) == (
        "upstream_failed",
        "s-upstream_failed",
    )


def test_the_legend_and_the_stylesheet_colour_the_step_states(client, auth, flow):
    html = page(client, auth, f"/uows/{flow.run.id}")
    legend = re.search(r'<p class="legend dag-legend">(.*?)</p>', html, re.S)[1]
    shown = re.findall(r'class="badge s-(\w+)"', legend)
    assert "pending" in shown and "upstream_failed" in shown
    assert set(shown) == {s.value for s in dag.STEP_STATES}
    css = text(client.get("/static/tactus.css"))
    for state in shown:
        assert re.search(rf"\.s-{state}\b[^{{]*\{{[^}}]*fill: var\(--{state}\)", css), state
    # the dashboard's legend names them too
    assert 'class="badge s-upstream_failed"' in page(client, auth, "/")


def test_the_dag_is_in_the_live_part_and_follows_the_store(client, auth, flow):
    path = f"/uows/{flow.run.id}"
    fragment = page(client, auth, path, **HTMX)
    assert fragment.lstrip().startswith('<section id="uow"')
    assert nodes(fragment)["extract"]["state"] == "requested"
    flow.end("extract")
    assert nodes(page(client, auth, path, **HTMX))["extract"]["state"] == "processed"


def test_a_step_page_names_its_flow_run_and_step(client, auth, flow):
    step = flow.get("t2")
    html = page(client, auth, f"/uows/{step.id}")
    assert re.search(r'<dd class="mono" id="uow-step">t2</dd>', html)
    assert f'<a id="uow-parent" href="/uows/{flow.run.id}">{flow.run.id}</a>' in html
    assert '<svg class="dag"' not in html


def test_a_flow_run_not_expanded_yet_says_so(client, auth, app_store, clock):
    register_flow(app_store, clock)
    csrf = auth.login("operator")
    assert post(client, "/processes/etl/trigger", csrf).status_code == 303
    (run,) = app_store.find_uows(UowQuery(process="etl"), limit=5).items
    assert run.flow and run.state is UowState.REQUESTED
    html = page(client, auth, f"/uows/{run.id}")
    assert "No steps yet" in html and '<svg class="dag"' not in html


def test_layout_leaves_out_unknown_upstream_and_draws_nothing_without_steps():
    assert dag.layout([], step_href=str) is None
    chart = dag.layout(
        [
            {**_step("a"), "upstream": ["gone"]},
            {**_step("b"), "upstream": ["a"]},
        ],
        step_href=lambda uow_id: f"/uows/{uow_id}",
    )
    assert [(n.name, n.state, n.href, n.detail) for n in chart.nodes] == [
        ("a", "none", None, "not created yet"),
        ("b", "none", None, "not created yet"),
    ]
    assert [(e.source, e.target, e.done) for e in chart.edges] == [("a", "b", False)]
    assert chart.nodes[1].x > chart.nodes[0].x


def _step(name: str) -> dict:
    return {
        "name": name,
        "upstream": [],
        "run_if": "all_succeeded",
        "uow_id": None,
        "state": None,
        "attempt": None,
        "started_at": None,
        "finished_at": None,
        "exit_code": None,
        "error": None,
    }


# -- retry failed ----------------------------------------------------------------------------------

RETRY = "Retry failed"


def test_retry_failed_is_offered_to_operators_on_a_canceled_flow_run_only(client, auth, flow):
    path = f"/uows/{flow.run.id}"
    assert RETRY not in page(client, auth, path, "operator")  # in progress
    flow.cancel_by_failure()
    assert flow.flow_run().state is UowState.CANCELED
    html = page(client, auth, path, "operator")
    assert f'action="/uows/{flow.run.id}/retry-failed"' in html
    assert RETRY in html and 'name="csrf_token"' in html
    assert RETRY not in page(client, auth, path, "viewer")
    # not on a step, nor on a unit of work that is not a flow run
    assert RETRY not in page(client, auth, f"/uows/{flow.get('t1').id}", "operator")


def test_retry_failed_from_the_page_reruns_the_failed_steps(client, auth, app_store, flow):
    flow.cancel_by_failure()
    csrf = auth.login("operator")
    path = f"/uows/{flow.run.id}"
    response = post(client, f"{path}/retry-failed", csrf, next=path)
    assert response.location == path
    assert f"Retrying flow run {flow.run.id}: re-running load, t1." in flashed(client, response)
    assert flow.flow_run().state is UowState.IN_PROGRESS
    states = flow.states()
    assert states["extract"] is UowState.PROCESSED and states["t2"] is UowState.PROCESSED
    assert states["t1"] is UowState.REQUESTED and states["load"] is UowState.PENDING
    assert flow.get("t1").attempt == 2
    drawn = nodes(page(client, auth, path))
    assert drawn["t1"]["state"] == "requested" and drawn["t1"]["detail"] == "requested · #2"
    assert any(
        e.trigger == "retry_failed" and e.actor == "user user_operator"
        for e in app_store.history("uow", flow.run.id)
    )


def test_retry_failed_of_a_flow_run_in_progress_is_refused(client, auth, app_store, flow):
    csrf = auth.login("operator")
    before = flow.flow_run()
    response = post(client, f"/uows/{flow.run.id}/retry-failed", csrf)
    assert re.search(
        r"Refused: uow \w+: cannot retry_failed from state in_progress", flashed(client, response)
    )
    assert flow.flow_run() == before
    # the API says 409, and names the refusal
    answer = client.post(
        f"/api/v1/uows/{flow.run.id}/retry-failed", headers=auth.headers("operator")
    )
    assert answer.status_code == 409
    assert answer.json["error"]["code"] == "transition_refused"


def test_retry_failed_needs_an_operator_and_the_csrf_token(client, auth, app_store, flow):
    flow.cancel_by_failure()
    csrf = auth.login("viewer")
    assert post(client, f"/uows/{flow.run.id}/retry-failed", csrf).status_code == 403
    other = client.application.test_client()
    auth.login("operator", client=other)
    assert other.post(f"/uows/{flow.run.id}/retry-failed", data={}).status_code == 403
    assert flow.flow_run().state is UowState.CANCELED


def test_retry_failed_of_a_unit_that_is_not_a_flow_run_is_refused(client, auth, seed):
    csrf = auth.login("operator")
    response = post(client, f"/uows/{seed.finished_uow_id}/retry-failed", csrf)
    assert "it is not a flow run" in flashed(client, response)


# -- the job page ----------------------------------------------------------------------------------


@pytest.fixture
def managed_flow(app, app_store, clock) -> PageFlow:
    register_flow(
        app_store,
        clock,
        "hflow",
        kind="managed",
        time_qualifier="hourly",
        start_timeperiod="2026010512",
        lag=0,
        trigger=None,
    )
    run_pass(app_store, clock)
    job = app_store.get_job("hflow", "2026010512")
    return PageFlow(app_store, clock, "hflow", app_store.get_uow(job.uow_id))


def test_the_job_page_draws_its_flow_run_and_retries_it(client, auth, app_store, managed_flow):
    flow = managed_flow
    path = "/jobs/hflow/2026010512"
    html = page(client, auth, path, "operator")
    assert set(nodes(html)) == set(WAVES)
    assert f'Steps of flow run <a href="/uows/{flow.run.id}">' in html
    # the steps are in the DAG, not in the job's list of units of work
    assert re.findall(r'<tr data-uow="(\w+)"', html) == [flow.run.id]
    assert RETRY not in html
    fragment = page(client, auth, path, **HTMX)
    assert fragment.lstrip().startswith('<section id="job"') and '<svg class="dag"' in fragment
    flow.cancel_by_failure()
    run_pass(app_store, flow.clock)
    assert app_store.get_job("hflow", "2026010512").state is JobState.SKIPPED
    html = page(client, auth, path, "operator")
    assert nodes(html)["load"]["state"] == "upstream_failed"
    assert f'action="/uows/{flow.run.id}/retry-failed"' in html
    assert RETRY not in page(client, auth, path, "viewer")
    csrf = auth.login("operator")
    response = post(client, f"/uows/{flow.run.id}/retry-failed", csrf, next=path)
    assert response.location == path
    shown = flashed(client, response)
    assert "re-running load, t1" in shown, re.findall(r'<p class="flash[^"]*"[^>]*>[^<]*', shown)
    assert app_store.get_job("hflow", "2026010512").state is JobState.IN_PROGRESS


# -- the dashboard ---------------------------------------------------------------------------------


def _row(html: str, process: str) -> str:
    return re.search(rf'<tr data-process="{process}">(.*?)</tr>', html, re.S)[1]


def test_the_dashboard_shows_a_flow_run_and_its_progress_not_its_steps(
    client, auth, app_store, clock, flow
):
    flow.end("extract")
    flow.end("t1")
    row = _row(page(client, auth, "/"), "etl")
    # one cell for the run (its steps are not runs of their own), with its progress
    assert re.findall(r'<a class="cell s-(\w+)"', row) == ["in_progress"]
    assert re.search(
        rf'<a class="steps" href="/uows/{flow.run.id}" title="flow run {flow.run.id}: 2 of 4 '
        r'steps ended" data-ended="2" data-total="4">2/4 steps</a>',
        row,
    )
    assert '<rect class="done" width="7.0" height="4"/>' in row
    flow.fail_for_good("t2")
    row = _row(page(client, auth, "/"), "etl")
    assert "4/4 steps" in row and "(2 failed)" in row
    assert re.findall(r'<a class="cell s-(\w+)"', row) == ["canceled"]


def test_the_dashboard_shows_a_managed_flow_jobs_progress(client, auth, managed_flow):
    managed_flow.end("extract")
    row = _row(page(client, auth, "/"), "hflow")
    assert "1/4 steps" in row
    assert row.count('<svg class="progress"') == 1


def test_a_process_without_steps_shows_no_progress(client, auth, app_store, clock, seed):
    register(app_store, clock, name="plain", kind="freerun", trigger="every 60", command=["true"])
    html = page(client, auth, "/")
    assert 'class="steps"' not in html and 'svg class="progress"' not in html
