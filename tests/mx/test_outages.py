"""mx during an outage of the store or the broker (SPEC section 15): a unit of work stored while
the broker is away is accepted (202) and published when the broker is back, an action that
answers an error changed nothing, every route answers 503 ``store_unavailable`` while the store
is away (the page with a readable page), and ``/metrics`` and ``/health`` say so."""

from __future__ import annotations

import logging

import pytest

from db.credentials import Role
from db.models import UowQuery
from tests.mx.conftest import ROUTES, snapshot
from tests.polling import wait_until


def _uows(store, process):
    return store.find_uows(UowQuery(process=process), limit=100).items


def test_trigger_while_the_broker_is_away_is_202_and_published_when_it_is_back(
    client, auth, app_store, seed, recording_broker
):
    # given the broker away
    recording_broker.down = True
    # when a freerun is triggered
    response = client.post("/api/v1/processes/cron/trigger", headers=auth.headers(Role.OPERATOR))
    # then the unit of work is stored and the answer says it waits for the broker
    assert response.status_code == 202, response.json
    assert response.json["published"] is False
    uow_id = response.json["uow"]["id"]
    assert [u.id for u in _uows(app_store, "cron")] == [uow_id]
    # and a client's retry does not make a second run (max_active 1 holds it)
    again = client.post("/api/v1/processes/cron/trigger", headers=auth.headers(Role.OPERATOR))
    assert again.status_code == 409
    assert [u.id for u in _uows(app_store, "cron")] == [uow_id]
    assert uow_id not in recording_broker.uow_ids()
    # when the broker is back, the announcer publishes it, once
    recording_broker.down = False
    wait_until(lambda: uow_id in recording_broker.uow_ids(), what="the unit published")
    assert recording_broker.uow_ids().count(uow_id) == 1
    assert client.application.extensions["tactus"].announcer.pending == 0


def test_trigger_with_the_broker_up_is_201_and_published_at_once(
    client, auth, seed, recording_broker
):
    response = client.post("/api/v1/processes/cron/trigger", headers=auth.headers(Role.OPERATOR))
    assert response.status_code == 201
    assert response.json["published"] is True
    assert response.json["uow"]["id"] in recording_broker.uow_ids()


def test_task_submitted_while_the_broker_is_away_is_202_and_published_later(
    client, auth, app_store, seed, recording_broker
):
    recording_broker.down = True
    response = client.post(
        "/api/v1/tasks", json={"command": "echo hi"}, headers=auth.headers(Role.ADMIN)
    )
    assert response.status_code == 202, response.json
    assert response.json["published"] is False
    task_id = response.json["task_id"]
    assert app_store.get_uow(task_id).state == "requested"
    recording_broker.down = False
    wait_until(lambda: task_id in recording_broker.uow_ids(), what="the task published")


def test_requests_meeting_a_known_broker_outage_do_not_try_the_broker(
    client, auth, seed, recording_broker, caplog
):
    # given an outage mx has seen (one trigger met it)
    caplog.set_level(logging.WARNING, logger="tactus")
    rt = client.application.extensions["tactus"]
    recording_broker.down = True
    client.post("/api/v1/processes/cron/trigger", headers=auth.headers(Role.OPERATOR))
    assert not rt.broker_outage.up
    # when more requests come, they are answered without waiting for the broker, and the
    # outage is logged once however many meet it
    for _ in range(5):
        response = client.post(
            "/api/v1/tasks", json={"command": "true"}, headers=auth.headers(Role.ADMIN)
        )
        assert response.status_code == 202
    started = [r for r in caplog.records if "broker unavailable" in r.getMessage()]
    assert len(started) == 1
    # and when it is back, all of them are published
    recording_broker.down = False
    wait_until(lambda: rt.announcer.pending == 0 and rt.broker_outage.up, what="drained")


#: Actions whose only message is a wake of the scheduler: with the broker away they succeed
#: (the change is stored; the scheduler looks on its own), never 503.
WAKING = [
    ("POST", "/api/v1/jobs/h/2026010511/reprocess", None, 200),
    ("POST", "/api/v1/jobs/h/2026010512/skip", None, 200),
    ("POST", "/api/v1/uows/{task}/cancel", None, 200),
    ("PATCH", "/api/v1/processes/cron", {"enabled": False}, 200),
    ("PATCH", "/api/v1/processes/cron", {"retries": 5}, 200),
    ("POST", "/api/v1/processes", {"name": "x", "trigger": "every 60", "command": ["true"]}, 201),
    ("DELETE", "/api/v1/processes/cron", None, 200),
    ("POST", "/api/v1/processes/h/trigger", None, 202),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), WAKING)
