"""Tests of ``steps`` in the registration file (SPEC section 10): loading both forms, every
refusal naming the process and the step, the implicit chain, the run order and re-registering."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from db.errors import InvalidInput, InvalidInputs
from db.flows import upstream_of
from db.models import ProcessEntry, StepEntry
from db.registration import (
    entry_from_mapping,
    load_entries,
    load_file,
    merge_registration,
    plan_registration,
    run_order_text,
    validate_entry,
)
from db.states import ProcessKind, RunIf

#: The flow of the docs: a fan-out and a join, then a clean-up that runs whatever happened.
ETL_STEPS = [
    {"name": "extract", "command": "extract --day {start_timeperiod}"},
    {"name": "transform_a", "command": ["transform", "a"], "depends_on": ["extract"]},
    {
        "name": "transform_b",
        "worker": "tests.fixtures.workers:Succeeding",
        "depends_on": ["extract"],
    },
    {"name": "transform_c", "command": "t c > /tmp/c", "shell": True, "depends_on": ["extract"]},
    {
        "name": "load",
        "command": ["load"],
        "depends_on": ["transform_a", "transform_b", "transform_c"],
        "retries": 5,
        "retry_delay": 30,
        "timeout": 600,
        "arguments": {"table": "sales"},
        "boxes": ["db.*"],
        "noop_exit_code": 3,
    },
    {"name": "cleanup", "command": ["cleanup"], "depends_on": ["load"], "run_if": "all_done"},
]

ETL_YAML = """\
processes:
  - name: etl
    kind: managed
    time_qualifier: daily
    steps:
      - name: extract
        command: extract --day {start_timeperiod}
      - name: transform_a
        command: [transform, a]
        depends_on: [extract]
      - name: transform_b
        worker: tests.fixtures.workers:Succeeding
        depends_on: [extract]
      - name: transform_c
        command: t c > /tmp/c
        shell: true
        depends_on: [extract]
      - name: load
        command: [load]
        depends_on: [transform_a, transform_b, transform_c]
        retries: 5
        retry_delay: 30
        timeout: 600
        arguments: {table: sales}
        boxes: ["db.*"]
        noop_exit_code: 3
      - name: cleanup
        command: [cleanup]
        depends_on: [load]
        run_if: all_done
"""

ETL_PYTHON = """\
from datetime import timedelta

from db.models import StepEntry

