"""``/api/v1/jobs``, ``/uows``, ``/tasks``, ``/boxes`` and ``/workers``: what each answers and
what each action changes."""

from __future__ import annotations

from datetime import timedelta

from db.credentials import Role
from db.states import UowState


def test_jobs_list_newest_first_with_filters_and_pages(client, auth, seed):
    headers = auth.headers(Role.VIEWER)
    body = client.get("/api/v1/jobs", headers=headers).json
    assert [j["timeperiod"] for j in body["items"]] == ["2026010513", "2026010512", "2026010511"]
    body = client.get("/api/v1/jobs?state=embryo,in_progress&limit=2", headers=headers).json
    assert len(body["items"]) == 2 and body["next_cursor"]
    rest = client.get(f"/api/v1/jobs?limit=2&cursor={body['next_cursor']}", headers=headers)
    assert [j["timeperiod"] for j in rest.json["items"]] == ["2026010511"]
    body = client.get("/api/v1/jobs?from=2026010512&to=2026010513", headers=headers).json
    assert [j["timeperiod"] for j in body["items"]] == ["2026010512"]
    body = client.get("/api/v1/jobs?process=ghost", headers=headers).json
    assert body == {"items": [], "next_cursor": None}


def test_jobs_get_has_uows_and_history(client, auth, seed):
    body = client.get("/api/v1/jobs/h/2026010511", headers=auth.headers(Role.VIEWER)).json
    assert body["state"] == "in_progress"
    assert [u["id"] for u in body["uows"]] == [seed.uow_id]
    assert [e["to"] for e in body["history"]] == ["in_progress"]


def test_jobs_reprocess_and_skip_return_the_changed_jobs(client, auth, seed, app_store):
    headers = auth.headers(Role.OPERATOR)
    response = client.post("/api/v1/jobs/h/2026010512/skip", headers=headers)
    assert [(j["timeperiod"], j["state"]) for j in response.json["changed"]] == [
        ("2026010512", "skipped")
    ]
    response = client.post("/api/v1/jobs/h/2026010512/reprocess", headers=headers)
    assert [(j["timeperiod"], j["state"]) for j in response.json["changed"]] == [
        ("2026010512", "embryo")
    ]
    history = app_store.history("job", "h/2026010512")
    assert [e.actor for e in history][-2:] == ["token operator", "token operator"]


def test_uows_list_filters_and_get_has_history(client, auth, seed):
    headers = auth.headers(Role.VIEWER)
    body = client.get("/api/v1/uows?process=adhoc&state=canceled", headers=headers).json
    assert [u["id"] for u in body["items"]] == [seed.finished_uow_id]
    body = client.get(f"/api/v1/uows/{seed.finished_uow_id}", headers=headers).json
    assert body["state"] == "canceled"
    assert [e["to"] for e in body["history"]] == ["requested", "canceled"]


def test_uows_cancel(client, auth, seed, app_store):
    response = client.post(f"/api/v1/uows/{seed.uow_id}/cancel", headers=auth.headers("operator"))
    assert response.status_code == 200 and response.json["state"] == "canceled"
    assert app_store.get_uow(seed.uow_id).state is UowState.CANCELED
    assert app_store.history("uow", seed.uow_id)[-1].actor == "token operator"


def test_tasks_submit_is_201_and_status_follows(client, auth, clock, recording_broker):
    at = (clock.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = client.post(
        "/api/v1/tasks",
        json={"command": "echo {not a placeholder}", "scheduled_at": at, "retries": 2},
        headers=auth.headers(Role.ADMIN),
    )
    assert response.status_code == 201, response.json
    task = response.json
    assert task["state"] == "requested" and task["retries"] == 2
    assert task["scheduled_at"] == "2026-01-05T14:00:00Z"
    queue, message, delay = recording_broker.published[-1]
    assert (queue, message.uow_id, delay) == ("tactus.adhoc", task["task_id"], timedelta(hours=1))
    body = client.get(f"/api/v1/tasks/{task['task_id']}", headers=auth.headers("viewer")).json
    assert set(body) >= {
        "task_id",
        "state",
        "scheduled_at",
        "picked_at",
        "started_at",
        "completed_at",
        "failed_at",
        "output",
    }


def test_boxes_and_workers(client, auth, seed, clock):
    headers = auth.headers(Role.VIEWER)
    body = client.get("/api/v1/boxes", headers=headers).json
    assert [(b["box_id"], b["process"], b["desired"]) for b in body["items"]] == [
        ("b1", "d", "running")
    ]
    assert client.get("/api/v1/boxes?box_id=b2", headers=headers).json["items"] == []
    body = client.get("/api/v1/workers", headers=headers).json
    assert [(w["worker_id"], w["alive"]) for w in body["items"]] == [("w1", True)]
    clock.advance(timedelta(minutes=5))
    body = client.get("/api/v1/workers?process=cron", headers=headers).json
    assert [(w["worker_id"], w["alive"]) for w in body["items"]] == [("w1", False)]
    assert client.get("/api/v1/workers?box_id=b9", headers=headers).json["items"] == []


def test_boxes_stop_and_start_set_the_desired_state(client, auth, seed, app_store):
    headers = auth.headers(Role.OPERATOR)
    response = client.post("/api/v1/boxes/b1/processes/d/stop", headers=headers)
    assert response.status_code == 200
    assert [r["desired"] for r in response.json["items"]] == ["stopped"]
    assert app_store.get_supervised("b1", "d").desired is False
    response = client.post("/api/v1/boxes/b1/processes/d/start", headers=headers)
    assert [r["desired"] for r in response.json["items"]] == ["running"]
    assert app_store.history("supervised", "b1/d")[-1].actor == "token operator"
