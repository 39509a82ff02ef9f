"""Fixtures of the mx tests, as flaskr's: ``app``, ``client`` and ``auth`` (a token per role and
session logins), plus ``seed`` (a small installation driven by the real scheduler), the table of
every route and a snapshot of everything the store holds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from db import open_store
from db.credentials import CredentialKind, Role
from db.errors import BrokerUnavailable, StoreUnavailable
from db.models import (
    FireRecord,
    JobQuery,
    ProcessEntry,
    ProcessRecord,
    SupervisedProcess,
    UowQuery,
    WorkerRecord,
)
from db.payloads import new_payload
from db.registration import entry_from_mapping
from db.states import FireOutcome, ProcessSource, UowState
from mx.app import create_app
from mx.services import actions, tasks
from mx.services.context import ServiceContext
from mx.services.credentials import create_token, create_user
from scheduler.config import SchedulerConfig
from scheduler.service import Scheduler
from settings import load_settings
from tests.scheduler.conftest import RecordingBroker

#: Password of the session users ``auth.login`` creates.
PASSWORD = "correct horse battery"
#: The instant the ``clock`` fixture starts at.
T0 = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path):
    return load_settings(environ={}, cwd=tmp_path)


@pytest.fixture
def app_store(settings):
    Path(settings.var_dir).mkdir(parents=True)
    store = open_store(settings.store_uri)
    store.init_schema()
    yield store
    store.close()


class DownableStore:
    """The test store, whose every call raises ``StoreUnavailable`` while ``down`` is set: the
    store taken away, as mx sees it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name.startswith("_") or name in ("describe", "close") or not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreUnavailable("test: the store is down")
            return attribute(*args, **kwargs)

        return call


class DownableBroker(RecordingBroker):
    """A recording broker whose calls raise ``BrokerUnavailable`` while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise BrokerUnavailable("test: the broker is down")

    def publish(self, queue, body, *, delay=None):
        self._check()
        super().publish(queue, body, delay=delay)

    def depth(self, queue):
        self._check()
        return 0

    def depths(self, queues):
        self._check()
        return dict.fromkeys(queues, 0)


@pytest.fixture
def recording_broker():
    """mx's broker in these tests (``down`` takes it away)."""
    return DownableBroker()


@pytest.fixture
def app(settings, app_store, recording_broker, clock):
    app = create_app(
        settings,
        store=DownableStore(app_store),
        broker=recording_broker,
        clock=clock,
        testing=True,
    )
    yield app
    app.extensions["tactus"].close()  # stops the announcer's thread if a test started it


@pytest.fixture
def store_switch(app) -> DownableStore:
    """The store under mx's (``down`` takes it away; ``app_store`` stays reachable)."""
    return app.extensions["tactus"].store.inner


@pytest.fixture
def client(app):
    return app.test_client()


class AuthActions:
    """A bearer token per role, and session logins (flaskr's ``AuthActions``)."""

    def __init__(self, client, store) -> None:
        self._client = client
        self._store = store
        self.tokens = {role: create_token(store, role.value, role) for role in Role}

    def headers(self, role: Role | str | None) -> dict[str, str]:
        """Headers authenticating as ``role`` (none for None)."""
        if role is None:
            return {}
        return {"Authorization": f"Bearer {self.tokens[Role(role)]}"}

    def login(self, role: Role | str = Role.OPERATOR, client=None) -> str:
        """Log a user of ``role`` in with a session; returns the session's CSRF token."""
        role = Role(role)
        name = f"user_{role.value}"
        if self._store.find_credential(CredentialKind.PASSWORD, name) is None:
            create_user(self._store, name, PASSWORD, role)
        response = (client or self._client).post(
            "/login", json={"username": name, "password": PASSWORD}
        )
        assert response.status_code == 200, response.json
        return response.json["csrf_token"]


@pytest.fixture
def auth(client, app_store):
    return AuthActions(client, app_store)


# -- a small installation --------------------------------------------------------------------------


@dataclass
class Seed:
    """What ``seed`` made: names and ids the route table points at."""

    uow_id: str
    finished_uow_id: str
    task_id: str
    job: tuple[str, str]
    payload_id: str


def register(store, clock, **fields: Any) -> None:
    insert_entry(store, clock, entry_from_mapping(fields))


def insert_entry(store, clock, entry: ProcessEntry) -> None:
    """Store ``entry`` as a registered process."""
    now = clock.now()
    store.insert_process(
        ProcessRecord(
            entry=entry,
            source=ProcessSource.FILE,
            registered=entry.to_dict(),
            created_at=now,
            updated_at=now,
        )
    )