process_context = [
    {
        "name": "etl",
        "kind": "managed",
        "time_qualifier": "daily",
        "steps": [
            {"name": "extract", "command": "extract --day {start_timeperiod}"},
            {"name": "transform_a", "command": ["transform", "a"], "depends_on": ["extract"]},
            StepEntry(
                name="transform_b",
                worker="tests.fixtures.workers:Succeeding",
                depends_on=("extract",),
            ),
            {
                "name": "transform_c",
                "command": "t c > /tmp/c",
                "shell": True,
                "depends_on": ["extract"],
            },
            {
                "name": "load",
                "command": ["load"],
                "depends_on": ["transform_a", "transform_b", "transform_c"],
                "retries": 5,
                "retry_delay": timedelta(seconds=30),
                "timeout": 600,
                "arguments": {"table": "sales"},
                "boxes": ["db.*"],
                "noop_exit_code": 3,
            },
            {"name": "cleanup", "command": ["cleanup"], "depends_on": ["load"], "run_if": "all_done"},
        ],
    }
]
"""


def flow(steps: Any = None, **fields: Any) -> dict[str, Any]:
    """A valid freerun entry ``etl`` with ``steps`` (default: two plain steps)."""
    if steps is None:
        steps = [{"name": "one", "command": ["one"]}, {"name": "two", "command": ["two"]}]
    return {"name": "etl", "kind": "freerun", "trigger": "every 60", "steps": steps, **fields}


def plain(**fields: Any) -> dict[str, Any]:
    """A valid freerun entry ``etl`` without steps."""
    return {"name": "etl", "kind": "freerun", "trigger": "every 60", **fields}


def refusals(data: dict[str, Any]) -> list[InvalidInput]:
    with pytest.raises(InvalidInputs) as caught:
        entry_from_mapping(data)
    return caught.value.errors


# -- loading --------------------------------------------------------------------------------------


def test_steps_convert_file_types() -> None:
    entry = entry_from_mapping(flow(ETL_STEPS, kind="managed", time_qualifier="daily"))
    extract, _, transform_b, transform_c, load, cleanup = entry.steps
    assert extract == StepEntry(name="extract", command=("extract", "--day", "{start_timeperiod}"))
    assert transform_b.worker == "tests.fixtures.workers:Succeeding"
    assert transform_b.depends_on == ("extract",)
    assert (transform_c.command, transform_c.shell) == ("t c > /tmp/c", True)
    assert load == StepEntry(
        name="load",
        command=("load",),
        depends_on=("transform_a", "transform_b", "transform_c"),
        retries=5,
        retry_delay=timedelta(seconds=30),
        timeout=timedelta(seconds=600),
        arguments={"table": "sales"},
        boxes=("db.*",),
        noop_exit_code=3,
    )
    assert cleanup.run_if is RunIf.ALL_DONE
    # the process keeps its own worker and command empty: its steps run
    assert (entry.worker, entry.command, entry.shell) == (None, None, False)


def test_steps_yaml_and_python_forms_load_to_the_same_entries(tmp_path: Path) -> None:
    (tmp_path / "etl.yaml").write_text(ETL_YAML, encoding="utf-8")
    (tmp_path / "process_context.py").write_text(ETL_PYTHON, encoding="utf-8")
    from_yaml = load_file(tmp_path / "etl.yaml")
    from_python = load_file(tmp_path / "process_context.py")
    assert from_yaml == from_python
    assert from_yaml == [
        entry_from_mapping(flow(ETL_STEPS, kind="managed", time_qualifier="daily"))
    ]


def test_steps_round_trip_through_to_dict_and_from_dict() -> None:
    entry = entry_from_mapping(flow(ETL_STEPS))
    data = entry.to_dict()
    assert ProcessEntry.from_dict(data) == entry
    # the file form loads back by the rules too (what the API and `register --url` send)
    assert entry_from_mapping(data) == entry
    assert load_entries([data], "etl.yaml") == [entry]
    assert validate_entry(entry) == entry


def test_steps_absent_round_trip_as_none() -> None:
    entry = entry_from_mapping(plain(command=["x"]))
    assert entry.steps == () and entry.to_dict()["steps"] is None
    assert entry_from_mapping(entry.to_dict()) == entry
    assert validate_entry(entry) == entry


def test_steps_without_depends_on_run_in_file_order() -> None:
    entry = entry_from_mapping(
        flow([{"name": n, "command": [n]} for n in ("extract", "transform", "load")])
    )
    assert all(step.depends_on is None for step in entry.steps)
    assert upstream_of(entry.steps) == {
        "extract": (),
        "transform": ("extract",),
        "load": ("transform",),
    }
    assert run_order_text(entry) == "extract -> transform -> load"


def test_steps_run_order_text_shows_waves() -> None:
    entry = entry_from_mapping(flow(ETL_STEPS))
    assert run_order_text(entry) == (
        "extract -> [transform_a, transform_b, transform_c] -> load -> cleanup"
    )


def test_steps_an_empty_depends_on_is_given() -> None:
    # one step naming depends_on turns the implicit chain off: `[]` makes a root
    entry = entry_from_mapping(
        flow([{"name": "a", "command": ["a"]}, {"name": "b", "command": ["b"], "depends_on": []}])
    )
    assert upstream_of(entry.steps) == {"a": (), "b": ()}
    assert run_order_text(entry) == "[a, b]"


def test_steps_a_field_set_to_none_counts_as_absent() -> None:
    entry = entry_from_mapping(
        flow([{"name": "a", "command": ["a"], "retries": None, "depends_on": None, "worker": None}])
    )
    assert entry.steps == (StepEntry(name="a", command=("a",)),)


# -- refusals -------------------------------------------------------------------------------------


def step(name: str = "s", **fields: Any) -> dict[str, Any]:
    return {"name": name, "command": ["run"], **fields}


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        pytest.param(flow("a"), "steps", "must be a list of steps", id="not-a-list"),
        pytest.param(flow({"a": {}}), "steps", "must be a list of steps", id="a-mapping"),
        pytest.param(flow([]), "steps", "at least one step", id="empty"),
        pytest.param(flow([step(), 7]), "steps[1]", "must be a mapping", id="step-not-mapping"),
        pytest.param(flow([{"command": ["x"]}]), "steps[0].name", "required", id="no-name"),
        pytest.param(flow([step("Load")]), "steps[0].name", "[a-z0-9_]+", id="bad-name"),
        pytest.param(flow([step("x" * 33)]), "steps[0].name", "at most 32", id="long-name"),
        pytest.param(flow([step(bogus=1)]), "steps.s.bogus", "unknown field", id="unknown"),
        pytest.param(
            flow([step(retry=1)]), "steps.s.retry", "did you mean 'retries'", id="unknown-hint"
        ),
        pytest.param(
            flow([step(), step("t"), step()]), "steps.s.name", "defined 2 times", id="duplicate"
        ),
        pytest.param(
            flow([{"name": "s"}]), "steps.s.worker", "one of worker or command", id="no-program"
        ),
        pytest.param(
            flow([step(worker="a.b:C")]), "steps.s.command", "not both", id="worker-and-command"
        ),
        pytest.param(
            flow([step(worker="nope")]), "steps.s.worker", "module.path:Class", id="worker"
        ),
        pytest.param(
            flow([step(command="run {day}")]),
            "steps.s.command",
            "unknown placeholder {day}",
            id="placeholder",
        ),
        pytest.param(flow([step(command=[])]), "steps.s.command", "empty argv", id="empty-argv"),
        pytest.param(
            flow([step(shell=True)]), "steps.s.shell", "needs command as one string", id="shell"
        ),
        pytest.param(
            flow([step(depends_on="t"), step("t")]),
            "steps.s.depends_on",
            "list of step names",
            id="depends-on-string",
        ),
        pytest.param(
            flow([step(depends_on=[1])]),
            "steps.s.depends_on",
            "list of step names",
            id="depends-on-number",
        ),
        pytest.param(
            flow([step(depends_on=["s"])]),
            "steps.s.depends_on",
            "names the step itself",
            id="depends-on-itself",
        ),
        pytest.param(
            flow([step("transform_a"), step("load", depends_on=["transform_b"])]),
            "steps.load.depends_on",
            "unknown step 'transform_b' (did you mean 'transform_a'?)",
            id="depends-on-unknown",
        ),
        pytest.param(
            flow([step(run_if="sometimes")]),
            "steps.s.run_if",
            "all_succeeded, all_done, any_failed",
            id="run-if",
        ),
        pytest.param(flow([step(retries=-1)]), "steps.s.retries", ">= 0", id="retries"),
        pytest.param(flow([step(retries=True)]), "steps.s.retries", "integer", id="retries-bool"),
        pytest.param(flow([step(retry_delay=0)]), "steps.s.retry_delay", "> 0", id="retry-delay"),
        pytest.param(flow([step(timeout="1h")]), "steps.s.timeout", "seconds", id="timeout"),
        pytest.param(
            flow([step(timeout=10**12)]), "steps.s.timeout", "seconds up to", id="timeout-huge"
        ),
        pytest.param(
            flow([step(noop_exit_code=0)]), "steps.s.noop_exit_code", "from 1 to 255", id="noop"
        ),
        pytest.param(flow([step(boxes=["("])]), "steps.s.boxes", "regular expression", id="boxes"),
        pytest.param(flow([step(boxes="db.*")]), "steps.s.boxes", "list of", id="boxes-string"),
        pytest.param(flow([step(arguments=[1])]), "steps.s.arguments", "mapping", id="arguments"),
        pytest.param(
            flow([step(arguments={"x": {1, 2}})]),
            "steps.s.arguments",
            "JSON cannot hold",
            id="arguments-not-json",
        ),
        pytest.param(
            flow([step()], command=["x"]), "command", "not with steps", id="process-command"
        ),
        pytest.param(
            flow([step()], worker="a.b:C"), "worker", "not with steps", id="process-worker"
        ),
        pytest.param(
            {"name": "etl", "kind": "daemon", "command": ["x"], "steps": [step()]},
            "steps",
            "not valid for a daemon process",
            id="daemon",
        ),
    ],
)
def test_steps_refused(data: dict[str, Any], field: str, problem: str) -> None:
    errors = refusals(data)
    assert [(e.entity, e.field) for e in errors] == [("process 'etl'", field)], errors
    assert problem in errors[0].problem
    # the message names the process and the step
    assert f"process 'etl', field '{field}'" in errors[0].message


@pytest.mark.parametrize(
    ("depends", "cycle"),
    [
        ({"a": ["c"], "b": ["a"], "c": ["b"]}, "a -> c -> b -> a"),
        ({"a": [], "b": ["a", "c"], "c": ["b"]}, "b -> c -> b"),
        ({"a": ["b"], "b": ["a"], "c": []}, "a -> b -> a"),
    ],
)
def test_steps_cycle_is_refused_naming_the_steps_along_it(
    depends: dict[str, list[str]], cycle: str
) -> None:
    errors = refusals(flow([step(name, depends_on=ups) for name, ups in depends.items()]))
    first = cycle.split(" ")[0]
    assert [(e.entity, e.field) for e in errors] == [("process 'etl'", f"steps.{first}.depends_on")]
    assert errors[0].problem == f"dependency cycle: {cycle}"


def test_steps_every_problem_is_reported_at_once() -> None:
    errors = refusals(
        flow(
            [step("a", retries=-1), step("b", depends_on=["a", "zz"]), {"command": ["x"]}],
            command=["x"],
        )
    )
    assert sorted(e.field for e in errors) == [
        "command",
        "steps.a.retries",
        "steps.b.depends_on",
        "steps[2].name",
    ]


def test_steps_depending_on_a_broken_step_is_not_reported_again() -> None:
    errors = refusals(flow([step("a", bogus=1), step("b", depends_on=["a"])]))
    assert [e.field for e in errors] == ["steps.a.bogus"]


def test_steps_kind_managed_is_allowed_and_daemon_without_them_is_unchanged() -> None:
    managed = entry_from_mapping(flow(kind="managed", time_qualifier="daily", trigger=None))
    assert managed.kind is ProcessKind.MANAGED and len(managed.steps) == 2
    daemon = entry_from_mapping({"name": "d", "kind": "daemon", "command": ["x"], "steps": None})
    assert daemon.steps == ()


def test_steps_invalid_file_names_process_and_step(tmp_path: Path) -> None:
    path = tmp_path / "etl.yaml"
    path.write_text(ETL_YAML.replace("depends_on: [load]", "depends_on: [lod]"), encoding="utf-8")
    with pytest.raises(InvalidInputs) as caught:
        load_file(path)
    assert caught.value.message == (
        "process 'etl', field 'steps.cleanup.depends_on': names unknown step 'lod' "
        "(did you mean 'load'?)"
    )


def test_steps_in_a_python_file_may_be_step_entries_with_errors(tmp_path: Path) -> None:
    path = tmp_path / "process_context.py"
    path.write_text(
        textwrap.dedent(
            """\
            from db.models import StepEntry

            process_context = {
                "etl": {
                    "kind": "freerun",
                    "trigger": "every 60",
                    "steps": [StepEntry(name="a", command=("x",), retries=-1)],
                }
            }
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(InvalidInputs) as caught:
        load_file(path)
    assert [(e.entity, e.field) for e in caught.value.errors] == [
        ("process 'etl'", "steps.a.retries")
    ]


