"""``POST /api/v1/executor/outcomes``: several outcomes of one executor in one request and one
commit, with its next claims (``next.count``); and bad batches refused whole."""

from __future__ import annotations

import pytest

from db.credentials import Role
from db.state_change import change_uow
from db.states import UowState
from mx.services import tasks
from tests.mx.conftest import register
from tests.mx.test_executor_api import claim, context, me, post


@pytest.fixture
def four(app_store, clock):
    """Four ad-hoc tasks requested, oldest first."""
    register(app_store, clock, name="job", kind="freerun", trigger="every 3600", command=["true"])
    ctx = context(app_store, clock)
    return [tasks.submit(ctx, f"echo {n}")["task_id"] for n in range(4)]


def claimed(client, auth, count, name="ex1"):
    """``count`` claims of executor ``name`` (one request each)."""
    return [claim(client, auth, me(name)).json for _ in range(count)]


def done(data, state="processed"):
    return {"uow_id": data["uow_id"], "lease": data["lease"], "state": state, "exit_code": 0}


def test_outcomes_are_recorded_together_with_the_next_claims(client, auth, app_store, four):
    # given two units of work claimed by a two-slot executor
    first = claimed(client, auth, 2)
    # when both outcomes come in one request asking for two more
    body = {"outcomes": [done(d) for d in first], "next": {**me(), "count": 2}}
    response = post(client, auth, "outcomes", body)
    # then both are processed and the other two are claimed for it, oldest first
    assert response.status_code == 200, response.json
    assert response.json["outcomes"] == [
        {"uow_id": d["uow_id"], "state": "processed", "changed": True} for d in first
    ]
    nexts = response.json["next"]
    assert sorted(n["uow_id"] for n in nexts) == sorted(set(four) - {d["uow_id"] for d in first})
    for uow_id in four:
        uow = app_store.get_uow(uow_id)
        expected = (
            UowState.IN_PROGRESS if uow_id in {n["uow_id"] for n in nexts} else UowState.PROCESSED
        )
        assert uow.state is expected
    # and the leases of the new claims hold
    again = post(client, auth, "outcomes", {"outcomes": [done(n, "noop") for n in nexts]})
    assert [a["state"] for a in again.json["outcomes"]] == ["noop", "noop"]
    assert again.json["next"] == []


def test_a_batch_without_next_claims_nothing(client, auth, app_store, four):
    (data,) = claimed(client, auth, 1)
    response = post(client, auth, "outcomes", {"outcomes": [done(data)]})
    assert response.json == {
        "outcomes": [{"uow_id": data["uow_id"], "state": "processed", "changed": True}],
        "next": [],
    }
    states = [app_store.get_uow(u).state for u in four]
    assert states.count(UowState.REQUESTED) == 3


def test_each_outcome_of_a_batch_stands_alone(client, auth, app_store, clock, four):
    # given three claims: one reported already, one whose lease was taken away, one holding
    ours, lost, holding = claimed(client, auth, 3)
    single = {k: v for k, v in done(ours).items() if k != "uow_id"}
    assert post(client, auth, f"uows/{ours['uow_id']}/outcome", single).status_code == 200
    change_uow(app_store, app_store.get_uow(lost["uow_id"]), "fail", clock=clock, actor="test")
    # when all three come in one batch (the repeat, the lost lease, the one that holds)
    body = {"outcomes": [done(ours), done(lost), done(holding)]}
    response = post(client, auth, "outcomes", body)
    # then the repeat changes nothing, the lost lease is refused alone, the third is recorded
    assert response.status_code == 200, response.json
    repeat, refused, recorded = response.json["outcomes"]
    assert repeat == {"uow_id": ours["uow_id"], "state": "processed", "changed": False}
    assert refused["uow_id"] == lost["uow_id"]
    assert (refused["error"]["code"], refused["error"]["status"]) == ("lease_lost", 409)
    assert app_store.get_uow(lost["uow_id"]).state is not UowState.PROCESSED
    assert recorded == {"uow_id": holding["uow_id"], "state": "processed", "changed": True}


def test_an_unknown_unit_of_work_in_a_batch_is_refused_alone(client, auth, app_store, four):
    (data,) = claimed(client, auth, 1)
    ghost = {**done(data), "uow_id": "0" * 24}
    response = post(client, auth, "outcomes", {"outcomes": [ghost, done(data)]})
    assert response.status_code == 200
    missing, recorded = response.json["outcomes"]
    assert missing["error"]["code"] == "not_found"
    assert recorded["changed"] is True


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (lambda b: {**b, "outcomes": []}, "outcomes"),
        (lambda b: {**b, "outcomes": "x"}, "outcomes"),
        (lambda b: {**b, "extra": 1}, "extra"),
        (lambda b: {**b, "outcomes": [b["outcomes"][0], 7]}, "outcomes[1]"),
        (
            lambda b: {**b, "outcomes": [b["outcomes"][0], {**b["outcomes"][1], "state": "x"}]},
            "outcomes[1].state",
        ),
        (
            lambda b: {**b, "outcomes": [b["outcomes"][0], {**b["outcomes"][1], "lease": "no"}]},
            "outcomes[1].lease",
        ),
        (
            lambda b: {**b, "outcomes": [b["outcomes"][0], {**b["outcomes"][1], "uow_id": ""}]},
            "outcomes[1].uow_id",
        ),
        (lambda b: {**b, "outcomes": [b["outcomes"][0], b["outcomes"][0]]}, "outcomes[1].uow_id"),
        (
            lambda b: {**b, "outcomes": [b["outcomes"][0], {**b["outcomes"][1], "next": {}}]},
            "outcomes[1].next",
        ),
        (
            lambda b: {**b, "outcomes": [b["outcomes"][0], {**b["outcomes"][1], "bogus": 1}]},
            "outcomes[1].bogus",
        ),
        (lambda b: {**b, "next": {**me(), "count": 3}}, "count"),
        (lambda b: {**b, "next": {**me(), "count": 0}}, "count"),
        (lambda b: {**b, "next": {**me(), "count": 1, "wait": 1}}, "next.wait"),
        (lambda b: {**b, "next": {**me(), "slots": "x"}}, "slots"),
        (lambda b: {**b, "next": []}, "next"),
    ],
)
def test_a_bad_batch_is_refused_whole_and_changes_nothing(
    client, auth, app_store, four, patch, field
):
    first = claimed(client, auth, 2)
    before = [app_store.get_uow(u) for u in four]
    body = patch({"outcomes": [done(d) for d in first], "next": {**me(), "count": 2}})
    response = post(client, auth, "outcomes", body)
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "invalid_input"
    assert response.json["error"]["field"] == field
    assert [app_store.get_uow(u) for u in four] == before


def test_a_batch_of_two_executors_leases_is_refused(client, auth, app_store, four):
    (a,) = claimed(client, auth, 1, "ex1")
    (b,) = claimed(client, auth, 1, "ex2")
    response = post(client, auth, "outcomes", {"outcomes": [done(a), done(b)]})
    assert response.status_code == 400
    assert response.json["error"]["field"] == "outcomes[1].lease"
    assert app_store.get_uow(a["uow_id"]).state is UowState.IN_PROGRESS


def test_operators_may_not_send_outcomes(client, auth, app_store, four):
    (data,) = claimed(client, auth, 1)
    response = post(client, auth, "outcomes", {"outcomes": [done(data)]}, Role.OPERATOR)
    assert response.status_code == 403
    assert app_store.get_uow(data["uow_id"]).state is UowState.IN_PROGRESS
