"""The remote command line (SPEC section 5, ``--url``): ``launch.main`` against a real mx served on
a loopback port over a temporary SQLite store with the store broker. Every command's effect is
checked in the store, and its ``--json`` output against the local mode's for the same data."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from datetime import UTC, datetime

import pytest
from werkzeug.serving import make_server

import launch
from db import open_store
from db.clock import SystemClock
from db.credentials import Role
from db.ids import new_id
from db.models import Job, JobQuery, SupervisedProcess, UowQuery, WorkerRecord
from db.states import JobState, UowState
from mq import open_broker
from mx.app import create_app
from mx.services.credentials import create_token
from settings import load_settings

CONTEXT = """
processes:
  - name: cron
    kind: freerun
    trigger: "0 0 1 1 *"
    command: [echo, hello]
  - name: hourly
    kind: managed
    time_qualifier: hourly
    start_timeperiod: "2026010100"
    command: ["true"]
  - name: d
    kind: daemon
    command: [sleep, "60"]
"""
#: The timeperiods of the jobs the installation starts with (newest first, as lists show them).
TIMEPERIODS = ["2026010102", "2026010101", "2026010100"]


class Remote:
    """Runs ``launch.main`` locally or through the served API, capturing its output."""

    def __init__(self, capsys, url: str, tokens: dict[Role, str]) -> None:
        self._capsys = capsys
        self.url = url
        self.tokens = tokens

    def local(self, *args: str) -> tuple[int, str, str]:
        code = launch.main(list(args), environ={})
        out, err = self._capsys.readouterr()
        return code, out, err

    def run(
        self, *args: str, role: Role | None = Role.OPERATOR, **env: str
    ) -> tuple[int, str, str]:
        """The command with ``--url`` and the token of ``role`` (after the command's args)."""
        extra = ["--url", self.url]
        if role is not None:
            extra += ["--token", self.tokens[role]]
        code = launch.main([*args, *extra], environ=env)
        out, err = self._capsys.readouterr()
        return code, out, err

    def json(self, *args: str, role: Role = Role.OPERATOR) -> object:
        code, out, err = self.run(*args, "--json", role=role)
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    # launch.main resolves the settings against the working directory, as users run it.
    monkeypatch.chdir(tmp_path)
    return load_settings(environ={}, cwd=tmp_path)


@pytest.fixture
def store(settings, tmp_path, capsys):
    context = tmp_path / "ctx.yaml"
    context.write_text(CONTEXT)
    assert launch.main(["register", str(context)], environ={}) == 0
    capsys.readouterr()
    with open_store(settings.store_uri) as store:
        now = SystemClock().now()
        for timeperiod in TIMEPERIODS:
            store.create_job(
                Job(
                    id=new_id(),
                    process="hourly",
                    qualifier="hourly",
                    timeperiod=timeperiod,
                    created_at=now,
                    updated_at=now,
                )
            )
        store.ensure_supervised(SupervisedProcess(box_id="b1", process="d", updated_at=now))
        store.save_worker(
            WorkerRecord(
                worker_id="w1",
                process="cron",
                box_id="b1",
                pid=42,
                started_at=now,
                heartbeat_at=now,
            )
        )
        yield store


@pytest.fixture
def server_url(settings, store):
    """A real mx on a free loopback port, in a thread, on the same store and the store broker."""
    with open_broker(settings.broker_uri, store) as broker:
        app = create_app(settings, store=store, broker=broker, testing=True)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            thread.join(10)


@pytest.fixture
def cli(capsys, store, server_url):
    tokens = {role: create_token(store, f"t_{role.value}", role) for role in Role}
    return Remote(capsys, server_url, tokens)


def state_of(store) -> tuple:
    """What the commands could change (not the audit trail, which records refusals too)."""
    return (
        store.list_processes(),
        store.find_jobs(JobQuery(), limit=100).items,
        store.find_uows(UowQuery(), limit=100).items,
        store.list_supervised(),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["processes", "jobs", "uows", "boxes", "workers"])
def test_remote_list_prints_what_local_prints(cli, store, target):
    # given a freerun that ran once, so that every list has rows
    assert cli.run("trigger", "cron")[0] == 0
    # when the same list is asked locally and through the API
    local = cli.local("list", target, "--json")
    remote = cli.run("list", target, "--json")
    # then the JSON is the same, and so is the table
    assert remote[0] == local[0] == 0, remote[2]
    assert json.loads(remote[1]) == json.loads(local[1])
    assert json.loads(remote[1]), f"no {target} listed"
    assert cli.run("list", target)[1] == cli.local("list", target)[1]


@pytest.mark.parametrize("args", [["hourly"], ["hourly", "2026010101"], ["cron"], ["d"]])
def test_remote_why_prints_what_local_prints(cli, args):
    local = cli.local("why", *args, "--json")
    remote = cli.run("why", *args, "--json", role=Role.VIEWER)
    assert remote[0] == local[0] == 0, remote[2]
    reasons = json.loads(remote[1])
    assert reasons == json.loads(local[1])
    assert reasons and all(set(r) == {"code", "message", "facts"} for r in reasons)
    assert cli.run("why", *args, role=Role.VIEWER)[1] == cli.local("why", *args)[1]


def test_remote_list_filters_limit_and_cursor(cli):
    # when the jobs are read two at a time
    code, out, _ = cli.run("list", "jobs", "--process", "hourly", "--limit", "2")
    # then the table says how to go on, and the cursor continues where the page ended
    assert code == 0
    cursor = out.strip().splitlines()[-1].removeprefix("(more: --cursor ").removesuffix(")")
    assert cursor != out.strip().splitlines()[-1]
    first = cli.json("list", "jobs", "--limit", "2")
    rest = cli.json("list", "jobs", "--limit", "2", "--cursor", cursor)
    assert [j["timeperiod"] for j in first + rest] == TIMEPERIODS
    assert rest == json.loads(
        cli.local("list", "jobs", "--limit", "2", "--cursor", cursor, "--json")[1]
    )
    assert cli.json("list", "jobs", "--state", "skipped,processed") == []
    assert [p["name"] for p in cli.json("list", "processes", "--process", "cron")] == ["cron"]
    assert [w["worker_id"] for w in cli.json("list", "workers", "--box", "b1")] == ["w1"]
    assert cli.json("list", "workers", "--process", "hourly") == []
    assert [b["process"] for b in cli.json("list", "boxes", "--box", "b1")] == ["d"]


def test_remote_bad_state_filter_exits_2_naming_the_field(cli):
    code, _, err = cli.run("list", "jobs", "--state", "done")
    assert code == 2
    assert err.startswith("launch.py list: field 'state': unknown state")
    assert len(err.strip().splitlines()) == 1
    assert cli.local("list", "jobs", "--state", "done")[:1] == (2,)


# -- acting ------------------------------------------------------------------------------------


def test_remote_trigger_creates_a_unit_of_work(cli, store):
    # when a freerun is fired through the API
    result = cli.json("trigger", "cron")
    # then its unit of work is stored, requested, and a second fire is refused (max_active 1)
    uow = store.get_uow(result["uow"]["id"])
    assert (uow.process, uow.state) == ("cron", UowState.REQUESTED)
    assert result["process"] == "cron"
    assert cli.json("status-of", uow.id)["state"] == "requested"
    code, _, err = cli.run("trigger", "cron")
    assert code == 1 and "max_active 1" in err
    assert cli.run("trigger", "hourly")[1] == "hourly: scheduler asked to look now\n"
    code, _, err = cli.run("trigger", "ghost")
    assert (code, err) == (1, "launch.py trigger: process ghost not found\n")


def test_remote_skip_and_reprocess_change_the_job(cli, store):
    # when a job is skipped, then reprocessed, through the API
    skipped = cli.json("skip", "hourly", "2026010100")
    assert store.get_job("hourly", "2026010100").state is JobState.SKIPPED
    redone = cli.json("reprocess", "hourly", "2026010100")
    # then the store follows, and the printed jobs are the ones that changed
    assert store.get_job("hourly", "2026010100").state is JobState.EMBRYO
    assert [(j["timeperiod"], j["state"]) for j in skipped] == [("2026010100", "skipped")]
    assert [(j["timeperiod"], j["state"]) for j in redone] == [("2026010100", "embryo")]
    code, out, _ = cli.run("skip", "hourly", "2026010101")
    assert (code, out) == (0, "1 jobs changed\n  hourly 2026010101 -> skipped\n")
    # and a refused transition exits 1 with the state machine's reason, changing nothing
    before = state_of(store)
    code, _, err = cli.run("reprocess", "hourly", "2026010102")
    assert code == 1 and "cannot reprocess from state embryo" in err
    assert cli.run("skip", "hourly", "2099010100")[0] == 1
    assert state_of(store) == before


def test_remote_cancel(cli, store):
    uow_id = cli.json("trigger", "cron")["uow"]["id"]
    code, out, _ = cli.run("cancel", uow_id)
    assert (code, out) == (0, f"unit of work {uow_id}: canceled\n")
    assert store.get_uow(uow_id).state is UowState.CANCELED
    code, _, err = cli.run("cancel", uow_id)
    assert code == 1 and "cannot cancel from state canceled" in err


def test_remote_enable_disable_print_what_local_prints(cli, store):
    # when a process is disabled through the API
    remote = cli.json("disable", "cron")
    # then it is off in the store, and the local command prints the same process
    assert store.get_process("cron").entry.enabled is False
    assert remote["enabled"] is False
    assert json.loads(cli.local("disable", "cron", "--json")[1]) == remote
    assert cli.run("enable", "cron")[1] == "cron: enabled\n"
    assert store.get_process("cron").entry.enabled is True


def test_remote_submit_and_status_of(cli, store):
    # when an admin submits a task for later through the API
    code, out, err = cli.run(
        "submit",
        "--command",
        "echo hi",
        "--at",
        "2030-01-01T00:00:00Z",
        "--retries",
        "2",
        role=Role.ADMIN,
    )
    # then it is stored with that command, time and retries, and status-of reads it back
    assert code == 0, err
    task_id = out.strip()
    uow = store.get_uow(task_id)
    assert (uow.arguments["command"], uow.retries) == ("echo hi", 2)
    assert uow.scheduled_at == datetime(2030, 1, 1, tzinfo=UTC)
    remote = cli.json("status-of", task_id)
    assert remote == json.loads(cli.local("status-of", task_id, "--json")[1])
    assert (remote["state"], remote["scheduled_at"]) == ("requested", "2030-01-01T00:00:00Z")
    assert cli.run("status-of", task_id)[1].startswith(f"{task_id}\n  state: requested\n")
    code, _, err = cli.run("submit", "--command", "true", "--at", "tomorrow", role=Role.ADMIN)
    assert code == 2 and "'scheduled_at'" in err


def test_remote_super_start_stop_query(cli, store):
    # when the supervised daemon is stopped, then started, on box b1 through the API
    stopped = cli.json("super", "--stop", "d", "--boxid", "b1")
    assert store.get_supervised("b1", "d").desired is False
    started = cli.json("super", "--start", "d", "--boxid", "b1")
    # then the desired state follows, and the query prints what local mode prints
    assert store.get_supervised("b1", "d").desired is True
    assert [(r["process"], r["desired"]) for r in stopped + started] == [
        ("d", "stopped"),
        ("d", "running"),
    ]
    query = cli.run("super", "--query", "--boxid", "b1")
    assert query[0] == 0 and query[1] == cli.local("super", "--query", "--boxid", "b1")[1]
    assert query[1].startswith("box b1\nPROCESS")
    assert cli.json("super", "--boxid", "b1") == json.loads(
        cli.local("super", "--boxid", "b1", "--json")[1]
    )
    code, _, err = cli.run("super", "--start", "ghost", "--boxid", "b1")
    assert code == 1 and "b1/ghost not found" in err


def test_remote_super_without_boxid_shows_every_box_and_will_not_guess_one(cli, store):
    # this machine's box_id means nothing to the remote installation
    rows = cli.json("super")
    assert [(r["box_id"], r["process"]) for r in rows] == [("b1", "d")]
    table = cli.run("super", "--query")[1]
    assert table.startswith("BOX_ID") and "b1" in table
    before = state_of(store)
    code, _, err = cli.run("super", "--stop", "d")
    assert code == 2 and "field '--boxid'" in err
    assert state_of(store) == before


# -- registering -----------------------------------------------------------------------------


def test_remote_register_upserts_the_file_read_here(cli, store, tmp_path):
    # given the registration file with one entry changed and one added
    changed = CONTEXT.replace('trigger: "0 0 1 1 *"', 'trigger: "0 0 2 1 *"') + (
        '  - name: extra\n    kind: freerun\n    trigger: every 60\n    command: ["true"]\n'
    )
    path = tmp_path / "new.yaml"
    path.write_text(changed)
    # when it is checked, then registered through the API (admin: entries name programs)
    checked = cli.run("register", str(path), "--check", role=Role.ADMIN)
    assert checked[0] == 0, checked[2]
    assert "would register (check only): 1 created, 1 updated, 2 unchanged" in checked[1]
    assert "extra" not in {r.name for r in store.list_processes()}
    code, out, err = cli.run("register", str(path), role=Role.ADMIN)
    # then the store has it, as a local register would have done
    assert code == 0, err
    assert out.splitlines() == [
        "  + extra",
        "  ~ cron",
        "registered: 1 created, 1 updated, 2 unchanged, 0 pruned",
    ]
    assert store.get_process("cron").entry.trigger == "0 0 2 1 *"
    assert store.get_process("extra").entry.command == ("true",)
    assert [e.reason for e in store.history("process", "extra")] == [f"created from {path}"]
    # and again: nothing changes (idempotent), and --prune through the API removes
    assert "0 created, 0 updated, 4 unchanged" in cli.run("register", str(path), role=Role.ADMIN)[1]
    path.write_text(CONTEXT)
    pruned = cli.run("register", str(path), "--prune", role=Role.ADMIN)
    assert pruned[0] == 0 and "  - extra" in pruned[1]
    assert "extra" not in {r.name for r in store.list_processes()}


def test_remote_register_needs_admin_and_a_bad_file_sends_nothing(cli, store, tmp_path):
    path = tmp_path / "new.yaml"
    path.write_text(CONTEXT.replace("time_qualifier: hourly", "time_qualifier: weekly"))
    before = state_of(store)
    # a bad file is refused where it is read, with the entry and the field named
    code, _, err = cli.run("register", str(path), role=Role.ADMIN)
    assert code == 2 and "process 'hourly', field 'time_qualifier'" in err
    # a good one needs admin
    path.write_text(CONTEXT.replace("[echo, hello]", "[echo, bye]"))
    code, _, err = cli.run("register", str(path), role=Role.OPERATOR)
    assert code == 1 and "needs admin" in err
    assert state_of(store) == before


# -- credentials, addresses and refusals ---------------------------------------------------------


def test_remote_wrong_token_exits_1_and_changes_nothing(cli, store):
    before = state_of(store)
    code = launch.main(["disable", "cron", "--url", cli.url, "--token", "tct_wrong"], environ={})
    out, err = cli._capsys.readouterr()
    assert (code, out) == (1, "")
    assert "refused the token" in err and len(err.strip().splitlines()) == 1
    assert "tct_wrong" not in err
    assert state_of(store) == before
    code, _, err = cli.run("list", "jobs", role=None)
    assert code == 1 and "needs a token" in err and "TACTUS_TOKEN" in err


def test_remote_viewer_token_may_read_but_not_act(cli, store):
    before = state_of(store)
    code, _, err = cli.run("disable", "cron", role=Role.VIEWER)
    assert code == 1
    assert "lacks the role" in err and "needs operator" in err
    assert cli.run("submit", "--command", "true")[0] == 1  # operator: admin needed
    assert state_of(store) == before
    assert cli.run("list", "processes", role=Role.VIEWER)[0] == 0


def test_remote_unreachable_url_exits_1_naming_it(capsys, settings):
    url = f"http://127.0.0.1:{free_port()}"
    code = launch.main(["list", "jobs", "--url", url, "--token", "tct_x"], environ={})
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"launch.py list: cannot reach {url}/api/v1")
    assert len(err.strip().splitlines()) == 1