@pytest.fixture
def seed(app, app_store, clock) -> Seed:
    """A managed process with jobs (through the real scheduler), a freerun, a daemon, a box with
    a supervised process, a worker, a fire and an ad-hoc task."""
    register(
        app_store,
        clock,
        name="h",
        kind="managed",
        time_qualifier="hourly",
        command=["true"],
        start_timeperiod="2026010511",
        lag=0,
    )
    register(app_store, clock, name="cron", kind="freerun", trigger="every 3600", command=["true"])
    register(app_store, clock, name="d", kind="daemon", command=["sleep", "60"])
    Scheduler(app_store, RecordingBroker(), clock, SchedulerConfig()).run_pass()
    now = clock.now()
    app_store.ensure_supervised(SupervisedProcess(box_id="b1", process="d", updated_at=now))
    app_store.save_worker(
        WorkerRecord(
            worker_id="w1", process="cron", box_id="b1", pid=42, started_at=now, heartbeat_at=now
        )
    )
    app_store.record_fire(
        FireRecord(process="cron", scheduled_at=now, outcome=FireOutcome.FIRED, recorded_at=now)
    )
    ctx = ServiceContext(store=app_store, clock=clock, publish=lambda *a: None, actor="test")
    task = tasks.submit(ctx, "echo hi")
    finished = tasks.submit(ctx, "echo again")
    actions.cancel(ctx, finished["task_id"])
    job = app_store.get_job("h", "2026010511")
    assert app_store.get_uow(task["task_id"]).state is UowState.REQUESTED
    payload, _ = app_store.save_payload(new_payload(b"seed bytes", "text/plain", now))
    return Seed(
        uow_id=job.uow_id,
        finished_uow_id=finished["task_id"],
        task_id=task["task_id"],
        job=("h", "2026010511"),
        payload_id=payload.id,
    )


# -- every route -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One route with a request that succeeds on ``seed`` for the role it needs; ``path`` may
    name ``{uow}`` (a managed unit of work), ``{task}`` (an ad-hoc task in progress) and
    ``{payload}`` (a stored payload)."""

    method: str
    path: str
    role: Role
    json: Any = None
    ok: int = 200

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    def url(self, seed: Seed) -> str:
        return self.path.format(uow=seed.uow_id, task=seed.task_id, payload=seed.payload_id)

    @property
    def mutating(self) -> bool:
        return self.method not in ("GET", "HEAD")


_V, _O, _A = Role.VIEWER, Role.OPERATOR, Role.ADMIN
#: A freerun entry an operator may create (a worker, not a shell command).
WORKER_ENTRY = {"name": "new", "trigger": "every 60", "worker": "tests.fixtures.workers:Succeeding"}

#: A registration file's entry, as ``launch.py register --url`` sends it.
REGISTERED = {"name": "filed", "kind": "freerun", "trigger": "every 60", "command": ["true"]}

#: Every authenticated route (SPEC section 6, /metrics and /logout).
ROUTES = [
    Route("GET", "/api/v1/processes", _V),
    Route("GET", "/api/v1/processes/cron", _V),
    Route("POST", "/api/v1/processes", _O, WORKER_ENTRY, 201),
    Route("PATCH", "/api/v1/processes/cron", _O, {"retries": 5}),
    Route("DELETE", "/api/v1/processes/cron", _O),
    Route("POST", "/api/v1/processes/cron/trigger", _O, None, 201),
    Route("GET", "/api/v1/processes/h/why?timeperiod=2026010512", _V),
    Route("GET", "/api/v1/jobs", _V),
    Route("GET", "/api/v1/jobs/h/2026010511", _V),
    Route("POST", "/api/v1/jobs/h/2026010511/reprocess", _O),
    Route("POST", "/api/v1/jobs/h/2026010512/skip", _O),
    Route("GET", "/api/v1/uows", _V),
    Route("GET", "/api/v1/uows/{uow}", _V),
    Route("GET", "/api/v1/uows/{uow}/messages", _V),
    Route("POST", "/api/v1/uows/{task}/cancel", _O),
    Route("POST", "/api/v1/tasks", _A, {"command": "echo hello"}, 201),
    Route("GET", "/api/v1/tasks/{task}", _V),
    Route("GET", "/api/v1/tasks/{task}/messages", _V),
    Route("POST", "/api/v1/payloads", _O, {"rows": [1, 2]}, 201),
    Route("GET", "/api/v1/payloads/{payload}", _V),
    Route("GET", "/api/v1/boxes", _V),
    Route("GET", "/api/v1/workers", _V),
    Route("POST", "/api/v1/boxes/b1/processes/d/start", _O),
    Route("POST", "/api/v1/boxes/b1/processes/d/stop", _O),
    Route("PUT", "/api/v1/registration", _A, {"processes": [REGISTERED], "source": "ctx.yaml"}),
    Route("GET", "/metrics", _V),
    Route("POST", "/logout", _V),
]
#: The routes open to everyone.
PUBLIC_ROUTES = ["/api/v1/health", "/api/v1/openapi.json", "/login"]


def snapshot(store) -> dict[str, Any]:
    """Everything the store holds that a request could change (versions and histories too)."""
    processes = store.list_processes()
    jobs = store.find_jobs(JobQuery(), limit=1000).items
    uows = store.find_uows(UowQuery(), limit=1000).items
    return {
        "processes": processes,
        "process_history": {p.name: store.history("process", p.name) for p in processes},
        "jobs": jobs,
        "job_history": {j.key: store.history("job", j.key) for j in jobs},
        "uows": uows,
        "uow_history": {u.id: store.history("uow", u.id) for u in uows},
        "supervised": store.list_supervised(),
        "workers": store.list_workers(),
        "fires": {p.name: store.list_fires(p.name) for p in processes},
        "credentials": store.list_credentials(),
        "audit": store.list_audit(limit=1000).items,
        "queue": {p.name: store.queue_depth(f"tactus.{p.name}", now=T0) for p in processes},
    }


def state_of(store) -> dict[str, Any]:
    """:func:`snapshot` less the audit trail, which records refused requests too."""
    return {key: value for key, value in snapshot(store).items() if key != "audit"}