# -- re-registering -------------------------------------------------------------------------------


def registered(data: dict[str, Any]) -> tuple[ProcessEntry, dict[str, Any]]:
    entry = entry_from_mapping(data)
    return entry, entry.to_dict()


def test_reregister_with_changed_steps_updates_them() -> None:
    # given a flow registered from the file
    stored, last = registered(flow())
    # when the file changes its steps
    now = entry_from_mapping(flow([step("one"), step("two", retries=9), step("three")]))
    plan = plan_registration({"etl": (stored, last, "file")}, [now], prune=False)
    # then the update carries the new steps, and the registered dict says so
    (update,) = plan.update
    assert update.entry.steps == now.steps
    assert update.registered["steps"] == [s.to_dict() for s in now.steps]


def test_reregister_without_steps_leaves_no_steps() -> None:
    stored, last = registered(flow())
    now = entry_from_mapping(plain(command=["plain"]))
    effective, new_registered = merge_registration(stored, last, now)
    assert effective.steps == () and effective.command == ("plain",)
    assert new_registered["steps"] is None
    validate_entry(effective)


def test_reregister_steps_replace_a_command_set_at_run_time() -> None:
    # given a flow whose steps were replaced by a command at run time
    stored, last = registered(flow())
    stored = replace(stored, steps=(), command=("edited",))
    # when the file changes the steps
    now = entry_from_mapping(flow([step("only")]))
    effective, _ = merge_registration(stored, last, now)
    # then what runs comes from the file as a whole: steps, and no command next to them
    assert effective.steps == now.steps and effective.command is None
    validate_entry(effective)


def test_reregister_unchanged_steps_keep_a_run_time_edit() -> None:
    stored, last = registered(flow())
    stored = replace(stored, enabled=False)
    plan = plan_registration(
        {"etl": (stored, last, "file")}, [entry_from_mapping(flow())], prune=False
    )
    assert plan.unchanged == ("etl",)


@pytest.mark.parametrize("old", [None, []], ids=["no-key", "empty-list"])
def test_reregister_registered_dict_from_before_steps_is_unchanged(old: list | None) -> None:
    # given a process registered by a version that wrote no `steps` (or an empty list), with a
    # command edited at run time
    file_entry = entry_from_mapping(plain(command=["x"]))
    last = file_entry.to_dict()
    if old is None:
        del last["steps"]
    else:
        last["steps"] = old
    stored = replace(file_entry, command=("edited",))
    # when the same file is registered again
    plan = plan_registration({"etl": (stored, last, "file")}, [file_entry], prune=False)
    # then nothing changes: the run-time command survives
    assert plan.unchanged == ("etl",)
