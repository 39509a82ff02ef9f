"""The executor routes (SPEC section 11) through the Flask app: roles, claims, leases,
heartbeats, outcomes, the registry, and flow steps."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import timedelta

import pytest

from db.credentials import CredentialKind, Role
from db.errors import InvalidInput
from db.liveness import reap_lost_workers
from db.states import UowState
from mx.api import executor as executor_api
from mx.services import actions, executors, tasks
from mx.services.context import ServiceContext
from mx.services.credentials import create_user
from tests.mx.conftest import register
from tests.mx.flows import register_flow

CLAIM = "/api/v1/executor/claim"
BOX = "build1"


def me(name: str = "ex1", **fields):
    """A claim's body for executor ``name``."""
    return {"name": name, "box": BOX, "instance": "1-ab", "slots": 2, **fields}


def claim(client, auth, body=None, role=Role.EXECUTOR):
    return client.post(CLAIM, json=body or me(), headers=auth.headers(role))


def post(client, auth, path, body, role=Role.EXECUTOR):
    return client.post(f"/api/v1/executor/{path}", json=body, headers=auth.headers(role))


def context(store, clock) -> ServiceContext:
    return ServiceContext(store=store, clock=clock, publish=lambda *a: None, actor="test")


@pytest.fixture
def freerun(app, app_store, clock):
    """A freerun process ``job`` with one unit of work requested."""
    register(app_store, clock, name="job", kind="freerun", trigger="every 3600", command=["true"])
    return actions.trigger(context(app_store, clock), "job")["uow"]["id"]


# -- roles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("claim", me()),
        ("uows/x/heartbeat", {"lease": "1.2.http:a"}),
        ("uows/x/outcome", {"lease": "1.2.http:a", "state": "processed"}),
        ("outcomes", {"outcomes": [{"uow_id": "x", "lease": "1.2.http:a", "state": "noop"}]}),
        ("leave", me()),
    ],
)
def test_executor_routes_refuse_viewer_and_operator(
    client, auth, app_store, freerun, role, path, body
):
    response = post(client, auth, path, body, role)
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"
    assert app_store.get_uow(freerun).state is UowState.REQUESTED


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/processes"),
        ("GET", "/api/v1/uows"),
        ("GET", "/api/v1/workers"),
        ("POST", "/api/v1/processes/job/trigger"),
        ("POST", "/api/v1/tasks"),
        ("GET", "/metrics"),
        ("GET", "/"),
    ],
)
def test_an_executor_token_is_refused_everywhere_else(client, auth, freerun, method, path):
    response = client.open(
        path, method=method, json={"command": "true"}, headers=auth.headers(Role.EXECUTOR)
    )
    assert response.status_code == 403


def test_a_user_cannot_have_the_executor_role(app_store):
    with pytest.raises(InvalidInput, match="executor is a token's role"):
        create_user(app_store, "builder", "long enough password", Role.EXECUTOR)


def test_a_revoked_executor_token_is_refused_once_its_cache_entry_ends(
    client, auth, app, app_store, freerun
):
    # given an executor token that authenticated once
    assert claim(client, auth, me(processes=["none"])).status_code == 204
    # when it is revoked in the store (launch.py token --revoke)
    app_store.delete_credential(CredentialKind.TOKEN, "executor")
    # then mx serves it from memory for at most EXECUTOR_TOKEN_TTL, and refuses it after
    assert claim(client, auth, me(processes=["none"])).status_code == 204
    app.extensions["tactus"].executor_tokens.ttl = 0.0  # the TTL has passed
    response = claim(client, auth, me(processes=["none"]))
    assert response.status_code == 401
    assert app_store.get_uow(freerun).state is UowState.REQUESTED


def test_only_executor_tokens_are_served_from_memory(client, auth, app_store):
    assert client.get("/api/v1/processes", headers=auth.headers(Role.VIEWER)).status_code == 200
    app_store.delete_credential(CredentialKind.TOKEN, "viewer")
    response = client.get("/api/v1/processes", headers=auth.headers(Role.VIEWER))
    assert response.status_code == 401


