"""The shared actions: what they change, what they publish, and what they refuse."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from db import open_store
from db.clock import FakeClock
from db.errors import BrokerUnavailable, Conflict, NotFound, TransitionRefused
from db.models import ProcessRecord
from db.registration import entry_from_mapping
from db.states import JobState, ProcessSource, UowState
from mq.message import Message
from mx.services import actions
from mx.services.context import ServiceContext
from scheduler.config import SchedulerConfig
from scheduler.service import Scheduler
from tests.scheduler.conftest import RecordingBroker


@pytest.fixture
def published():
    return []


@pytest.fixture
def ctx(tmp_path, published):
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    store.init_schema()
    context = ServiceContext(
        store=store,
        clock=FakeClock(datetime(2026, 1, 5, 13, 0, tzinfo=UTC)),
        publish=lambda queue, body, delay: published.append((queue, Message.decode(body), delay)),
        actor="user alice",
    )
    yield context
    store.close()


def register(ctx, **fields):
    entry = entry_from_mapping(fields)
    now = ctx.clock.now()
    ctx.store.insert_process(
        ProcessRecord(
            entry=entry,
            source=ProcessSource.FILE,
            registered=entry.to_dict(),
            created_at=now,
            updated_at=now,
        )
    )


def test_trigger_freerun_creates_and_publishes_a_unit_of_work(ctx, published):
    register(ctx, name="cron", kind="freerun", trigger="every 3600", command=["true"])
    result = actions.trigger(ctx, "cron")
    uow = ctx.store.get_uow(result["uow"]["id"])
    assert uow.state is UowState.REQUESTED and uow.run_key.startswith("manual-")
    ((queue, message, delay),) = published
    assert (queue, message.kind, message.uow_id, delay) == ("tactus.cron", "uow", uow.id, None)
    assert ctx.store.history("uow", uow.id)[0].actor == "user alice"


def test_trigger_respects_max_active(ctx):
    register(ctx, name="cron", kind="freerun", trigger="every 3600", command=["true"])
    actions.trigger(ctx, "cron")
    with pytest.raises(Conflict, match="max_active"):
        actions.trigger(ctx, "cron")


def test_trigger_managed_wakes_the_scheduler_and_daemon_is_refused(ctx, published):
    register(ctx, name="h", kind="managed", time_qualifier="hourly", command=["true"])
    register(ctx, name="d", kind="daemon", command=["sleep", "1"])
    assert actions.trigger(ctx, "h") == {"process": "h", "uow": None, "published": True}
    assert [(q, m.kind, m.process) for q, m, _ in published] == [("tactus.uow_status", "wake", "h")]
    with pytest.raises(Conflict, match="is a daemon"):
        actions.trigger(ctx, "d")
    with pytest.raises(NotFound):
        actions.trigger(ctx, "ghost")


def test_enable_disable_is_recorded_and_idempotent(ctx):
    register(ctx, name="cron", kind="freerun", trigger="every 60", command=["true"])
    assert actions.set_enabled(ctx, "cron", False)["enabled"] is False
    assert actions.set_enabled(ctx, "cron", False)["enabled"] is False
    assert [e.trigger for e in ctx.store.history("process", "cron")] == ["disable"]
    assert ctx.store.get_process("cron").entry.enabled is False


def test_reprocess_skip_cancel_through_a_scheduler(ctx):
    # given a processed hourly job driven by the real scheduler
    register(
        ctx,
        name="h",
        kind="managed",
        time_qualifier="hourly",
        command=["true"],
        start_timeperiod="2026010511",
        lag=0,
    )
    scheduler = Scheduler(ctx.store, RecordingBroker(), ctx.clock, SchedulerConfig())
    scheduler.run_pass()
    job = ctx.store.get_job("h", "2026010511")
    # when its unit of work is canceled by hand
    actions.cancel(ctx, job.uow_id)
    scheduler.wake("h")
    scheduler.run_pass()
    # then the job is skipped, and can be reprocessed
    assert ctx.store.get_job("h", "2026010511").state is JobState.SKIPPED
    changed = actions.reprocess(ctx, "h", "2026010511")
    assert [(j["process"], j["timeperiod"], j["state"]) for j in changed] == [
        ("h", "2026010511", "embryo")
    ]
    # and a second cancel of a finished unit of work is refused
    with pytest.raises(TransitionRefused):
        actions.cancel(ctx, job.uow_id)
    # and skipping an embryo job works, skipping it again is refused
    assert actions.skip(ctx, "h", "2026010511")[0]["state"] == "skipped"
    with pytest.raises(TransitionRefused):
        actions.skip(ctx, "h", "2026010511")


def _broker_away(queue, body, delay):
    raise BrokerUnavailable("test: the broker is away")


def test_a_unit_stored_while_the_broker_is_away_is_done_and_goes_to_later(ctx):
    # given the broker away, and someone to publish later (mx's announcer)
    register(ctx, name="cron", kind="freerun", trigger="every 3600", command=["true"])
    kept = []
    away = replace(ctx, publish=_broker_away, later=lambda *message: kept.append(message))
    # when a freerun is triggered
    result = actions.trigger(away, "cron")
    # then the unit is stored and handed on, and the verb does not fail
    assert result["published"] is False
    assert ctx.store.get_uow(result["uow"]["id"]).state is UowState.REQUESTED
    assert [Message.decode(body).uow_id for _, body, _ in kept] == [result["uow"]["id"]]


def test_without_anyone_to_publish_later_the_unit_waits_for_the_scheduler(ctx, caplog):
    # the command line: nobody in the process publishes later; the scheduler re-posts
    register(ctx, name="cron", kind="freerun", trigger="every 3600", command=["true"])
    result = actions.trigger(replace(ctx, publish=_broker_away), "cron")
    assert result["published"] is False
    assert ctx.store.get_uow(result["uow"]["id"]).state is UowState.REQUESTED
    assert "the scheduler posts it again" in caplog.text


def test_a_wake_that_cannot_be_sent_does_not_fail_the_action(ctx):
    register(ctx, name="cron", kind="freerun", trigger="every 3600", command=["true"])
    record = actions.set_enabled(replace(ctx, publish=_broker_away), "cron", False)
    assert record["enabled"] is False
    assert ctx.store.get_process("cron").entry.enabled is False
