"""The web page through Flask's test client: every page renders for its role, live parts answer
htmx with their fragment, every action is a CSRF-protected POST that changes the store through
the same verbs as the API, and a refused or bad action changes nothing and says why."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from db.credentials import Role
from db.errors import NotFound
from db.states import JobState, UowKind
from mx.views import SECURITY_HEADERS
from tests.mx.conftest import register, snapshot

#: Every page with a GET, as ``seed`` fills the store.
PAGES = [
    "/",
    "/?q=cr",
    "/jobs",
    "/jobs?process=h&state=in_progress",
    "/jobs/h/2026010511",
    "/uows",
    "/uows?process=cron",
    "/uows/{uow}",
    "/uows/{task}",
    "/processes",
    "/processes?kind=freerun",
    "/processes/h",
    "/processes/cron",
    "/processes/adhoc",
    "/supervisor",
    "/workers",
    "/entries/new",
    "/tasks/new",
]
#: Pages a viewer may not open (the forms of actions it may not take).
ACTING_PAGES = frozenset({"/entries/new", "/tasks/new"})
#: Live parts: the page's element that an htmx request gets alone.
FRAGMENTS = {
    "/": "grid",
    "/jobs/h/2026010511": "job",
    "/uows/{uow}": "uow",
    "/supervisor": "supervisor",
    "/workers": "workers",
}


def text(response) -> str:
    return response.get_data(as_text=True)


@pytest.mark.parametrize("path", sorted(set(PAGES) - ACTING_PAGES))
def test_every_page_renders_for_a_viewer_without_actions(client, auth, seed, path):
    response = client.get(
        path.format(uow=seed.uow_id, task=seed.task_id), headers=auth.headers("viewer")
    )
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = text(response)
    assert "<h1" in page
    # A viewer is shown no buttons that would only be refused.
    assert 'method="post" action="/jobs' not in page
    assert "New freerun entry" not in page


@pytest.mark.parametrize("path", PAGES)
def test_get_pages_change_nothing(client, auth, app_store, seed, path):
    before = snapshot(app_store)
    client.get(path.format(uow=seed.uow_id, task=seed.task_id), headers=auth.headers("admin"))
    assert snapshot(app_store) == before


@pytest.mark.parametrize(("path", "element"), FRAGMENTS.items())
def test_htmx_polls_get_only_their_fragment(client, auth, seed, path, element):
    url = path.format(uow=seed.uow_id)
    response = client.get(url, headers={**auth.headers("viewer"), "HX-Request": "true"})
    assert response.status_code == 200
    page = text(response)
    assert "<html" not in page
    assert re.match(rf'\s*(?:{{%.*%}})?\s*<section id="{element}"', page)
    assert f'hx-get="{url}' in page


def test_pages_need_a_login_and_send_the_browser_there(client, seed):
    response = client.get("/jobs?state=processed", headers={"Accept": "text/html"})
    assert response.status_code == 302
    assert response.location == "/login?next=/jobs?state%3Dprocessed"


def test_a_live_part_whose_session_ended_answers_401(client, seed):
    response = client.get("/", headers={"HX-Request": "true", "Accept": "text/html"})
    assert response.status_code == 401


def test_static_files_are_served_without_a_login(client):
    for path in ("/static/tactus.css", "/static/tactus.js", "/static/vendor/htmx-2.0.11.min.js"):
        response = client.get(path)
        assert response.status_code == 200, path
        response.close()


def test_pages_carry_the_security_headers(client, auth, seed):
    response = client.get("/", headers=auth.headers("viewer"))
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    # Nothing inline that the policy would block: scripts come from mx's static files.
    assert "<script>" not in text(response)
    assert "style=" not in text(response)


def test_the_dashboard_colours_each_period_by_its_job_state(client, auth, app_store, seed):
    page = text(client.get("/", headers=auth.headers("viewer")))
    row = re.search(r'<tr data-process="h">(.*?)</tr>', page, re.S).group(1)
    cells = dict(
        re.findall(r'data-state="(\w+)" data-timeperiod="(\d+)"', row)[i][::-1] for i in range(2)
    )
    for timeperiod, state in cells.items():
        assert app_store.get_job("h", timeperiod).state.value == state
    # 24 hourly columns ending with the current hour; hours without a job are blank.
    assert row.count('class="cell') == 24
    assert "2026010513" in re.search(r'data-section="hourly".*?</thead>', page, re.S).group(0)


def test_the_dashboard_pages_and_filters_its_rows(client, auth, app_store, clock, seed):
    for n in range(60):
        register(
            app_store,
            clock,
            name=f"bulk_{n:02d}",
            kind="freerun",
            trigger="every 60",
            command=["true"],
        )
    first = text(client.get("/", headers=auth.headers("viewer")))
    assert first.count("<tr data-process=") == 50
    assert "offset=50" in first
    second = text(client.get("/?offset=50", headers=auth.headers("viewer")))
    assert second.count("<tr data-process=") == 63 - 50  # 60 + h + cron + adhoc (no daemon)
    found = text(client.get("/?q=BULK_0", headers=auth.headers("viewer")))
    assert found.count("<tr data-process=") == 10


# -- actions through the session ------------------------------------------------------------------


def post(client, path, csrf, **form):
    return client.post(path, data={"csrf_token": csrf, **form})


def flashed(client, response) -> str:
    assert response.status_code == 303
    return text(client.get(response.location))


def test_reprocess_from_the_job_page(client, auth, app_store, seed):
    csrf = auth.login("operator")
    path = "/jobs/h/2026010511"
    response = post(client, f"{path}/reprocess", csrf, next=path)
    assert response.location == path
    assert "Reprocessing h 2026010511" in flashed(client, response)
    job = app_store.get_job("h", "2026010511")
    # Back to embryo: the scheduler runs it again (the end-to-end browser test watches that).
    assert job.state is JobState.EMBRYO
    assert any(
        e.trigger == "reprocess" and e.actor == "user user_operator"
        for e in app_store.history("job", job.key)
    )


def test_an_action_without_the_csrf_token_is_refused_and_changes_nothing(
    client, auth, app_store, seed
):
    auth.login("operator")
    before = snapshot(app_store)
    response = client.post("/jobs/h/2026010511/skip", data={})
    assert response.status_code == 403
    audit = snapshot(app_store)["audit"]
    assert snapshot(app_store) | {"audit": audit} == before | {"audit": audit}
    assert app_store.get_job("h", "2026010511").state is not JobState.SKIPPED


def test_a_viewer_cannot_act(client, auth, app_store, seed):
    csrf = auth.login("viewer")
    response = post(client, "/jobs/h/2026010511/skip", csrf)
    assert response.status_code == 403
    assert "forbidden" in text(response)
    assert app_store.get_job("h", "2026010511").state is not JobState.SKIPPED


def test_a_refused_transition_is_shown_and_changes_nothing(client, auth, app_store, seed):
    csrf = auth.login("operator")
    before = app_store.get_uow(seed.finished_uow_id)
    response = post(client, f"/uows/{seed.finished_uow_id}/cancel", csrf)
    assert "Refused:" in flashed(client, response)
    assert app_store.get_uow(seed.finished_uow_id) == before


def test_skip_and_cancel_from_the_page(client, auth, app_store, seed):
    csrf = auth.login("operator")
    response = post(client, "/jobs/h/2026010512/skip", csrf)
    assert "Skipped h 2026010512" in flashed(client, response)
    assert app_store.get_job("h", "2026010512").state is JobState.SKIPPED
    response = post(client, f"/uows/{seed.task_id}/cancel", csrf)
    assert f"Canceled unit of work {seed.task_id}" in flashed(client, response)
    assert app_store.get_uow(seed.task_id).state.value == "canceled"


def test_enable_disable_and_trigger_a_process(client, auth, app_store, seed):
    csrf = auth.login("operator")
    assert "Disabled cron" in flashed(client, post(client, "/processes/cron/disable", csrf))
    assert app_store.get_process("cron").entry.enabled is False
    assert "Enabled cron" in flashed(client, post(client, "/processes/cron/enable", csrf))
    assert app_store.get_process("cron").entry.enabled is True
    page = flashed(client, post(client, "/processes/cron/trigger", csrf))
    uow_id = re.search(r"Triggered cron: unit of work (\S+)\.", page).group(1)
    assert app_store.get_uow(uow_id).kind is UowKind.FREERUN


def test_a_disabled_process_offers_no_trigger_and_refuses_one(client, auth, app_store, seed):
    csrf = auth.login("operator")
    post(client, "/processes/cron/disable", csrf)
    assert 'action="/processes/cron/trigger"' not in text(client.get("/processes/cron"))
    assert 'action="/processes/cron/trigger"' not in text(client.get("/processes"))
    post(client, "/processes/h/disable", csrf)
    assert 'action="/processes/h/trigger"' not in text(client.get("/processes/h"))
    before = snapshot(app_store)
    page = flashed(client, post(client, "/processes/cron/trigger", csrf))
    assert "is disabled: enable it first" in page
    assert snapshot(app_store)["uows"] == before["uows"]


def test_page_actions_and_logins_are_audited(client, auth, app_store, seed):
    # when a user logs in, fails to log in, and skips a job from the page
    csrf = auth.login("operator")
    post(client, "/jobs/h/2026010512/skip", csrf)
    client.post("/login", data={"name": "user_operator", "password": "wrong password"})
    # then each is in the trail with who, what and target
    trail = [(e.who, e.what, e.target) for e in reversed(app_store.list_audit(limit=100).items)]
    assert ("user user_operator", "POST /jobs/<process>/<timeperiod>/skip") in [
        (who, what) for who, what, _ in trail
    ]
    skip = next(t for w, what, t in trail if what.endswith("/skip"))
    assert "h" in skip and "2026010512" in skip
    assert [what for _, what, _ in trail].count("POST /login") >= 2


# -- the freerun entry form -----------------------------------------------------------------------

WORKER_FORM = {
    "name": "nightly",
    "trigger": "30 1 * * *",
    "worker": "tests.fixtures.workers:Succeeding",
    "arguments": '{"table": "visits"}',
    "retries": "2",
    "catchup": "none",
    "enabled": "on",
}


def test_an_operator_creates_a_worker_entry(client, auth, app_store, seed):
    csrf = auth.login("operator")
    response = post(client, "/entries/new", csrf, **WORKER_FORM)
    assert response.location == "/processes/nightly"
    entry = app_store.get_process("nightly").entry
    assert (entry.trigger, entry.retries, entry.catchup.value) == ("30 1 * * *", 2, "none")
    assert dict(entry.arguments) == {"table": "visits"}
    assert entry.enabled is True


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"trigger": "61 * * * *"}, "trigger"),
        ({"retries": "two"}, "retries"),
        ({"arguments": "{not json"}, "arguments"),
        ({"arguments": "[1, 2]"}, "arguments"),
        ({"name": "has space"}, "name"),
        ({"name": "cron"}, "process"),
    ],
)
def test_a_bad_entry_form_names_the_field_and_creates_nothing(
    client, auth, app_store, seed, change, field
):
    csrf = auth.login("operator")
    before = app_store.list_processes()
    response = post(client, "/entries/new", csrf, **{**WORKER_FORM, **change})
    assert response.status_code in (400, 409)
    page = text(response)
    assert re.search(rf'class="flash error"[^>]*>[^<]*{field}', page), page
    # The form comes back with what was typed.
    assert 'value="tests.fixtures.workers:Succeeding"' in page
    assert app_store.list_processes() == before


def test_a_command_entry_needs_the_admin_role(client, auth, app_store, seed):
    form = {**WORKER_FORM, "worker": "", "command": "echo {uow_id} 'two words'"}
    csrf = auth.login("operator")
    response = post(client, "/entries/new", csrf, **form)
    assert response.status_code == 403
    with pytest.raises(NotFound):
        app_store.get_process("nightly")
    csrf = auth.login("admin")
    assert post(client, "/entries/new", csrf, **form).status_code == 303
    assert app_store.get_process("nightly").entry.command == ("echo", "{uow_id}", "two words")


def test_edit_a_freerun_entry(client, auth, app_store, seed):
    csrf = auth.login("operator")
    page = text(client.get("/processes/cron"))
    assert 'name="command" value="true"' in page
    # The form sends every field back; an unchanged command needs no admin role.
    form = {
        "trigger": "every 120",
        "command": "true",
        "retries": "4",
        "enabled": "on",
        "arguments": "{}",
    }
    response = post(client, "/processes/cron/edit", csrf, **form)
    assert response.location == "/processes/cron"
    entry = app_store.get_process("cron").entry
    assert (entry.trigger, entry.retries, entry.command) == ("every 120", 4, ("true",))
    # Changing the command is the admin's.
    response = post(client, "/processes/cron/edit", csrf, **{**form, "command": "rm -rf /tmp/x"})
    assert response.status_code == 403
    assert app_store.get_process("cron").entry.command == ("true",)


def test_delete_a_freerun_entry_made_at_run_time(client, auth, app_store, seed):
    csrf = auth.login("operator")
    post(client, "/entries/new", csrf, **WORKER_FORM)
    assert "Deleted freerun entry nightly" in flashed(
        client, post(client, "/processes/nightly/delete", csrf)
    )
    with pytest.raises(NotFound):
        app_store.get_process("nightly")


# -- supervisor and tasks -------------------------------------------------------------------------


def test_stop_and_start_a_supervised_process(client, auth, app_store, seed):
    csrf = auth.login("operator")
    assert "Asked b1 to stop d" in flashed(client, post(client, "/supervisor/b1/d/stop", csrf))
    assert app_store.get_supervised("b1", "d").desired is False
    assert "Asked b1 to start d" in flashed(client, post(client, "/supervisor/b1/d/start", csrf))
    assert app_store.get_supervised("b1", "d").desired is True
    assert "Refused:" in flashed(client, post(client, "/supervisor/b1/nope/start", csrf))


def test_an_admin_submits_an_ad_hoc_task(client, auth, app_store, seed):
    csrf = auth.login("admin")
    response = post(client, "/tasks/new", csrf, command="echo hi | wc -c", retries="1")
    task_id = response.location.rsplit("/", 1)[1]
    uow = app_store.get_uow(task_id)
    assert (uow.arguments["command"], uow.retries) == ("echo hi | wc -c", 1)
    response = post(client, "/tasks/new", csrf, command="true", scheduled_at="tomorrow")
    assert response.status_code == 400
    assert "scheduled_at" in text(response)


def test_a_viewer_cannot_open_the_entry_form(client, auth, seed):
    auth.login("viewer")
    assert client.get("/entries/new").status_code == 403
    auth.login("operator")
    assert client.get("/entries/new").status_code == 200


def test_an_operator_cannot_open_the_task_form(client, auth, seed):
    auth.login("operator")
    assert client.get("/tasks/new").status_code == 403
    assert "New task" not in text(client.get("/"))


# -- login throttling -----------------------------------------------------------------------------


def test_repeated_failed_logins_are_throttled_then_forgiven(client, auth, clock, seed):
    auth.login("operator")  # the user exists
    client.post("/logout", headers={"X-CSRF-Token": auth.login("operator")})
    for _ in range(10):
        response = client.post("/login", json={"username": "user_operator", "password": "wrong"})
        assert response.status_code == 401
    response = client.post(
        "/login", json={"username": "user_operator", "password": "correct horse battery"}
    )
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) == 300
    assert response.json["error"]["code"] == "too_many_attempts"
    clock.advance(timedelta(minutes=5, seconds=1))
    assert (
        client.post(
            "/login", json={"username": "user_operator", "password": "correct horse battery"}
        ).status_code
        == 200
    )


def test_throttling_counts_the_address_across_user_names(client, clock, seed):
    for n in range(10):
        client.post("/login", json={"username": f"guess{n}", "password": "x"})
    response = client.post("/login", json={"token": "anything"})
    assert response.status_code == 429


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.EXECUTOR])
def test_the_navigation_shows_who_is_logged_in(client, auth, seed, role):
    auth.login(role)
    page = text(client.get("/"))
    assert f"user_{role.value} · {role.value}" in page