def test_admin_may_claim(client, auth, freerun):
    assert claim(client, auth, role=Role.ADMIN).status_code == 200


# -- claims ----------------------------------------------------------------------------------------


def test_claim_answers_204_when_nothing_is_due(client, auth, seed, app_store):
    response = claim(client, auth, me(processes=["nothing_here"], wait=0))
    assert response.status_code == 204
    # the claim registered the executor all the same
    (record,) = [w for w in app_store.list_workers() if w.worker_id.startswith("http:")]
    assert (record.box_id, record.concurrency, record.process) == (BOX, 2, "nothing_here")


def test_claim_long_polls_until_a_unit_of_work_comes(client, auth, app, app_store, clock):
    register(app_store, clock, name="job", kind="freerun", trigger="every 3600", command=["true"])
    timer = threading.Timer(0.5, lambda: actions.trigger(context(app_store, clock), "job"))
    timer.start()
    try:
        response = claim(client, auth, me(processes=["job"], wait=5))
    finally:
        timer.join()
    assert response.status_code == 200
    assert response.json["process"] == "job"


def test_claim_hands_out_a_lease_and_the_run(client, auth, app_store, freerun):
    response = claim(client, auth)
    assert response.status_code == 200, response.json
    data = response.json
    assert data["uow_id"] == freerun
    assert data["command"] == ["true"] and data["worker"] is None
    assert (data["attempt"], data["timeout"], data["step"]) == (1, 3600.0, None)
    uow = app_store.get_uow(freerun)
    assert uow.state is UowState.IN_PROGRESS
    assert uow.worker_id == f"http:ex1@{BOX}:1-ab" and uow.box_id == BOX
    assert data["lease"].endswith(uow.worker_id)
    # nothing else is due
    assert claim(client, auth).status_code == 204


def test_claim_keeps_to_the_executors_processes_and_box(client, auth, app_store, clock):
    register(app_store, clock, name="here", kind="freerun", trigger="every 3600", command=["true"])
    register(
        app_store,
        clock,
        name="there",
        kind="freerun",
        trigger="every 3600",
        command=["true"],
        boxes=["other.*"],
    )
    ctx = context(app_store, clock)
    theirs = actions.trigger(ctx, "there")["uow"]["id"]
    ours = actions.trigger(ctx, "here")["uow"]["id"]
    # the box does not match "there"; the processes named leave out everything else
    assert claim(client, auth, me(processes=["there"])).status_code == 204
    assert claim(client, auth, me(processes=["here"])).json["uow_id"] == ours
    assert app_store.get_uow(theirs).state is UowState.REQUESTED


def test_claim_runs_an_adhoc_task_literally(client, auth, app_store, clock):
    task = tasks.submit(context(app_store, clock), "echo {a} | wc -c")
    data = claim(client, auth).json
    assert data["uow_id"] == task["task_id"]
    assert (data["command"], data["shell"]) == ("echo {{a}} | wc -c", True)


