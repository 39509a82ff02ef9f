"""Jobs and units of work: lists with filters, detail with history and output (and a flow run's
DAG), and the actions reprocess, skip, cancel and retry-failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flask import Blueprint, request, url_for

from db.errors import InvalidInput
from db.states import JobState, UowState
from mx.runtime import runtime
from mx.services import actions, jobs, uows
from mx.views import charts, dag
from mx.views.common import act, ctx, render
from mx.views.why import why_panel

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

bp = Blueprint("work", __name__)

#: Rows of one page of a list.
PAGE_SIZE = 50
#: Job states from which a job can be skipped / reprocessed (buttons shown; the machine decides).
ACTIVE_UOW_STATES = frozenset({UowState.REQUESTED.value, UowState.IN_PROGRESS.value})
#: The state of a flow run whose failed steps can be run again (button shown; the service
#: decides).
RETRY_FAILED_STATE = UowState.CANCELED.value


def _uow_href() -> Callable[[str], str]:
    """A unit of work's page from its id (one ``url_for`` per page, not per link)."""
    root = url_for(".uow_list")
    return lambda uow_id: f"{root}/{quote(uow_id, safe='')}"


def _flow(uow_id: str, state: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """A flow run's part of a page: its DAG, and whether "Retry failed" is offered."""
    return {
        "uow_id": uow_id,
        "chart": dag.layout(steps, step_href=_uow_href()),
        "retryable": state == RETRY_FAILED_STATE,
    }


def _filters(*names: str) -> dict[str, str]:
    return {n: v.strip()[:200] for n in names if (v := request.args.get(n, "")).strip()}


def _listing(fetch: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """One page, or the error of a bad filter shown above an empty list."""
    try:
        return fetch(), None
    except InvalidInput as exc:
        return {"items": [], "next_cursor": None}, f"{exc.field}: {exc.message}"


@bp.get("/jobs")
def job_list() -> ResponseReturnValue:
    filters = _filters("process", "state", "from", "to")
    cursor = request.args.get("cursor") or None
    page, error = _listing(
        lambda: jobs.list_jobs(
            runtime().store,
            process=filters.get("process"),
            state=filters.get("state"),
            from_timeperiod=filters.get("from"),
            to_timeperiod=filters.get("to"),
            limit=PAGE_SIZE,
            cursor=cursor,
        )
    )
    return render("work/jobs.html", page=page, filters=filters, error=error, states=list(JobState))


@bp.get("/jobs/<process>/<timeperiod>")
def job_detail(process: str, timeperiod: str) -> ResponseReturnValue:
    rt = runtime()
    now = rt.clock.now()
    job = jobs.job_page(rt.store, process, timeperiod, now=now)
    timeline = charts.timeline(
        job["attempts"], now=now, current=job["uow_id"], uow_href=_uow_href()
    )
    flow = job["flow"]
    return render(
        "work/job.html",
        fragment="work/_job.html",
        job=job,
        timeline=timeline,
        flow=None if flow is None else _flow(flow["uow_id"], flow["state"], flow["steps"]),
        active_states=ACTIVE_UOW_STATES,
        why=why_panel(process, timeperiod),
    )


@bp.post("/jobs/<process>/<timeperiod>/reprocess")
def job_reprocess(process: str, timeperiod: str) -> ResponseReturnValue:
    return act(
        lambda: actions.reprocess(ctx(), process, timeperiod),
        done=lambda changed: f"Reprocessing {process} {timeperiod}: {len(changed)} job(s) reset.",
        to=url_for(".job_detail", process=process, timeperiod=timeperiod),
    )


@bp.post("/jobs/<process>/<timeperiod>/skip")
def job_skip(process: str, timeperiod: str) -> ResponseReturnValue:
    return act(
        lambda: actions.skip(ctx(), process, timeperiod),
        done=lambda changed: f"Skipped {process} {timeperiod}: {len(changed)} job(s) changed.",
        to=url_for(".job_detail", process=process, timeperiod=timeperiod),
    )


@bp.get("/uows")
def uow_list() -> ResponseReturnValue:
    filters = _filters("process", "state")
    cursor = request.args.get("cursor") or None
    page, error = _listing(
        lambda: uows.list_uows(
            runtime().store,
            process=filters.get("process"),
            state=filters.get("state"),
            limit=PAGE_SIZE,
            cursor=cursor,
        )
    )
    return render(
        "work/uows.html",
        page=page,
        filters=filters,
        error=error,
        states=list(UowState),
        active_states=ACTIVE_UOW_STATES,
    )


@bp.get("/uows/<uow_id>")
def uow_detail(uow_id: str) -> ResponseReturnValue:
    uow = uows.uow_page(runtime().store, uow_id)
    return render(
        "work/uow.html",
        fragment="work/_uow.html",
        uow=uow,
        flow=_flow(uow["id"], uow["state"], uow["steps"]) if uow["flow"] else None,
        active_states=ACTIVE_UOW_STATES,
    )


@bp.post("/uows/<uow_id>/cancel")
def uow_cancel(uow_id: str) -> ResponseReturnValue:
    return act(
        lambda: actions.cancel(ctx(), uow_id),
        done=lambda _: f"Canceled unit of work {uow_id}.",
        to=url_for(".uow_detail", uow_id=uow_id),
    )


@bp.post("/uows/<uow_id>/retry-failed")
def uow_retry_failed(uow_id: str) -> ResponseReturnValue:
    return act(
        lambda: actions.retry_failed(ctx(), uow_id),
        done=_retried,
        to=url_for(".uow_detail", uow_id=uow_id),
    )


def _retried(result: dict[str, Any]) -> str:
    run = result["uow"]
    rerun = ", ".join(sorted(result["rerun"])) or "no step (they had been put back already)"
    return f"Retrying flow run {run['id']}: re-running {rerun}."