def test_remote_answer_that_is_not_json_exits_1(capsys, settings):
    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>not tactus</html>")

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        code = launch.main(["list", "uows", "--url", url], environ={})
    finally:
        server.shutdown()
        thread.join(10)
    err = capsys.readouterr().err
    assert code == 1 and f"{url}/api/v1/uows" in err and "not JSON" in err


@pytest.mark.parametrize(
    "args",
    [
        ["db", "--init"],
        ["token", "--list"],
        ["user", "--create", "alice"],
        ["standalone"],
        ["--status"],
        ["--start", "scheduler"],
    ],
)
def test_remote_refuses_what_acts_on_this_machine(capsys, settings, args):
    code = launch.main([*args, "--url", "http://127.0.0.1:9"], environ={})
    err = capsys.readouterr().err
    assert code == 2
    assert "not available remotely" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://tactus.example.com", "clear text"),
        ("ftp://127.0.0.1", "http(s)://"),
        ("https://user:secret@tactus.example.com", "user or password"),
    ],
)
def test_remote_bad_url_exits_2_before_sending_anything(capsys, settings, url, problem):
    code = launch.main(["list", "jobs", "--url", url, "--token", "tct_x"], environ={})
    err = capsys.readouterr().err
    assert code == 2 and problem in err and "field 'url'" in err
    assert "secret" not in err