def test_claims_racing_never_hand_out_one_unit_twice(client, auth, app, app_store, clock):
    register(app_store, clock, name="job", kind="freerun", trigger="every 3600", command=["true"])
    ctx = context(app_store, clock)
    made = {tasks.submit(ctx, f"echo {n}")["task_id"] for n in range(30)}
    got: list[str] = []
    lock = threading.Lock()

    def executor(n: int) -> None:
        own = app.test_client()
        while True:
            response = claim(own, auth, me(f"ex{n}"))
            if response.status_code == 204:
                return
            with lock:
                got.append(response.json["uow_id"])

    threads = [threading.Thread(target=executor, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == sorted(made)


# -- leases ----------------------------------------------------------------------------------------


def test_heartbeat_and_outcome_under_the_lease(client, auth, app_store, clock, freerun):
    data = claim(client, auth).json
    clock.advance(timedelta(seconds=3))
    beat = post(client, auth, f"uows/{freerun}/heartbeat", {"lease": data["lease"]})
    assert beat.status_code == 200
    assert app_store.get_uow(freerun).heartbeat_at == clock.now()
    outcome = {"lease": data["lease"], "state": "processed", "exit_code": 0, "output_tail": "hi"}
    done = post(client, auth, f"uows/{freerun}/outcome", outcome)
    assert done.status_code == 200
    assert done.json == {"uow_id": freerun, "state": "processed", "changed": True}
    uow = app_store.get_uow(freerun)
    assert (uow.state, uow.exit_code, uow.output) == (UowState.PROCESSED, 0, "hi")
    version = uow.version
    # the same outcome again (its answer was lost): 200, nothing changes
    again = post(client, auth, f"uows/{freerun}/outcome", {**outcome, "state": "invalid"})
    assert again.status_code == 200 and again.json["changed"] is False
    assert app_store.get_uow(freerun).version == version
    # a heartbeat after the end: the lease no longer holds
    late = post(client, auth, f"uows/{freerun}/heartbeat", {"lease": data["lease"]})
    assert late.status_code == 409 and late.json["error"]["code"] == "lease_lost"


def test_an_invalid_outcome_carries_the_error(client, auth, app_store, freerun):
    lease = claim(client, auth).json["lease"]
    body = {"lease": lease, "state": "invalid", "exit_code": 3, "error": "exited with code 3"}
    assert post(client, auth, f"uows/{freerun}/outcome", body).status_code == 200
    uow = app_store.get_uow(freerun)
    assert (uow.state, uow.error) == (UowState.INVALID, "exited with code 3")


def test_a_lease_taken_over_answers_409(client, auth, app, app_store, clock, settings, freerun):
    # given an executor that claimed and then went silent past the liveness limit
    lease = claim(client, auth).json["lease"]
    clock.advance(timedelta(seconds=settings.heartbeat_interval * settings.heartbeat_misses + 1))
    failed = reap_lost_workers(
        app_store,
        now=clock.now(),
        interval=settings.heartbeat_interval,
        misses=settings.heartbeat_misses,
        clock=clock,
    )
    assert failed == [freerun]
    # the lost attempt's outcome is refused: the lease ran out
    body = {"lease": lease, "state": "processed", "exit_code": 0}
    response = post(client, auth, f"uows/{freerun}/outcome", body)
    assert response.status_code == 409 and response.json["error"]["code"] == "lease_lost"
    # when: it is retried and claimed by another executor
    uow = app_store.get_uow(freerun)
    from db.state_change import change_uow

    change_uow(
        app_store,
        uow,
        "retry",
        clock=clock,
        actor="test",
        changes={"attempt": 2, "worker_id": None},
    )
    other = claim(client, auth, me("ex2")).json
    assert other["attempt"] == 2
    # then the first lease is refused and changes nothing; the second holds
    before = app_store.get_uow(freerun)
    for path in ("heartbeat", "outcome"):
        response = post(
            client,
            auth,
            f"uows/{freerun}/{path}",
            {**body, "lease": lease} if path == "outcome" else {"lease": lease},
        )
        assert response.status_code == 409
    assert app_store.get_uow(freerun) == before
    body = {"lease": other["lease"], "state": "processed", "exit_code": 0}
    assert post(client, auth, f"uows/{freerun}/outcome", body).json["changed"] is True


def test_a_heartbeat_past_the_timeout_fails_the_unit(client, auth, app_store, clock):
    register(
        app_store,
        clock,
        name="slow",
        kind="freerun",
        trigger="every 3600",
        command=["x"],
        timeout=5,
    )
    uow_id = actions.trigger(context(app_store, clock), "slow")["uow"]["id"]
    lease = claim(client, auth).json["lease"]
    clock.advance(timedelta(seconds=16))
    response = post(client, auth, f"uows/{uow_id}/heartbeat", {"lease": lease})
    assert response.status_code == 409
    uow = app_store.get_uow(uow_id)
    assert uow.state is UowState.INVALID and "timed out after 5 s" in uow.error


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lease": "nope", "state": "processed"}, "lease"),
        ({"lease": "1.2.http:a", "state": "done"}, "state"),
        ({"lease": "1.2.http:a", "state": "processed", "exit_code": "0"}, "exit_code"),
        ({"lease": "1.2.http:a", "state": "processed", "result": [1]}, "result"),
        ({"lease": "1.2.http:a", "state": "processed", "extra": 1}, "extra"),
    ],
)
def test_a_bad_outcome_is_400_naming_the_field(client, auth, freerun, body, field):
    response = post(client, auth, f"uows/{freerun}/outcome", body)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"box": BOX, "instance": "1"}, "name"),
        ({"name": "a b", "box": BOX, "instance": "1"}, "name"),
        (me(slots=0), "slots"),
        (me(processes=["Bad"]), "processes"),
        (me(wait=31), "wait"),
        (me(running=[1]), "running"),
    ],
)
def test_a_bad_claim_is_400_naming_the_field(client, auth, body, field):
    response = claim(client, auth, body)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field


