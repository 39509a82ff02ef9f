"""Tests of the registration file: loading, validation, the re-register rule and the plan."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from db.errors import InvalidInput, InvalidInputs
from db.models import ProcessEntry
from db.registration import (
    PlannedUpdate,
    RegistrationPlan,
    entry_from_mapping,
    load_file,
    merge_registration,
    plan_registration,
    validate_entries,
    validate_entry,
)
from db.states import Blocking, Catchup, ProcessKind, Qualifier, StateMachineName

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CONTEXTS = ROOT / "tests" / "fixtures" / "contexts"

EXAMPLE_NAMES = [
    "site_hourly",
    "site_daily",
    "site_monthly",
    "client_daily",
    "nightly_export",
    "clock_probe",
    "office_report",
    "tmp_sweep",
    "orders_etl",
    "ticker",
]


def managed(name: str = "p", **fields: Any) -> dict[str, Any]:
    """A valid managed entry in file form, with ``fields`` on top."""
    return {"name": name, "kind": "managed", "time_qualifier": "daily", "worker": "w.m:C", **fields}


def freerun(name: str = "p", **fields: Any) -> dict[str, Any]:
    """A valid freerun entry in file form, with ``fields`` on top."""
    return {"name": name, "kind": "freerun", "trigger": "every 60", "command": ["true"], **fields}


def daemon(name: str = "p", **fields: Any) -> dict[str, Any]:
    """A valid daemon entry in file form, with ``fields`` on top."""
    return {"name": name, "kind": "daemon", "command": ["true"], **fields}


def without(data: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key not in fields}


def entry(data: dict[str, Any]) -> ProcessEntry:
    return entry_from_mapping(data)


def messages(error: InvalidInput) -> list[str]:
    return [e.message for e in getattr(error, "errors", [error])]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# -- the examples ---------------------------------------------------------------------------------


def test_load_file_examples_python_and_yaml_are_equal() -> None:
    from_python = load_file(EXAMPLES / "process_context.py")
    from_yaml = load_file(EXAMPLES / "process_context.yaml")

    assert from_python == from_yaml
    assert [e.name for e in from_python] == EXAMPLE_NAMES


def test_load_file_examples_convert_file_types() -> None:
    entries = {e.name: e for e in load_file(EXAMPLES / "process_context.yaml")}

    assert entries["site_daily"].lag == timedelta(seconds=600)
    assert entries["site_daily"].trigger == "every 60"
    assert entries["site_monthly"].state_machine is StateMachineName.RECOMPUTING
    assert entries["client_daily"].depends_on == ("site_daily",)
    assert entries["client_daily"].blocking is Blocking.DEPENDENCIES
    assert entries["nightly_export"].command == (
        "echo",
        "exporting for {process}, unit {uow_id}, attempt {attempt}",
    )
    assert entries["tmp_sweep"].command == "echo sweeping for {process} && sleep 1 && true"
    assert entries["ticker"].kind is ProcessKind.DAEMON


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_entry_from_mapping_loads_to_dict_back(name: str) -> None:
    original = {e.name: e for e in load_file(EXAMPLES / "process_context.yaml")}[name]

    assert entry_from_mapping(original.to_dict()) == original
    assert validate_entry(original) == original


# -- one entry ------------------------------------------------------------------------------------


def test_entry_from_mapping_converts_file_types() -> None:
    result = entry(
        managed(
            lag=90,
            retry_delay=1.5,
            timeout=timedelta(minutes=5),
            depends_on=["a", "b"],
            boxes=["dev.*"],
            blocking="children",
            arguments={"sites": ("x", "y")},
            start_timeperiod=2026111800,
        )
    )

    assert result.kind is ProcessKind.MANAGED
    assert result.time_qualifier is Qualifier.DAILY
    assert result.blocking is Blocking.CHILDREN
    assert result.lag == timedelta(seconds=90)
    assert result.retry_delay == timedelta(seconds=1.5)
    assert result.timeout == timedelta(minutes=5)
    assert result.depends_on == ("a", "b")
    assert result.boxes == ("dev.*",)
    assert result.arguments == {"sites": ["x", "y"]}
    assert result.start_timeperiod == "2026111800"


def test_entry_from_mapping_managed_trigger_defaults_to_every_60() -> None:
    assert entry(managed()).trigger == "every 60"


def test_entry_from_mapping_splits_a_command_string_without_shell() -> None:
    result = entry(freerun(command="echo 'a b' {process} | wc"))

    assert result.command == ("echo", "a b", "{process}", "|", "wc")
    assert result.shell is False


def test_entry_from_mapping_keeps_a_command_string_with_shell() -> None:
    result = entry(freerun(command="echo {process} | wc -c", shell=True))

    assert result.command == "echo {process} | wc -c"


def test_entry_from_mapping_accepts_escaped_braces_and_format_specs() -> None:
    result = entry(freerun(command="awk '{{print $1}}' {attempt:03d}", shell=True))

    assert result.command == "awk '{{print $1}}' {attempt:03d}"


def test_entry_from_mapping_none_counts_as_absent() -> None:
    result = entry(freerun(time_qualifier=None, timezone=None, description=None))

    assert result.time_qualifier is None
    assert result.description == ""


def test_entry_from_mapping_accepts_defaults_of_fields_of_other_kinds() -> None:
    # to_dict() writes every field; its defaults must not count as "set for the wrong kind".
    result = entry(daemon(lag=300, catchup="latest", max_active=1, depends_on=[]))

    assert result.kind is ProcessKind.DAEMON
    assert result.catchup is Catchup.LATEST


MANAGED = managed("p")
FREERUN = freerun("p")
DAEMON = daemon("p")
WEEKLY = "must be one of hourly, daily, monthly, yearly (got 'weekly')"
PLACES = "{attempt}, {end_timeperiod}, {process}, {start_timeperiod}, {timeperiod}, {uow_id}"


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        (without(MANAGED, "name"), "name", "required"),
        ({**MANAGED, "name": "Site-Daily"}, "name", "must match [a-z0-9_]+ (got 'Site-Daily')"),
        ({**MANAGED, "name": 7}, "name", "must match [a-z0-9_]+ (got 7)"),
        (without(MANAGED, "kind"), "kind", "required"),
        (
            {**MANAGED, "kind": "cron"},
            "kind",
            "must be one of managed, freerun, daemon (got 'cron')",
        ),
        ({**FREERUN, "trigerr": "x"}, "trigerr", "unknown field (did you mean 'trigger'?)"),
        ({**FREERUN, "colour": "red"}, "colour", "unknown field"),
        (
            {**FREERUN, "time_qualifier": "daily"},
            "time_qualifier",
            "not valid for a freerun process (only for managed)",
        ),
        (
            {**DAEMON, "trigger": "every 60"},
            "trigger",
            "not valid for a daemon process (only for managed, freerun)",
        ),
        (
            {**DAEMON, "workers": 2},
            "workers",
            "not valid for a daemon process (only for managed, freerun)",
        ),
        (
            {**MANAGED, "timezone": "UTC"},
            "timezone",
            "not valid for a managed process (only for freerun)",
        ),
        (
            {**FREERUN, "depends_on": ["a"]},
            "depends_on",
            "not valid for a freerun process (only for managed)",
        ),
        (without(MANAGED, "time_qualifier"), "time_qualifier", "required for a managed process"),
        ({**MANAGED, "time_qualifier": "weekly"}, "time_qualifier", WEEKLY),
        (without(FREERUN, "trigger"), "trigger", "required for a freerun process"),
        ({**MANAGED, "command": ["true"]}, "command", "give either worker or command, not both"),
        (without(MANAGED, "worker"), "worker", "one of worker or command is required"),
        (without(DAEMON, "command"), "worker", "one of worker or command is required"),
        (
            {**MANAGED, "worker": "w.m.C"},
            "worker",
            "must look like module.path:Class (got 'w.m.C')",
        ),
        (
            {**MANAGED, "worker": "w m:C"},
            "worker",
            "must look like module.path:Class (got 'w m:C')",
        ),
        ({**FREERUN, "command": []}, "command", "must name a program to run (an empty argv)"),
        (
            {**FREERUN, "command": ["", "x"]},
            "command",
            "must name a program to run (an empty argv)",
        ),
        (
            {**FREERUN, "command": ["echo", 5]},
            "command",
            "must be a list of strings (an argv) or one string (got 5 in the list)",
        ),
        ({**FREERUN, "command": "   "}, "command", "must not be empty"),
        (
            {**FREERUN, "command": ["echo", "{date}"]},
            "command",
            f"unknown placeholder {{date}} in '{{date}}'; known: {PLACES}",
        ),
        (
            {**FREERUN, "command": "echo {}"},
            "command",
            f"unknown placeholder {{}} in 'echo {{}}'; known: {PLACES}",
        ),
        (
            {**FREERUN, "command": ["echo", "{process"]},
            "command",
            "expected '}' before end of string in '{process' (write {{ and }} for literal braces)",
        ),
        (
            {**FREERUN, "command": "echo 'open"},
            "command",
            "cannot be split into arguments: No closing quotation",
        ),
        ({**FREERUN, "shell": True}, "shell", "shell: true needs command as one string"),
        ({**FREERUN, "shell": "yes"}, "shell", "must be true or false (got 'yes')"),
        (
            {**MANAGED, "start_timeperiod": "2026111813"},
            "start_timeperiod",
            "'2026111813' is not a daily timeperiod: expected %Y%m%d00 such as 2026010500 "
            "(hour digits must be 00)",
        ),
        ({**MANAGED, "lag": -1}, "lag", "must be >= 0 seconds (got -1)"),
        ({**MANAGED, "lag": float("inf")}, "lag", "must be a finite number of seconds (got inf)"),
        ({**FREERUN, "max_active": 0}, "max_active", "must be >= 1 (got 0)"),
        ({**FREERUN, "max_active": True}, "max_active", "must be an integer >= 1 (got True)"),
        ({**FREERUN, "retries": -1}, "retries", "must be >= 0 (got -1)"),
        ({**FREERUN, "retries": 1.5}, "retries", "must be an integer >= 0 (got 1.5)"),
        ({**FREERUN, "retry_delay": 0}, "retry_delay", "must be > 0 seconds (got 0)"),
        ({**FREERUN, "timeout": -5}, "timeout", "must be > 0 seconds (got -5)"),
        ({**FREERUN, "timeout": "60"}, "timeout", "must be a number of seconds > 0 (got '60')"),
        ({**FREERUN, "timeout": False}, "timeout", "must be a number of seconds > 0 (got False)"),
        ({**FREERUN, "workers": -1}, "workers", "must be >= 0 (got -1)"),
        (
            {**FREERUN, "boxes": []},
            "boxes",
            "must list at least one regular expression (['.*'] runs everywhere)",
        ),
        (
            {**FREERUN, "boxes": "dev.*"},
            "boxes",
            "must be a list of regular expressions (got 'dev.*')",
        ),
        (
            {**FREERUN, "boxes": ["dev(["]},
            "boxes",
            "'dev([' is not a valid regular expression: unterminated character set at position 4",
        ),
        ({**FREERUN, "arguments": [1, 2]}, "arguments", "must be a mapping (got list)"),
        (
            {**FREERUN, "arguments": {"at": timedelta(1)}},
            "arguments",
            "arguments.at is a timedelta, which JSON cannot hold",
        ),
        ({**FREERUN, "arguments": {1: "x"}}, "arguments", "arguments has a non-string key 1"),
        (
            {**FREERUN, "arguments": {"x": [float("nan")]}},
            "arguments",
            "arguments.x[0] is nan, which JSON cannot hold",
        ),
        ({**FREERUN, "enabled": "no"}, "enabled", "must be true or false (got 'no')"),
        ({**FREERUN, "description": 5}, "description", "must be a string (got 5)"),
        (
            {**MANAGED, "depends_on": "site_daily"},
            "depends_on",
            "must be a list of process names (got 'site_daily')",
        ),
        ({**MANAGED, "depends_on": ["Site"]}, "depends_on", "must match [a-z0-9_]+ (got 'Site')"),
        ({**MANAGED, "depends_on": ["a", "b", "a"]}, "depends_on", "names a more than once"),
        ({**MANAGED, "tree": "Site Tree"}, "tree", "must match [a-z0-9_]+ (got 'Site Tree')"),
        (
            {**FREERUN, "catchup": "some"},
            "catchup",
            "must be one of all, latest, none (got 'some')",
        ),
        (
            {**MANAGED, "state_machine": "batch"},
            "state_machine",
            "must be one of discrete, continuous, recomputing (got 'batch')",
        ),
        (
            {**MANAGED, "blocking": "hard"},
            "blocking",
            "must be one of normal, children, dependencies (got 'hard')",
        ),
        ({**FREERUN, "trigger": 60}, "trigger", "must be a string (got 60)"),
    ],
)
def test_entry_from_mapping_rejects(data: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(InvalidInputs) as caught:
        entry_from_mapping(data, index=3)

    named = isinstance(data.get("name"), str) and data["name"].islower()
    entity = "process 'p'" if named else "processes[3]"
    assert messages(caught.value) == [f"{entity}, field {field!r}: {problem}"]
    assert caught.value.errors[0].field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({**FREERUN, "trigger": "every banana"}, "trigger"),
        ({**FREERUN, "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({**MANAGED, "trigger": "every banana"}, "trigger"),
    ],
)
def test_entry_from_mapping_rejects_what_parse_trigger_refuses(
    data: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputs) as caught:
        entry_from_mapping(data)

    assert [(e.entity, e.field) for e in caught.value.errors] == [("process 'p'", field)]


def test_entry_from_mapping_without_index_or_name_names_no_entry() -> None:
    with pytest.raises(InvalidInputs) as caught:
        entry_from_mapping(without(DAEMON, "name"))

    assert messages(caught.value) == ["field 'name': required"]


def test_entry_from_mapping_refuses_a_non_mapping() -> None:
    with pytest.raises(InvalidInputs) as caught:
        entry_from_mapping(["name", "p"], index=0)  # type: ignore[arg-type]

    assert messages(caught.value) == ["processes[0], field 'entry': must be a mapping (got list)"]


def test_entry_from_mapping_reports_every_problem_of_an_entry() -> None:
    data = {"name": "p", "kind": "managed", "retries": -1, "lag": "soon", "boxes": [], "lgo": 1}

    with pytest.raises(InvalidInputs) as caught:
        entry_from_mapping(data)

    assert [e.field for e in caught.value.errors] == [
        "retries",
        "lag",
        "boxes",
        "lgo",
        "time_qualifier",
        "worker",
    ]


# -- all entries ----------------------------------------------------------------------------------


def entries(*data: dict[str, Any]) -> list[ProcessEntry]:
    return [entry_from_mapping(d) for d in data]


SITE_TREE = (
    managed("site_hourly", tree="site", time_qualifier="hourly"),
    managed("site_daily", tree="site"),
    managed("site_monthly", tree="site", time_qualifier="monthly"),
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            [daemon("a"), freerun("a")],
            ["process 'a', field 'name': defined 2 times"],
        ),
        (
            [managed("site_daily"), managed("client_daily", depends_on=["site_dialy"])],
            [
                "process 'client_daily', field 'depends_on': names unknown process 'site_dialy' (did you mean 'site_daily'?)"
            ],
        ),
        (
            [freerun("export"), managed("client_daily", depends_on=["export"])],
            [
                "process 'client_daily', field 'depends_on': names 'export', a freerun process; "
                "only managed processes can be depended on"
            ],
        ),
        (
            [managed("client_daily", depends_on=["client_daily"])],
            ["process 'client_daily', field 'depends_on': names the process itself"],
        ),
        (
            [*SITE_TREE, managed("site_daily_2", tree="site")],
            ["process 'site_daily_2', field 'tree': tree 'site' already has 'site_daily' at daily"],
        ),
        (
            [
                managed("site_daily", depends_on=["client_daily"]),
                managed("client_daily", depends_on=["site_daily"]),
            ],
            [
                "process 'site_daily', field 'depends_on': dependency cycle: site_daily -> client_daily -> site_daily"
            ],
        ),
        (
            [
                managed("a", depends_on=["b"]),
                managed("b", depends_on=["c"]),
                managed("c", depends_on=["a"]),
            ],
            ["process 'a', field 'depends_on': dependency cycle: a -> b -> c -> a"],
        ),
        (
            # In a tree a coarser job waits for its finer children: site_daily -> site_hourly.
            [
                managed(
                    "site_hourly", tree="site", time_qualifier="hourly", depends_on=["site_daily"]
                ),
                SITE_TREE[1],
            ],
            [
                "process 'site_hourly', field 'depends_on': dependency cycle: site_hourly -> site_daily -> site_hourly"
            ],
        ),
        (
            # The tree edge skips the missing daily level: site_monthly -> site_hourly.
            [
                {**SITE_TREE[0], "depends_on": ["client"]},
                SITE_TREE[2],
                managed("client", depends_on=["site_monthly"]),
            ],
            [
                "process 'site_hourly', field 'depends_on': dependency cycle: "
                "site_hourly -> client -> site_monthly -> site_hourly"
            ],
        ),
    ],
)
def test_validate_entries_rejects(data: list[dict[str, Any]], expected: list[str]) -> None:
    with pytest.raises(InvalidInputs) as caught:
        validate_entries(entries(*data))

    assert messages(caught.value) == expected


def test_validate_entries_rejects_a_tree_with_a_non_managed_process() -> None:
    # entry_from_mapping refuses `tree` on a freerun; an entry built in code may still carry one.
    odd = ProcessEntry(
        name="export", kind=ProcessKind.FREERUN, trigger="every 60", command=("true",), tree="site"
    )

    with pytest.raises(InvalidInputs) as caught:
        validate_entries([*entries(*SITE_TREE), odd])

    assert messages(caught.value) == [
        "process 'export', field 'tree': tree 'site': only managed processes form trees, not a freerun"
    ]


def test_validate_entries_accepts_a_tree_with_dependencies_across() -> None:
    validate_entries(
        entries(*SITE_TREE, managed("client_daily", depends_on=["site_daily", "site_hourly"]))
    )


def test_validate_entries_also_known_silences_unknown_names() -> None:
    validate_entries(entries(managed("client_daily", depends_on=["broken"])), also_known={"broken"})


# -- loading files --------------------------------------------------------------------------------


def test_load_file_python_list_of_mappings_and_entries(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "process_context.py",
        """
        from db.models import ProcessEntry
        from db.states import ProcessKind

        process_context = [
            {"name": "a", "kind": "daemon", "command": ["true"]},
            ProcessEntry(name="b", kind=ProcessKind.DAEMON, command="sleep 1"),
        ]
        if __name__ == "__main__":
            raise SystemExit("must not run on registration")
        """,
    )

    assert load_file(path) == entries(daemon("a"), daemon("b", command=["sleep", "1"]))


def test_load_file_yaml_mapping_form(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "context.yml",
        """
        processes:
          a: {kind: daemon, command: ["true"]}
          b: {kind: managed, time_qualifier: daily, worker: "w:C", start_timeperiod: 2026111800}
        """,
    )

    loaded = load_file(path)

    assert [e.name for e in loaded] == ["a", "b"]
    assert loaded[1].start_timeperiod == "2026111800"


def test_load_file_yaml_with_x_anchor_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "context.yaml",
        """
        x-defaults: &defaults {kind: daemon, boxes: ["dev.*"]}
        processes:
          - {<<: *defaults, name: a, command: ["true"]}
        """,
    )

    assert load_file(path)[0].boxes == ("dev.*",)


def test_load_file_yaml_empty_list_registers_nothing(tmp_path: Path) -> None:
    assert load_file(write(tmp_path, "c.yaml", "processes: []\n")) == []


def test_load_file_yaml_syntax_error_names_file_and_line() -> None:
    path = CONTEXTS / "broken_syntax.yaml"

    with pytest.raises(InvalidInput) as caught:
        load_file(path)

    assert caught.value.field == "file"
    assert caught.value.problem == (
        f"{path}, line 6: while parsing a flow sequence: expected ',' or ']', but got ':'"
    )


def test_load_file_python_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    # Written here rather than kept in tests/fixtures: a broken .py file would break `ruff check`.
    path = write(
        tmp_path, "process_context.py", 'process_context = [\n    {"kind": "daemon" "a": 1},\n]\n'
    )

    with pytest.raises(InvalidInput) as caught:
        load_file(path)

    assert caught.value.field == "file"
    assert caught.value.problem.startswith(f"{path}, line 2: syntax error: invalid syntax")


def test_load_file_python_error_while_running_names_the_line() -> None:
    path = CONTEXTS / "runtime_error.py"

    with pytest.raises(InvalidInput) as caught:
        load_file(path)

    assert (
        caught.value.problem == f"{path}, line 5: NameError: name 'undefined_name' is not defined"
    )


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("c.py", "processes = []\n", "{path}: defines no process_context"),
        (
            "c.py",
            "process_context = 5\n",
            "{path}: the process list must be a list of entries or a mapping name -> entry (got int)",
        ),
        ("c.yaml", "- a\n", "{path}: needs a top-level key 'processes'"),
        ("c.yaml", "", "{path}: needs a top-level key 'processes'"),
        (
            "c.yaml",
            "processes: []\nprocess: []\n",
            "{path}: unknown top-level key 'process' (did you mean 'processes'?)",
        ),
        (
            "c.yaml",
            "processes: []\ndefaults: {}\n",
            "{path}: unknown top-level key 'defaults' (only x- keys may sit next to it)",
        ),
        (
            "c.yaml",
            "processes:\n",
            "{path}: the process list is empty (write [] to register nothing)",
        ),
        (
            "c.yaml",
            "processes: some\n",
            "{path}: the process list must be a list of entries or a mapping name -> entry (got str)",
        ),
        (
            "c.yaml",
            "processes:\n  a: {kind: daemon, command: [echo]}\n  a: {kind: daemon, command: [date]}\n",
            "{path}, line 3: key 'a' repeated (first on line 2)",
        ),
        (
            "c.yaml",
            "processes: [{name: a, kind: daemon, kind: freerun}]\n",
            "{path}, line 1: key 'kind' repeated (first on line 1)",
        ),
        ("c.toml", "", "{path}: must end in .py, .yaml or .yml"),
    ],
)
def test_load_file_rejects_the_file(tmp_path: Path, name: str, text: str, problem: str) -> None:
    path = write(tmp_path, name, text)

    with pytest.raises(InvalidInput) as caught:
        load_file(path)

    assert not isinstance(caught.value, InvalidInputs)
    assert caught.value.field == "file"
    assert caught.value.problem == problem.format(path=path)


def test_load_file_missing_file(tmp_path: Path) -> None:
    for name in ("absent.py", "absent.yaml"):
        with pytest.raises(InvalidInput) as caught:
            load_file(tmp_path / name)

        assert caught.value.problem.startswith(f"{tmp_path / name}: cannot read: ")


def test_load_file_mapping_key_and_name_must_agree(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "processes:\n  a: {name: b, kind: daemon, command: [echo]}\n")

    with pytest.raises(InvalidInputs) as caught:
        load_file(path)

    assert messages(caught.value) == [
        "processes[0], field 'name': differs from the key it is listed under ('b' under 'a')"
    ]


def test_load_file_reports_every_error_of_the_file() -> None:
    with pytest.raises(InvalidInputs) as caught:
        load_file(CONTEXTS / "several_errors.yaml")

    # site_daily is broken, yet client_daily is not also told that site_daily does not exist.
    assert messages(caught.value) == [
        f"process 'site_daily', field 'time_qualifier': {WEEKLY}",
        "processes[2], field 'name': must match [a-z0-9_]+ (got 'Bad-Name')",
        f"process 'report', field 'command': unknown placeholder {{date}} in '{{date}}'; known: {PLACES}",
        "process 'report', field 'retries': must be >= 0 (got -1)",
        "process 'report', field 'time_qualifier': not valid for a freerun process (only for managed)",
        "process 'ticker', field 'trigger': not valid for a daemon process (only for managed, freerun)",
        "process 'client_daily', field 'depends_on': names unknown process 'nowhere'",
    ]
    assert caught.value.message == "; ".join(messages(caught.value))


# -- the re-register rule -------------------------------------------------------------------------


def registered_as(data: dict[str, Any]) -> tuple[ProcessEntry, dict[str, Any]]:
    """A process as stored right after its first registration: (effective, registered)."""
    first = entry_from_mapping(data)
    return first, first.to_dict()


def test_merge_registration_file_change_wins() -> None:
    # given
    stored, registered = registered_as(freerun(trigger="every 60", retries=3))
    file_entry = entry(freerun(trigger="every 120", retries=3))

    # when
    effective, new_registered = merge_registration(stored, registered, file_entry)

    # then
    assert effective == file_entry
    assert new_registered == file_entry.to_dict()


def test_merge_registration_run_time_edit_survives_an_unchanged_field() -> None:
    # given: the API disabled the process and changed its trigger
    _, registered = registered_as(freerun(trigger="every 60", description="old"))
    stored = entry(freerun(trigger="every 5m", enabled=False, description="old"))

    # when: the file changes only the description
    effective, new_registered = merge_registration(
        stored, registered, entry(freerun(trigger="every 60", description="new"))
    )

    # then
    assert effective == entry(freerun(trigger="every 5m", enabled=False, description="new"))
    assert new_registered["trigger"] == "every 60"


def test_merge_registration_unchanged_file_keeps_the_stored_entry() -> None:
    stored, registered = registered_as(managed(start_timeperiod="2026111800"))

    effective, new_registered = merge_registration(
        stored, registered, entry(managed(start_timeperiod="2026111800"))
    )

    assert effective == stored
    assert new_registered == registered


def test_merge_registration_start_timeperiod_none_is_not_a_change() -> None:
    # given: first insert resolved "the current period" to a real one
    first = entry(managed())
    stored = entry(managed(start_timeperiod="2026112200"))

    # when
    effective, new_registered = merge_registration(stored, first.to_dict(), entry(managed()))

    # then
    assert effective.start_timeperiod == "2026112200"
    assert new_registered["start_timeperiod"] is None


def test_merge_registration_dropping_start_timeperiod_keeps_the_stored_one() -> None:
    stored, registered = registered_as(managed(start_timeperiod="2026111800"))

    effective, _ = merge_registration(stored, registered, entry(managed()))

    assert effective.start_timeperiod == "2026111800"


def test_merge_registration_new_qualifier_brings_its_start_timeperiod() -> None:
    # given: the stored start is an hourly period resolved at first insert
    first = entry(managed(time_qualifier="hourly"))
    stored = entry(managed(time_qualifier="hourly", start_timeperiod="2026112213"))

    # when: the file turns it daily and leaves start_timeperiod out
    effective, _ = merge_registration(
        stored, first.to_dict(), entry(managed(time_qualifier="daily"))
    )

    # then: the caller resolves the daily period again
    assert effective.time_qualifier is Qualifier.DAILY
    assert effective.start_timeperiod is None


def test_merge_registration_command_and_shell_move_together() -> None:
    # given: the API turned the argv into a shell string
    _, registered = registered_as(freerun(command=["echo", "a"]))
    stored = entry(freerun(command="echo a | wc", shell=True))

    # when: the file changes the argv only
    effective, _ = merge_registration(stored, registered, entry(freerun(command=["echo", "b"])))

    # then: not a shell flag paired with an argv
    assert (effective.command, effective.shell) == (("echo", "b"), False)


def test_merge_registration_new_kind_takes_the_whole_file_entry() -> None:
    _, registered = registered_as(freerun(command=["true"]))
    stored = entry(freerun(command=["true"], catchup="all", enabled=False))
    file_entry = entry(managed(worker=None, command=["true"]))

    effective, _ = merge_registration(stored, registered, file_entry)

    assert effective == file_entry


def test_merge_registration_without_registered_adopts_the_file_entry() -> None:
    stored = entry(freerun(trigger="every 5m", enabled=False))
    file_entry = entry(freerun(trigger="every 60"))

    effective, new_registered = merge_registration(stored, None, file_entry)

    assert effective == file_entry
    assert new_registered == file_entry.to_dict()


# -- the plan -------------------------------------------------------------------------------------


def test_plan_registration_create_update_unchanged() -> None:
    # given
    same, same_registered = registered_as(freerun("same"))
    edited, edited_registered = registered_as(freerun("edited", trigger="every 60"))
    file_entries = entries(freerun("same"), freerun("edited", trigger="every 90"), daemon("new"))

    # when
    plan = plan_registration(
        {"same": (same, same_registered, "file"), "edited": (edited, edited_registered, "file")},
        file_entries,
        prune=False,
    )

    # then
    assert plan == RegistrationPlan(
        create=(file_entries[2],),
        update=(PlannedUpdate("edited", file_entries[1], file_entries[1].to_dict()),),
        unchanged=("same",),
    )
    assert plan.has_changes


def test_plan_registration_run_time_edit_alone_is_unchanged() -> None:
    _, registered = registered_as(freerun("a"))
    stored = entry(freerun("a", enabled=False))

    plan = plan_registration(
        {"a": (stored, registered, "file")}, entries(freerun("a")), prune=False
    )

    assert plan == RegistrationPlan(unchanged=("a",))
    assert not plan.has_changes


def test_plan_registration_adopts_an_api_created_process() -> None:
    stored = entry(freerun("a", trigger="every 5m"))
    file_entry = entry(freerun("a"))

    plan = plan_registration({"a": (stored, None, "api")}, [file_entry], prune=False)

    assert plan.update == (PlannedUpdate("a", file_entry, file_entry.to_dict()),)


@pytest.mark.parametrize(("prune", "pruned"), [(True, ("gone",)), (False, ())])
def test_plan_registration_prunes_only_file_processes_when_asked(
    prune: bool, pruned: tuple[str, ...]
) -> None:
    # given
    gone, gone_registered = registered_as(freerun("gone"))
    adhoc = entry(freerun("adhoc"))
    kept, kept_registered = registered_as(daemon("kept"))
    existing = {
        "gone": (gone, gone_registered, "file"),
        "adhoc": (adhoc, None, "api"),
        "kept": (kept, kept_registered, "file"),
    }

    # when
    plan = plan_registration(existing, entries(daemon("kept")), prune=prune)

    # then: API-created processes are never pruned
    assert plan.prune == pruned
    assert plan.unchanged == ("kept",)


def test_plan_registration_refuses_a_remaining_process_depending_on_a_pruned_one() -> None:
    # given: client_daily is not in the file but was registered by hand from an older one
    site, site_registered = registered_as(managed("site_daily"))
    client, client_registered = registered_as(managed("client_daily", depends_on=["site_daily"]))
    existing = {
        "site_daily": (site, site_registered, "file"),
        "client_daily": (client, client_registered, "api"),
    }

    # when / then
    with pytest.raises(InvalidInputs) as caught:
        plan_registration(existing, [], prune=True)

    assert messages(caught.value) == [
        "process 'client_daily', field 'depends_on': names unknown process 'site_daily'"
    ]


def test_plan_registration_checks_the_file_against_remaining_processes() -> None:
    # given: a stored hourly process of tree "site" that the file does not name (no prune)
    old, old_registered = registered_as(managed("old_hourly", tree="site", time_qualifier="hourly"))

    # when / then
    with pytest.raises(InvalidInputs) as caught:
        plan_registration(
            {"old_hourly": (old, old_registered, "file")},
            entries(managed("site_hourly", tree="site", time_qualifier="hourly")),
            prune=False,
        )

    assert messages(caught.value) == [
        "process 'old_hourly', field 'tree': tree 'site' already has 'site_hourly' at hourly"
    ]


def test_plan_registration_of_the_examples_twice_changes_nothing() -> None:
    # given: the examples registered once
    file_entries = load_file(EXAMPLES / "process_context.py")
    existing = {e.name: (e, e.to_dict(), "file") for e in file_entries}

    # when
    plan = plan_registration(existing, load_file(EXAMPLES / "process_context.yaml"), prune=True)

    # then
    assert plan == RegistrationPlan(unchanged=tuple(EXAMPLE_NAMES))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lag", -8.6e13, "must be a number of seconds up to"),
        ("retry_delay", 1e300, "must be a number of seconds up to"),
        ("max_active", 10**30, "must be <= 1000000"),
    ],
)
def test_registration_refuses_absurd_sizes_instead_of_overflowing(field, value, message):
    with pytest.raises(InvalidInputs) as err:
        entry_from_mapping(
            {
                "name": "x",
                "kind": "managed",
                "time_qualifier": "hourly",
                "command": ["true"],
                field: value,
            }
        )
    assert f"field '{field}'" in str(err.value) and message in str(err.value)