def test_an_action_whose_wake_cannot_be_sent_still_succeeds(
    client, auth, app_store, seed, recording_broker, method, path, body, status
):
    before = snapshot(app_store)
    recording_broker.down = True
    response = client.open(
        path.format(task=seed.task_id), method=method, json=body, headers=auth.headers(Role.ADMIN)
    )
    assert response.status_code == status, response.json
    assert snapshot(app_store) != before  # the change is stored
    assert recording_broker.published == []


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_every_route_answers_503_store_unavailable_while_the_store_is_away(
    client, auth, app_store, seed, store_switch, route
):
    headers = auth.headers(route.role)
    csrf = auth.login(Role.ADMIN) if route.path == "/logout" else None
    if csrf:
        headers = {"X-CSRF-Token": csrf}
    if route.path == "/metrics":
        client.get("/metrics", headers=headers)  # a scraper's token, seen before the outage
    before = snapshot(app_store)
    store_switch.down = True
    response = client.open(route.url(seed), method=route.method, json=route.json, headers=headers)
    store_switch.down = False
    if route.path == "/metrics":
        # the scrape is the probe: it answers, and says the store is down
        assert response.status_code == 200
        assert "tactus_store_up 0.0" in response.get_data(as_text=True)
    else:
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.json["error"]["code"] == "store_unavailable"
    after = snapshot(app_store)
    assert after["processes"] == before["processes"] and after["jobs"] == before["jobs"]
    assert after["uows"] == before["uows"]


PAGES = ["/", "/jobs", "/uows", "/processes", "/processes/cron", "/supervisor", "/workers"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_answer_a_readable_503_while_the_store_is_away(
    client, auth, seed, store_switch, path
):
    auth.login(Role.VIEWER)
    store_switch.down = True
    response = client.get(path, headers={"Accept": "text/html"})
    assert response.status_code == 503
    assert response.mimetype == "text/html"
    assert "store unavailable" in response.get_data(as_text=True)


def test_health_reports_the_outages_and_never_fails(client, seed, store_switch, recording_broker):
    store_switch.down = True
    recording_broker.down = True
    response = client.get("/api/v1/health")
    assert response.status_code == 503, response.json
    assert response.json["store"] == "unavailable" and response.json["broker"] == "unavailable"
    assert response.json["status"] == "degraded"
    store_switch.down = recording_broker.down = False
    assert client.get("/api/v1/health").status_code == 200


def test_metrics_show_the_broker_down_and_count_outages(
    client, auth, seed, store_switch, recording_broker
):
    headers = auth.headers(Role.VIEWER)
    recording_broker.down = True
    text = client.get("/metrics", headers=headers).get_data(as_text=True)
    assert "tactus_broker_up 0.0" in text and "tactus_store_up 1.0" in text
    assert "tactus_broker_outages_total 1.0" in text
    recording_broker.down = False
    store_switch.down = True
    text = client.get("/metrics", headers=headers).get_data(as_text=True)
    assert "tactus_broker_up 1.0" in text and "tactus_store_up 0.0" in text
    assert "tactus_store_outages_total 1.0" in text
    store_switch.down = False
    text = client.get("/metrics", headers=headers).get_data(as_text=True)
    assert "tactus_store_up 1.0" in text and "tactus_store_outages_total 1.0" in text


def test_the_store_outage_is_logged_once_for_many_requests(
    client, auth, seed, store_switch, caplog
):
    caplog.set_level(logging.WARNING, logger="tactus")
    headers = auth.headers(Role.VIEWER)
    store_switch.down = True
    for _ in range(10):
        assert client.get("/api/v1/jobs", headers=headers).status_code == 503
    store_switch.down = False
    assert client.get("/api/v1/jobs", headers=headers).status_code == 200
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("tactus")]
    assert len([m for m in messages if m.startswith("store unavailable")]) == 1
    assert len([m for m in messages if m.startswith("store available again")]) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_token_never_seen_cannot_scrape_during_a_store_outage(client, auth, seed, store_switch):
    store_switch.down = True
    response = client.get("/metrics", headers=auth.headers(Role.VIEWER))
    assert response.status_code == 503
    assert response.json["error"]["code"] == "store_unavailable"


def test_the_page_says_a_trigger_waits_for_the_broker(
    client, auth, app_store, seed, recording_broker
):
    csrf = auth.login(Role.OPERATOR)
    recording_broker.down = True
    response = client.post(
        "/processes/cron/trigger",
        data={"csrf_token": csrf},
        headers={"Accept": "text/html"},
        follow_redirects=True,
    )
    assert response.status_code == 200
    assert "is stored; the broker is away" in response.get_data(as_text=True)
    assert len(_uows(app_store, "cron")) == 1