# -- the registry ----------------------------------------------------------------------------------


def test_executors_are_listed_with_kind_slots_and_running(client, auth, app_store, freerun):
    claim(client, auth, me(slots=4))
    workers = client.get("/api/v1/workers", headers=auth.headers(Role.VIEWER)).json["items"]
    (executor,) = [w for w in workers if w["kind"] == "http"]
    assert (executor["slots"], executor["running"], executor["alive"]) == (4, 1, True)
    assert executor["box_id"] == BOX and executor["heartbeat_at"] and executor["name"] == "ex1"
    page = client.get("/workers", headers=auth.headers(Role.VIEWER))
    assert executor["worker_id"] in page.get_data(as_text=True)


def test_leave_marks_the_executor_stopped(client, auth, app_store):
    claim(client, auth, me(processes=["none"]))
    response = post(client, auth, "leave", me())
    assert response.json == {"stopped": True}
    (record,) = [w for w in app_store.list_workers() if w.worker_id.startswith("http:")]
    assert record.state == "stopped"


# -- flows -----------------------------------------------------------------------------------------


def test_flow_steps_are_claimed_one_after_the_other(client, auth, app_store, clock):
    register_flow(app_store, clock)
    run = actions.trigger(context(app_store, clock), "etl")["uow"]["id"]
    done = []
    while (response := claim(client, auth, me(processes=["etl"]))).status_code == 200:
        data = response.json
        assert data["parent"] == run
        done.append(data["step"])
        body = {"lease": data["lease"], "state": "processed", "exit_code": 0}
        if data["step"] == "extract":
            body["result"] = {"rows": 3}
        assert post(client, auth, f"uows/{data['uow_id']}/outcome", body).status_code == 200
    assert done[0] == "extract" and sorted(done[1:3]) == ["t1", "t2"] and done[3] == "load"
    assert app_store.get_uow(run).state is UowState.PROCESSED


