"""Validation rules of one entry of the registration file (SPEC sections 4 and 10).

:func:`entry_from_mapping` turns one entry of a file (plain YAML/Python values) into a
:class:`~db.models.ProcessEntry`, checking every field and every combination of fields of that
entry, its ``steps`` included (each step's fields here, the rules between its steps in
:mod:`db.registration_steps`). It collects every problem it finds and raises them together as
:class:`~db.errors.InvalidInputs`, so a user fixes a file in one pass. The rules between entries
(names, dependencies, trees, cycles) live in :func:`db.registration.validate_entries`.

``db.registration`` re-exports the public names; import them from there.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import shlex
import string
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Any

from db.errors import InvalidInput, InvalidInputs
from db.flows import STEP_NAME_LENGTH
from db.models import COMMAND_PLACEHOLDERS, ProcessEntry, StepEntry
from db.payloads import check_payload_id
from db.registration_steps import graph_problems
from db.states import Blocking, Catchup, ProcessKind, Qualifier, RunIf, StateMachineName
from db.timeperiod import Timeperiod
from db.triggers import parse_trigger

#: Names of processes and trees.
NAME_PATTERN = re.compile(r"[a-z0-9_]+")
#: ``module.path:Class``: what a ``worker`` field must look like.
WORKER_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
#: Trigger of a managed process that does not set one (SPEC section 4).
DEFAULT_MANAGED_TRIGGER = "every 60"

_ALL = frozenset(ProcessKind)
_MANAGED = frozenset({ProcessKind.MANAGED})
_SCHEDULED = frozenset({ProcessKind.MANAGED, ProcessKind.FREERUN})

#: Kinds each field is valid for: SPEC section 4's "kinds" column (``shell`` goes with
#: ``command``, which every kind may have).
FIELD_KINDS: Mapping[str, frozenset[ProcessKind]] = {
    "name": _ALL,
    "kind": _ALL,
    "worker": _ALL,
    "command": _ALL,
    "shell": _ALL,
    "time_qualifier": _MANAGED,
    "state_machine": _MANAGED,
    "blocking": _MANAGED,
    "tree": _MANAGED,
    "depends_on": _MANAGED,
    "start_timeperiod": _MANAGED,
    "lag": _MANAGED,
    "trigger": _SCHEDULED,
    "timezone": frozenset({ProcessKind.FREERUN}),
    "catchup": frozenset({ProcessKind.FREERUN}),
    "max_active": _SCHEDULED,
    "retries": _SCHEDULED,
    "retry_delay": _SCHEDULED,
    "timeout": _SCHEDULED,
    "arguments": _ALL,
    "boxes": _ALL,
    "workers": _SCHEDULED,
    "enabled": _ALL,
    "description": _ALL,
    "noop_exit_code": _SCHEDULED,
    "steps": _SCHEDULED,
    "payload_id": frozenset({ProcessKind.FREERUN}),
    "payload": frozenset({ProcessKind.FREERUN}),
}

#: An entry holding every default, to tell a field set to its default from one really set.
_DEFAULT_ENTRY = ProcessEntry(name="_", kind=ProcessKind.DAEMON)


class _Problem(Exception):
    """A field's value is wrong; carries the text of the problem (never leaves this module)."""