def test_remote_from_environment_token_file_and_options_first(cli, tmp_path):
    environ = {"TACTUS_URL": cli.url, "TACTUS_TOKEN": cli.tokens[Role.VIEWER]}
    assert launch.main(["list", "processes"], environ=environ) == 0
    assert "cron" in cli._capsys.readouterr().out
    token_file = tmp_path / "token"
    token_file.write_text(cli.tokens[Role.OPERATOR] + "\n")
    argv = ["--url", cli.url, "--token-file", str(token_file), "disable", "cron"]
    assert launch.main(argv, environ={}) == 0
    assert cli._capsys.readouterr().out == "cron: disabled\n"
    empty = tmp_path / "empty"
    empty.write_text("")
    argv = ["--url", cli.url, "--token-file", str(empty), "list", "jobs"]
    assert launch.main(argv, environ={}) == 2
    assert "is empty" in cli._capsys.readouterr().err


def test_remote_next_runs_needs_no_installation(capsys, settings):
    argv = ["next-runs", "every 60", "--after", "2026-01-01T00:00:00Z", "--count", "1"]
    assert launch.main([*argv, "--url", "http://127.0.0.1:9"], environ={}) == 0
    assert capsys.readouterr().out.startswith("2026-01-01T00:01:00Z")


#: (arguments, the field named): input the services refuse, so the command line refuses it
#: with exit 2 whether it acts on the store or through the API (which answers 400).
BAD_INPUT = [
    (["list", "jobs", "--from", "abc"], "from"),
    (["list", "jobs", "--to", "2026"], "to"),
    (["list", "jobs", "--limit", "0"], "limit"),
    (["list", "uows", "--limit", "1001"], "limit"),
    (["list", "jobs", "--cursor", "not a cursor"], "cursor"),
    (["list", "jobs", "--process", "Hourly"], "process"),
    (["list", "uows", "--state", "done"], "state"),
    (["list", "workers", "--process", "a b"], "process"),
    (["list", "processes", "--limit", "0"], "limit"),
    (["reprocess", "hourly", "abc"], "timeperiod"),
    (["skip", "Hourly", "2026010100"], "process"),
    (["trigger", "Cron"], "name"),
    (["submit", "--command", "echo \udcff"], "command"),
    (["why", "hourly", "abc"], "timeperiod"),
    (["why", "hourly", "2026023001"], "timeperiod"),
    (["why", "cron", "2026010100"], "timeperiod"),
    (["why", "Hourly"], "name"),
]