def test_an_outcome_may_bring_the_next_claim(client, auth, app_store, clock, recording_broker):
    register(app_store, clock, name="job", kind="freerun", trigger="every 3600", command=["true"])
    ctx = context(app_store, clock)
    first = actions.trigger(ctx, "job")["uow"]["id"]
    register(app_store, clock, name="job2", kind="freerun", trigger="every 3600", command=["true"])
    second = actions.trigger(ctx, "job2")["uow"]["id"]
    lease = claim(client, auth, me(processes=["job"])).json["lease"]
    # when the outcome asks for the next claim
    body = {"lease": lease, "state": "processed", "next": me(processes=["job2"])}
    answer = post(client, auth, f"uows/{first}/outcome", body).json
    # then both are written, and the next claim comes back
    assert answer["changed"] is True and answer["next"]["uow_id"] == second
    assert app_store.get_uow(first).state is UowState.PROCESSED
    assert app_store.get_uow(second).state is UowState.IN_PROGRESS
    told = [m.uow_id for _, m, _ in recording_broker.published if m.kind == "uow_status"]
    assert first in told
    # nothing more due: next is null; a next claim that would wait is refused
    body = {"lease": answer["next"]["lease"], "state": "processed", "next": me()}
    assert post(client, auth, f"uows/{second}/outcome", body).json["next"] is None
    body = {"lease": "1.1.x", "state": "processed", "next": me(wait=1)}
    response = post(client, auth, f"uows/{second}/outcome", body)
    assert response.status_code == 400 and response.json["error"]["field"] == "next.wait"


def test_messages_and_payloads_travel_with_claims_heartbeats_and_outcomes(
    client, auth, app_store, clock
):
    task = tasks.submit(context(app_store, clock), "cat $TACTUS_PAYLOAD", payload={"n": 1})
    data = claim(client, auth).json
    assert data["uow_id"] == task["task_id"] and data["payload_id"]
    assert json.loads(base64.b64decode(data["payload"])) == {"n": 1}
    body = {"lease": data["lease"], "messages": ["loaded", ""]}
    assert post(client, auth, f"uows/{data['uow_id']}/heartbeat", body).status_code == 200
    body = {"lease": data["lease"], "state": "processed", "messages": ["done"]}
    assert post(client, auth, f"uows/{data['uow_id']}/outcome", body).status_code == 200
    page = app_store.list_messages(data["uow_id"])
    assert [(m.text, m.attempt) for m in page.items] == [("loaded", 1), ("done", 1)]


def test_outcomes_and_claims_of_executors_at_once_share_commits_and_run_each_unit_once(
    client, auth, app, app_store, clock
):
    # given forty units of work, and commits slow enough for requests to queue meanwhile
    fields = {"kind": "freerun", "trigger": "every 3600", "command": ["true"], "max_active": 100}
    register(app_store, clock, name="job", **fields)
    ctx = context(app_store, clock)
    made = {actions.trigger(ctx, "job")["uow"]["id"] for _ in range(40)}

    def slow(*args):
        time.sleep(0.01)
        return executors.commit_alone(*args)

    shared = app.extensions.setdefault(executor_api.SHARED, executor_api._Shared())
    shared.group = executors.GroupCommit(slow)
    got: dict[str, list[str]] = {}
    lock = threading.Lock()

    def executor(n: int) -> None:
        own, body = app.test_client(), me(f"ex{n}")
        response = claim(own, auth, body)
        claims = [response.json] if response.status_code == 200 else []
        while claims:
            with lock:
                for data in claims:
                    got.setdefault(data["uow_id"], []).append(f"ex{n}")
            outcomes = [
                {"uow_id": c["uow_id"], "lease": c["lease"], "state": "processed"} for c in claims
            ]
            answer = post(
                own, auth, "outcomes", {"outcomes": outcomes, "next": {**body, "count": 2}}
            )
            assert all("error" not in a for a in answer.json["outcomes"])
            claims = answer.json["next"]

    # when four executors claim them and report them at once
    threads = [threading.Thread(target=executor, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # then each ran once, under one claim, and several requests were written in one commit
    assert sorted(got) == sorted(made) and all(len(who) == 1 for who in got.values())
    assert {app_store.get_uow(u).state for u in made} == {UowState.PROCESSED}
    for uow_id in made:
        moves = [e.to_state for e in app_store.history("uow", uow_id, limit=50)]
        assert moves.count("in_progress") == 1 and moves.count("processed") == 1
    assert shared.group.commits < shared.group.requests