class _Problems(Exception):
    """Problems of the parts of a field (the steps): ``(field, problem)`` pairs, each field
    naming its part (``steps.load.depends_on``)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(problems)
        self.problems = problems


# -- single values --------------------------------------------------------------------------------


def _got(value: Any) -> str:
    return (
        f"got {value!r}" if isinstance(value, str | int | float) else f"got {type(value).__name__}"
    )


def _enum(enum: type[StrEnum]) -> Callable[[Any], StrEnum]:
    def convert(value: Any) -> StrEnum:
        try:
            return enum(value)
        except ValueError:
            choices = ", ".join(member.value for member in enum)
            raise _Problem(f"must be one of {choices} ({_got(value)})") from None

    return convert


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Problem(f"must be a string ({_got(value)})")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise _Problem(f"must match [a-z0-9_]+ ({_got(value)})")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Problem(f"must be true or false ({_got(value)})")
    return value


#: Largest count (max_active, retries, workers) and duration (lag, retry_delay, timeout) a
#: process may ask for: far beyond any sane value, and small enough for every datetime sum.
MAX_COUNT = 1_000_000
MAX_SECONDS = 366 * 24 * 3600 * 10


def _count(minimum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        # bool is a subclass of int; `retries: yes` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Problem(f"must be an integer >= {minimum} ({_got(value)})")
        if value < minimum:
            raise _Problem(f"must be >= {minimum} ({_got(value)})")
        if value > MAX_COUNT:
            raise _Problem(f"must be <= {MAX_COUNT} ({_got(value)})")
        return value

    return convert


def _seconds(positive: bool) -> Callable[[Any], timedelta]:
    bound = "> 0" if positive else ">= 0"

    def convert(value: Any) -> timedelta:
        # Files give seconds; the Python form may also give a timedelta.
        if isinstance(value, timedelta):
            delta = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _Problem(f"must be a finite number of seconds ({_got(value)})")
            if abs(value) > MAX_SECONDS:
                raise _Problem(f"must be a number of seconds up to {MAX_SECONDS} ({_got(value)})")
            delta = timedelta(seconds=value)
        else:
            raise _Problem(f"must be a number of seconds {bound} ({_got(value)})")
        if delta > timedelta(seconds=MAX_SECONDS):
            raise _Problem(f"must be at most {MAX_SECONDS} seconds ({_got(value)})")
        if delta < timedelta(0) or (positive and delta == timedelta(0)):
            raise _Problem(f"must be {bound} seconds ({_got(value)})")
        return delta

    return convert


def _string_list(value: Any, what: str) -> list[str]:
    # A bare string is iterable too; refusing it catches `boxes: dev.*` early.
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _Problem(f"must be a list of {what} ({_got(value)})")
    for item in value:
        if not isinstance(item, str):
            raise _Problem(f"must be a list of {what} ({_got(item)} in the list)")
    return list(value)


def _worker(value: Any) -> str:
    if not isinstance(value, str) or not WORKER_PATTERN.fullmatch(value):
        raise _Problem(f"must look like module.path:Class ({_got(value)})")
    return value


def _name_list(what: str) -> Callable[[Any], tuple[str, ...]]:
    def convert(value: Any) -> tuple[str, ...]:
        names = _string_list(value, what)
        for name in names:
            _name(name)
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise _Problem(f"names {', '.join(twice)} more than once")
        return tuple(names)

    return convert


def _boxes(value: Any) -> tuple[str, ...]:
    patterns = _string_list(value, "regular expressions")
    if not patterns:
        raise _Problem("must list at least one regular expression (['.*'] runs everywhere)")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _Problem(f"{pattern!r} is not a valid regular expression: {exc}") from None
    return tuple(patterns)


def _json_value(value: Any, where: str) -> Any:
    """A plain JSON copy of ``value`` (tuples become lists), or :class:`_Problem`."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Problem(f"{where} is {value}, which JSON cannot hold")
        return value
    if isinstance(value, Mapping):
        for key in value:
            # json.dumps would silently turn 1 into "1": the worker would not get what was written.
            if not isinstance(key, str):
                raise _Problem(f"{where} has a non-string key {key!r}")
        return {key: _json_value(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise _Problem(f"{where} is a {type(value).__name__}, which JSON cannot hold")


def _arguments(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Problem(f"must be a mapping ({_got(value)})")
    return _json_value(value, "arguments")


def _payload_id(value: Any) -> str:
    try:
        return check_payload_id(value)
    except InvalidInput as exc:
        raise _Problem(exc.problem) from None


def _payload(value: Any) -> Any:
    return _json_value(value, "payload")


def _placeholders(text: str) -> None:
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
    except ValueError as exc:
        raise _Problem(f"{exc} in {text!r} (write {{{{ and }}}} for literal braces)") from None
    known = ", ".join(f"{{{name}}}" for name in sorted(COMMAND_PLACEHOLDERS))
    for field in fields:
        if field not in COMMAND_PLACEHOLDERS:
            raise _Problem(f"unknown placeholder {{{field}}} in {text!r}; known: {known}")


def _command(value: Any) -> tuple[str, ...] | str:
    """A non-empty argv tuple, or one string (split later, or kept for ``shell: true``)."""
    if isinstance(value, str):
        if not value.strip():
            raise _Problem("must not be empty")
        _placeholders(value)
        return value
    argv = _string_list(value, "strings (an argv) or one string")
    if not argv or not argv[0]:
        raise _Problem("must name a program to run (an empty argv)")
    for arg in argv:
        _placeholders(arg)
    return tuple(argv)


def _exit_code(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
        raise _Problem(
            f"must be an exit code from 1 to 255 (0 always means processed; {_got(value)})"
        )
    return value


def _start_timeperiod(value: Any) -> str:
    # YAML reads an unquoted 2026010500 as an int; the digits are what the user meant.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value)


# -- steps (SPEC section 10) ----------------------------------------------------------------------


def _step_name(value: Any) -> str:
    name = _name(value)
    if len(name) > STEP_NAME_LENGTH:
        raise _Problem(f"must be at most {STEP_NAME_LENGTH} characters ({_got(value)})")
    return name


#: Converter of each field of a step from its file form to its StepEntry form: the process's
#: rules for the fields they share.
STEP_CONVERTERS: Mapping[str, Callable[[Any], Any]] = {
    "name": _step_name,
    "worker": _worker,
    "command": _command,
    "shell": _flag,
    "depends_on": _name_list("step names"),
    "run_if": _enum(RunIf),
    "retries": _count(0),
    "retry_delay": _seconds(positive=True),
    "timeout": _seconds(positive=True),
    "arguments": _arguments,
    "boxes": _boxes,
    "noop_exit_code": _exit_code,
}


def step_where(data: Any, index: int) -> str:
    """How a problem names a step as written: ``steps.<name>``, or ``steps[<index>]`` when
    its name is missing or invalid."""
    try:
        return f"steps.{_step_name(data.get('name') if isinstance(data, Mapping) else None)}"
    except _Problem:
        return f"steps[{index}]"


def _steps(value: Any) -> tuple[StepEntry, ...]:
    """A non-empty list of steps, each valid, forming a DAG (:mod:`db.registration_steps`)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise _Problem(f"must be a list of steps ({_got(value)})")
    if not value:
        raise _Problem("must list at least one step (leave steps out to run a worker or command)")
    steps: list[StepEntry] = []
    broken: set[str] = set()
    problems: list[tuple[str, str]] = []
    for index, data in enumerate(value):
        try:
            steps.append(_step(data, index))
        except _Problems as exc:
            problems.extend(exc.problems)
            name = data.get("name") if isinstance(data, Mapping) else None
            if isinstance(name, str):
                broken.add(name)
    problems.extend(graph_problems(steps, also_known=broken - {s.name for s in steps}))
    if problems:
        raise _Problems(problems)
    return tuple(steps)


def _step(data: Any, index: int) -> StepEntry:
    # The Python form may give StepEntry values, as it may give ProcessEntry values.
    if isinstance(data, StepEntry):
        data = data.to_dict()
    if not isinstance(data, Mapping):
        raise _Problems([(step_where(data, index), f"must be a mapping ({_got(data)})")])
    values, problems = _convert(data, STEP_CONVERTERS)
    bad = {field for field, _ in problems}
    if "name" not in values and "name" not in bad:
        problems.append(("name", "required"))
    problems.extend(_program_problems(values, bad))
    if problems:
        where = step_where(data, index)
        raise _Problems([(f"{where}.{field}", problem) for field, problem in problems])
    return StepEntry(**values)


#: Converter of each field from its file form to its ProcessEntry form.
CONVERTERS: Mapping[str, Callable[[Any], Any]] = {
    "name": _name,
    "kind": _enum(ProcessKind),
    "worker": _worker,
    "command": _command,
    "shell": _flag,
    "time_qualifier": _enum(Qualifier),
    "state_machine": _enum(StateMachineName),
    "blocking": _enum(Blocking),
    "tree": _name,
    "depends_on": _name_list("process names"),
    "start_timeperiod": _start_timeperiod,
    "lag": _seconds(positive=False),
    "trigger": _text,
    "timezone": _text,
    "catchup": _enum(Catchup),
    "max_active": _count(1),
    "retries": _count(0),
    "retry_delay": _seconds(positive=True),
    "timeout": _seconds(positive=True),
    "arguments": _arguments,
    "boxes": _boxes,
    "workers": _count(0),
    "enabled": _flag,
    "description": _text,
    "noop_exit_code": _exit_code,
    "steps": _steps,
    "payload_id": _payload_id,
    "payload": _payload,
}


# -- one entry ------------------------------------------------------------------------------------


def entry_fields(entry: ProcessEntry) -> dict[str, Any]:
    """The fields of ``entry`` as a mapping that :func:`entry_from_mapping` accepts."""
    fields = {f.name: getattr(entry, f.name) for f in dataclasses.fields(entry)}
    # No steps is no ``steps`` field: an empty list of steps is refused.
    fields["steps"] = fields["steps"] or None
    return fields


def _convert(
    data: Mapping[str, Any], converters: Mapping[str, Callable[[Any], Any]]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The fields of ``data`` converted, and the ``(field, problem)`` pairs of those that are
    unknown or wrong. A field set to None counts as absent."""
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for field, raw in data.items():
        if raw is None:
            continue
        if field not in converters:
            hint = difflib.get_close_matches(str(field), list(converters), n=1)
            problems.append(
                (str(field), "unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            )
            continue
        try:
            values[field] = converters[field](raw)
        except _Problem as exc:
            problems.append((field, str(exc)))
        except _Problems as exc:
            problems.extend(exc.problems)
    return values, problems


def entry_from_mapping(data: Mapping[str, Any], *, index: int | None = None) -> ProcessEntry:
    """Convert and validate one entry of a registration file.

    File types become model types: seconds become timedeltas, lists tuples, strings enums. A
    field set to None counts as absent, so ``ProcessEntry.to_dict()`` loads back. A field that
    SPEC section 4 does not allow for the entry's kind is refused unless it holds its default
    value (``to_dict()`` writes every field). ``command`` given as one string is kept as a string
    when ``shell`` is true (run by ``/bin/sh -c``), and otherwise split with :func:`shlex.split`
    into an argv: no shell is involved, so ``|`` or ``>`` are plain arguments. Placeholders are
    checked, not filled; write ``{{`` and ``}}`` for literal braces.

    ``steps`` (managed and freerun only) replaces the process's ``worker``/``command``: a
    non-empty list of mappings (or :class:`~db.models.StepEntry` values) whose fields follow the
    rules of the process's fields of the same name; problems of a step are named
    ``steps.<step>.<field>`` (``steps[<index>].<field>`` without a valid step name).

    Args:
        data: the entry as written in the file (YAML or Python form).
        index: the entry's position in the file, to name it when its name is missing or bad.

    Returns:
        The validated entry; a managed entry without ``trigger`` gets ``every 60``.

    Raises:
        InvalidInputs: every problem of this entry, each naming the entry and the field.
    """
    if not isinstance(data, Mapping):
        where = f"processes[{index}]" if index is not None else None
        raise InvalidInputs(
            [InvalidInput("entry", f"must be a mapping ({_got(data)})", entity=where)]
        )
    values, problems = _convert(data, CONVERTERS)
    # A problem of a step (``steps.load.depends_on``) makes ``steps`` a bad field.
    bad = {re.split(r"[.\[]", field, maxsplit=1)[0] for field, _ in problems}
    problems.extend((f, "required") for f in ("name", "kind") if f not in values and f not in bad)
    problems.extend(_combination_problems(values, bad))
    name = values.get("name")
    if name is not None:
        entity = f"process {name!r}"
    else:
        entity = f"processes[{index}]" if index is not None else None
    if problems:
        raise InvalidInputs(
            [InvalidInput(field, problem, entity=entity) for field, problem in problems]
        )
    return ProcessEntry(**values)


def _combination_problems(values: dict[str, Any], bad: set[str]) -> list[tuple[str, str]]:
    """Rules between fields of one entry; fills in defaults that depend on the kind."""
    kind = values.get("kind")
    if kind is None:
        return []
    problems = []
    for field, value in list(values.items()):
        if kind not in FIELD_KINDS[field] and value != getattr(_DEFAULT_ENTRY, field):
            allowed = ", ".join(k.value for k in ProcessKind if k in FIELD_KINDS[field])
            problems.append((field, f"not valid for a {kind.value} process (only for {allowed})"))
            del values[field]
    if kind is ProcessKind.MANAGED:
        values.setdefault("trigger", DEFAULT_MANAGED_TRIGGER)
        if "time_qualifier" not in values and "time_qualifier" not in bad:
            problems.append(("time_qualifier", "required for a managed process"))
    if kind is ProcessKind.FREERUN and "trigger" not in values and "trigger" not in bad:
        problems.append(("trigger", "required for a freerun process"))
    if "payload" in values and "payload_id" in values:
        problems.append(("payload", "give either payload_id or payload, not both"))
    # Steps given and allowed for the kind, even when some are wrong: no worker or command then.
    if "steps" in values or ("steps" in bad and kind in FIELD_KINDS["steps"]):
        problems.extend(
            (field, "not with steps: each step gives its own worker or command")
            for field in ("worker", "command", "shell")
            if values.get(field)
        )
    else:
        problems.extend(_program_problems(values, bad))
    qualifier = values.get("time_qualifier")
    if qualifier is not None and "start_timeperiod" in values:
        try:
            Timeperiod.parse(qualifier, values["start_timeperiod"])
        except InvalidInput as exc:
            problems.append(("start_timeperiod", exc.problem))
    if "trigger" in values:
        try:
            parse_trigger(values["trigger"], values.get("timezone") or "UTC")
        except InvalidInput as exc:
            problems.append((exc.field, exc.problem))
    return problems


def _program_problems(values: dict[str, Any], bad: set[str]) -> list[tuple[str, str]]:
    """What runs: exactly one of ``worker``/``command``, and ``shell`` only with a string."""
    problems = []
    worker, command = values.get("worker"), values.get("command")
    if worker is not None and command is not None:
        problems.append(("command", "give either worker or command, not both"))
    elif worker is None and command is None and not {"worker", "command"} & bad:
        problems.append(("worker", "one of worker or command is required"))
    if isinstance(command, str) and not values.get("shell"):
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            problems.append(("command", f"cannot be split into arguments: {exc}"))
        else:
            if argv:
                values["command"] = tuple(argv)
            else:
                problems.append(("command", "must not be empty"))
    elif values.get("shell") and not isinstance(command, str) and "command" not in bad:
        problems.append(("shell", "shell: true needs command as one string"))
    return problems


def validate_entry(entry: ProcessEntry) -> ProcessEntry:
    """Validate an entry built in code (the API) by the rules of :func:`entry_from_mapping`.

    Args:
        entry: the entry to check.

    Returns:
        The entry with values normalised (a string command split into an argv, defaults filled).

    Raises:
        InvalidInputs: every problem of the entry.
    """
    return entry_from_mapping(entry_fields(entry))
