"""The factory, ``/api/v1/health``, ``/api/v1/openapi.json`` and ``/metrics``."""

from __future__ import annotations

import os
import re
import stat
from datetime import timedelta

from db.credentials import Role
from db.errors import StoreUnavailable
from db.models import FireRecord, WorkerRecord
from db.state_change import change_uow
from db.states import FireOutcome, UowState
from mx.app import create_app
from mx.services import tasks
from mx.services.context import ServiceContext
from mx.services.credentials import authenticate_token


def test_factory_opens_the_store_and_writes_the_first_admin_token(settings, caplog):
    # given a fresh installation
    caplog.set_level("WARNING", logger="tactus")
    app = create_app(settings)
    try:
        # then mx made the schema, and an admin token in a private file, and said where
        store = app.extensions["tactus"].store
        secret = open(settings.admin_token_file).read().strip()
        assert authenticate_token(store, secret).role is Role.ADMIN
        assert stat.S_IMODE(os.stat(settings.admin_token_file).st_mode) == 0o600
        assert settings.admin_token_file in caplog.text
        assert secret not in caplog.text
        key = open(os.path.join(settings.var_dir, "mx.secret"), "rb").read()
        assert app.secret_key == key
        assert not app.testing
    finally:
        app.extensions["tactus"].close()
    # and a restart keeps the token and the session key
    again = create_app(settings)
    try:
        assert again.secret_key == key
        assert len(again.extensions["tactus"].store.list_credentials()) == 1
    finally:
        again.extensions["tactus"].close()


def test_factory_in_testing_mode_writes_no_token(settings, app_store):
    app = create_app(settings, store=app_store, testing=True)
    assert app.testing and app_store.list_credentials() == []
    assert not os.path.exists(settings.admin_token_file)
    app.extensions["tactus"].close()  # closes only what it opened: the store stays usable
    assert app_store.list_credentials() == []


def test_health_is_open_and_reports_unknown_scheduler(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json == {
        "status": "ok",
        "version": response.json["version"],
        "store": "ok",
        "broker": "ok",
        "scheduler": {"alive": None, "leader": None},
    }


def test_health_reads_the_scheduler_heartbeat(client, app_store, clock):
    now = clock.now()
    app_store.save_worker(
        WorkerRecord(
            worker_id="sched-1",
            process="scheduler",
            box_id="b1",
            pid=7,
            started_at=now,
            heartbeat_at=now,
        )
    )
    assert client.get("/api/v1/health").json["scheduler"] == {"alive": True, "leader": "sched-1"}
    clock.advance(timedelta(minutes=10))
    assert client.get("/api/v1/health").json["scheduler"] == {"alive": False, "leader": None}


def test_health_is_503_when_the_store_fails(client, app_store, monkeypatch):
    def down():
        raise StoreUnavailable("down")

    monkeypatch.setattr(app_store, "ping", down)
    response = client.get("/api/v1/health")
    assert response.status_code == 503
    assert response.json["status"] == "degraded" and response.json["store"] == "unavailable"


def _rules(app) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        found |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return found


def test_openapi_document_matches_the_routes(app, client):
    document = client.get("/api/v1/openapi.json").json
    assert document["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert documented == _rules(app)
    # every path parameter is declared
    for path, ops in document["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, path
    public = {
        path
        for path, ops in document["paths"].items()
        for op in ops.values()
        if op.get("security") == []
    }
    assert public == {"/api/v1/health", "/api/v1/openapi.json"}


def test_metrics_report_the_store(client, auth, seed, app_store):
    response = client.get("/metrics", headers=auth.headers(Role.VIEWER))
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    for line in [
        "tactus_store_up 1.0",
        'tactus_jobs{process="h",state="embryo"} 2.0',
        'tactus_uows{process="adhoc",state="canceled"} 1.0',
        'tactus_fire_lateness_seconds{process="cron"} 0.0',
        'tactus_queue_depth{queue="tactus.cron"} 0.0',
        'tactus_worker_up{box_id="b1",process="cron",worker_id="w1"} 1.0',
        'tactus_supervised_state{box_id="b1",process="d",state="stopped"} 1.0',
        'tactus_supervised_state{box_id="b1",process="d",state="running"} 0.0',
        'tactus_supervised_desired_running{box_id="b1",process="d"} 1.0',
        "tactus_broker_up 1.0",
    ]:
        assert line in text, line


def test_metrics_report_dispatch_latency_fire_lateness_and_heartbeat_age(
    client, auth, seed, app_store, clock
):
    ctx = ServiceContext(store=app_store, clock=clock, publish=lambda *a: None, actor="test")
    # given a task started 3 s after it was submitted, and one re-posted 10 s after it was
    # submitted and started 1 s after that (its 10 s of waiting are no dispatch latency)
    first = app_store.get_uow(tasks.submit(ctx, "echo one")["task_id"])
    second = app_store.get_uow(tasks.submit(ctx, "echo two")["task_id"])
    clock.advance(3)
    _start(app_store, clock, first)
    clock.advance(7)
    second = app_store.update_uow(
        second.id, expected_state=UowState.REQUESTED, changes={"submitted_at": clock.now()}
    )
    clock.advance(1)
    _start(app_store, clock, second)
    # and a fire recorded 5 s late, before the seed's punctual one
    fired_at = seed_instant = clock.now() - timedelta(seconds=11)
    app_store.record_fire(
        FireRecord(
            process="cron",
            scheduled_at=seed_instant - timedelta(seconds=60),
            outcome=FireOutcome.FIRED,
            recorded_at=fired_at - timedelta(seconds=55),
        )
    )
    # when
    text = client.get("/metrics", headers=auth.headers(Role.VIEWER)).get_data(as_text=True)
    # then
    for line in [
        'tactus_dispatch_latency_seconds{process="adhoc"} 2.0',
        'tactus_dispatch_latency_max_seconds{process="adhoc"} 3.0',
        'tactus_fire_lateness_seconds{process="cron"} 0.0',
        'tactus_fire_lateness_max_seconds{process="cron"} 5.0',
        'tactus_worker_heartbeat_age_seconds{box_id="b1",process="cron",worker_id="w1"} 11.0',
    ]:
        assert line in text, line


def _start(store, clock, uow) -> None:
    change_uow(
        store,
        uow,
        "claim",
        clock=clock,
        actor="worker w1",
        changes={"worker_id": "w1", "started_at": clock.now(), "heartbeat_at": clock.now()},
    )


def test_metrics_say_when_the_store_is_down(client, auth, app_store, monkeypatch):
    headers = auth.headers(Role.VIEWER)

    def down(*args, **kwargs):
        raise StoreUnavailable("down")

    monkeypatch.setattr(app_store, "count_jobs", down)
    text = client.get("/metrics", headers=headers).get_data(as_text=True)
    assert "tactus_store_up 0.0" in text