@pytest.mark.parametrize(
    ("args", "field"), BAD_INPUT, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_bad_input_exits_2_with_the_same_reason_locally_and_remotely(cli, store, args, field):
    before = state_of(store)
    local = cli.local(*args)
    remote = cli.run(*args, role=Role.ADMIN)
    for code, _, err in (local, remote):
        assert code == 2, err
        assert f"field '{field}'" in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert local[2] == remote[2]
    assert state_of(store) == before


# -- payloads and messages (SPEC section 12) -------------------------------------------------------


def test_submit_with_a_payload_uploads_it_locally_and_remotely(cli, store, tmp_path):
    # given a payload file
    payload = tmp_path / "rows.json"
    payload.write_text('{"rows": [1, 2, 3]}')
    # when a task is submitted with it, through the API and on the store
    remote = cli.json(
        "submit", "--command", 'cat "$TACTUS_PAYLOAD"', "--payload", str(payload), role=Role.ADMIN
    )
    code, out, err = cli.local("submit", "--command", "true", "--payload", str(payload), "--json")
    # then both tasks carry the one payload holding the file's bytes and its type
    assert code == 0, err
    local = json.loads(out)
    assert remote["payload_id"] == local["payload_id"]
    stored = store.get_payload(remote["payload_id"])
    assert (stored.data, stored.content_type) == (payload.read_bytes(), "application/json")
    assert store.get_uow(remote["task_id"]).payload_id == stored.id
    # and the local command's audit entry names the file
    entry = store.list_audit(limit=1).items[0]
    assert (entry.what, entry.target) == ("launch.py submit", f"payload file {payload}")


def test_submit_with_a_payload_that_cannot_be_sent_exits_2(cli, store, tmp_path):
    before = state_of(store)
    code, _, err = cli.local("submit", "--command", "true", "--payload", str(tmp_path / "nope"))
    assert code == 2 and "field '--payload': cannot read" in err
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 11)
    code = launch.main(
        ["submit", "--command", "true", "--payload", str(big)],
        environ={"TACTUS_MAX_PAYLOAD_BYTES": "10"},
    )
    err = cli._capsys.readouterr().err
    assert code == 2 and "larger than max_payload_bytes (10 bytes)" in err
    assert state_of(store) == before


def _uow_with_messages(store, count: int = 3) -> str:
    uow_id = store.find_uows(UowQuery(process="cron"), limit=1).items[0].id
    now = SystemClock().now()
    store.append_messages(uow_id, 1, [(now, f"message {n}") for n in range(1, count + 1)], limit=5)
    return uow_id


def test_remote_messages_print_what_local_prints(cli, store):
    # given a unit of work with six messages, the cap keeping five
    assert cli.run("trigger", "cron")[0] == 0
    uow_id = _uow_with_messages(store, 6)
    # when they are printed through the API and on the store
    remote = cli.run("messages", uow_id, role=Role.VIEWER)
    local = cli.local("messages", uow_id)
    # then both print them in order, and say what the cap dropped
    assert remote == local
    code, out, err = remote
    lines = out.splitlines()
    assert code == 0 and len(lines) == 5
    assert [line.split("  ")[-1] for line in lines] == [f"message {n}" for n in range(1, 6)]
    assert "1 later message(s) dropped" in err
    as_json = [json.loads(line) for line in cli.run("messages", uow_id, "--json")[1].splitlines()]
    assert [(m["seq"], m["attempt"]) for m in as_json] == [(n, 1) for n in range(1, 6)]
    code, _, err = cli.run("messages", "0123456789abcdef01234567")
    assert code == 1 and "not found" in err


@pytest.mark.parametrize("where", ["local", "remote"])
def test_messages_follow_until_the_unit_of_work_ends(cli, store, monkeypatch, where):
    from db.state_change import change_uow
    from mx.cli import commands

    monkeypatch.setattr(commands, "FOLLOW_INTERVAL", 0.05)
    # given a unit of work in progress with one message
    assert cli.run("trigger", "cron")[0] == 0
    uow = store.find_uows(UowQuery(process="cron"), limit=1).items[0]
    clock = SystemClock()
    uow = change_uow(store, uow, "claim", clock=clock, actor="test", changes={})
    store.append_messages(uow.id, 1, [(clock.now(), "first")], limit=100)

    # when it emits two more and ends while the command follows it
    def later() -> None:
        time.sleep(0.3)
        store.append_messages(uow.id, 1, [(clock.now(), "second")], limit=100)
        time.sleep(0.3)
        store.append_messages(uow.id, 1, [(clock.now(), "third")], limit=100)
        change_uow(store, uow, "succeed", clock=clock, actor="test", changes={})

    thread = threading.Thread(target=later)
    thread.start()
    if where == "local":
        code, out, err = cli.local("messages", uow.id, "--follow")
    else:
        code, out, err = cli.run("messages", uow.id, "--follow", role=Role.VIEWER)
    thread.join()
    # then it printed all three, in order, and returned once the unit of work ended
    assert code == 0, err
    assert [line.split("  ")[-1] for line in out.splitlines()] == ["first", "second", "third"]
    assert store.get_uow(uow.id).state is UowState.PROCESSED
