"""The registration file (SPEC section 4): load it, validate it, plan what registering changes.

A file is ``process_context.py`` (run with :mod:`runpy`; it defines ``process_context``) or YAML
(``*.yaml`` / ``*.yml`` with a top-level key ``processes``). Either holds a list of entries or a
mapping of name to entry; both forms load into the same :class:`~db.models.ProcessEntry` values.

Registering is split so that every rule is pure and tested without a store: :func:`load_file`
reads and validates, :func:`plan_registration` compares the file with what is stored (using
:func:`merge_registration`, the re-register rule), and the caller applies the plan in the store.

The file must be self-contained: ``depends_on`` and trees may only name processes of the same
file, since ``launch.py register --check`` validates the file without a store.
"""

from __future__ import annotations

import difflib
import runpy
import traceback
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml

from db.errors import InvalidInput, InvalidInputs
from db.models import ProcessEntry
from db.registration_rules import entry_fields, entry_from_mapping, step_where, validate_entry
from db.registration_steps import run_order_text
from db.states import ProcessKind, ProcessSource

if TYPE_CHECKING:
    from os import PathLike
    from types import TracebackType

__all__ = [
    "PlannedUpdate",
    "RegistrationPlan",
    "entry_from_mapping",
    "load_file",
    "merge_registration",
    "plan_registration",
    "run_order_text",
    "step_where",
    "validate_entries",
    "validate_entry",
]

#: Name the Python form must define.
PYTHON_VARIABLE = "process_context"
#: Top-level key of the YAML form.
YAML_KEY = "processes"
#: Fields that only make sense together: when the file changes one, the whole group comes from
#: the file, so a run-time edit of one cannot pair with a file change of another (a ``shell``
#: kept true next to a new argv ``command``, a ``command`` set at run time next to new
#: ``steps``, an hourly ``start_timeperiod`` next to a new ``daily`` qualifier).
COUPLED_FIELDS = (
    frozenset({"worker", "command", "shell", "steps"}),
    frozenset({"time_qualifier", "start_timeperiod"}),
)

_MISSING = object()


# -- loading --------------------------------------------------------------------------------------


def load_file(path: str | PathLike[str]) -> list[ProcessEntry]:
    """Load and validate a registration file.

    Args:
        path: a ``.py`` file defining ``process_context``, or a ``.yaml``/``.yml`` file with a
            top-level ``processes`` key.

    Returns:
        The validated entries, in file order.

    Raises:
        InvalidInput: field ``file``: the file cannot be read, run or parsed (naming the file
            and, where known, the line).
        InvalidInputs: the entries are invalid; every problem of every entry, each naming the
            entry (``process 'site_daily'``, or ``processes[3]`` without a valid name) and the
            field.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".py":
        raw = _run_python(path)
    elif suffix in (".yaml", ".yml"):
        raw = _read_yaml(path)
    else:
        raise InvalidInput("file", f"{path}: must end in .py, .yaml or .yml")
    return _entries(raw, path)


def load_entries(raw: Any, source: str) -> list[ProcessEntry]:
    """Validate entries that arrive as data rather than as a file (a registration sent to the
    REST API): a list of entry mappings, or a mapping name -> entry, as in a file.

    Args:
        raw: the entries.
        source: what they came from, for messages (the file name the sender read).

    Raises:
        InvalidInput / InvalidInputs: as :func:`load_file`.
    """
    try:
        return _entries(raw, Path(source))
    except InvalidInput as exc:
        if exc.field != "file":
            raise
        # Not a file's problem here: the entries themselves are not a list or mapping.
        raise InvalidInput("processes", exc.problem.removeprefix(f"{source}: ")) from None


def _run_python(path: Path) -> Any:
    try:
        # A run name other than __main__ keeps the file's `if __name__ == "__main__":` block quiet.
        namespace = runpy.run_path(str(path), run_name="__tactus_context__")
    except SyntaxError as exc:
        where = exc.filename or path
        raise InvalidInput("file", f"{where}, line {exc.lineno}: syntax error: {exc.msg}") from exc
    except OSError as exc:
        raise InvalidInput("file", f"{path}: cannot read: {exc.strerror or exc}") from exc
    except Exception as exc:
        # Whatever the user's code raised (ImportError, NameError ...) is theirs to fix: report
        # it with the line of the file where it happened instead of a traceback.
        line = _line_in(exc.__traceback__, path)
        where = f"{path}, line {line}" if line else str(path)
        raise InvalidInput("file", f"{where}: {type(exc).__name__}: {exc}") from exc
    if PYTHON_VARIABLE not in namespace:
        raise InvalidInput("file", f"{path}: defines no {PYTHON_VARIABLE}")
    return namespace[PYTHON_VARIABLE]


def _line_in(tb: TracebackType | None, path: Path) -> int | None:
    """The line of ``path`` nearest to where the exception was raised."""
    target = path.resolve()
    lines = [f.lineno for f in traceback.extract_tb(tb) if Path(f.filename).resolve() == target]
    return lines[-1] if lines else None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key written twice in one mapping.

    PyYAML keeps the last of two equal keys; in the name -> entry form that would silently drop a
    process, and inside an entry silently drop a value.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            # `<<: *anchor` merge keys may repeat and are resolved by the base class.
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first is not None:
                problem = f"key {key!r} repeated (first on line {first + 1})"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput("file", f"{path}: cannot read: {exc}") from exc
    try:
        # A SafeLoader subclass: plain data only, no Python objects built from tags.
        document = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        problem = f"{context}: {problem}" if context else problem
        raise InvalidInput("file", f"{where}: {problem}") from exc
    if not isinstance(document, Mapping) or YAML_KEY not in document:
        raise InvalidInput("file", f"{path}: needs a top-level key {YAML_KEY!r}")
    for key in document:
        # x- keys hold YAML anchors (`x-defaults: &defaults`), as in docker compose files.
        if key != YAML_KEY and not str(key).startswith("x-"):
            hint = difflib.get_close_matches(str(key), [YAML_KEY], n=1)
            more = f" (did you mean {hint[0]!r}?)" if hint else " (only x- keys may sit next to it)"
            raise InvalidInput("file", f"{path}: unknown top-level key {key!r}{more}")
    return document[YAML_KEY]


def _entries(raw: Any, path: Path) -> list[ProcessEntry]:
    """Validate every entry, then the set, and raise all problems together."""
    errors: list[InvalidInput] = []
    entries: list[ProcessEntry] = []
    broken: set[str] = set()
    for index, data, name_error in _items(raw, path):
        if name_error is not None:
            errors.append(name_error)
        try:
            entries.append(entry_from_mapping(data, index=index))
        except InvalidInputs as exc:
            errors.extend(exc.errors)
            name = data.get("name") if isinstance(data, Mapping) else None
            if isinstance(name, str):
                broken.add(name)
    try:
        validate_entries(entries, also_known=broken - {entry.name for entry in entries})
    except InvalidInputs as exc:
        errors.extend(exc.errors)
    if errors:
        raise InvalidInputs(errors)
    return entries


def _items(raw: Any, path: Path) -> list[tuple[int, Any, InvalidInput | None]]:
    """(index, entry mapping, problem of a mapping key) for each entry of either form."""
    if raw is None:
        problem = f"{path}: the process list is empty (write [] to register nothing)"
        raise InvalidInput("file", problem)
    if isinstance(raw, Mapping):
        items = []
        for index, (key, fields) in enumerate(raw.items()):
            data = entry_fields(fields) if isinstance(fields, ProcessEntry) else fields
            error = None
            if isinstance(data, Mapping):
                written = data.get("name")
                if written is not None and written != key:
                    problem = f"differs from the key it is listed under ({written!r} under {key!r})"
                    error = InvalidInput("name", problem, entity=f"processes[{index}]")
                data = {**data, "name": key}
            items.append((index, data, error))
        return items
    if isinstance(raw, Sequence) and not isinstance(raw, str | bytes):
        return [
            (index, entry_fields(item) if isinstance(item, ProcessEntry) else item, None)
            for index, item in enumerate(raw)
        ]
    problem = f"the process list must be a list of entries or a mapping name -> entry (got {type(raw).__name__})"
    raise InvalidInput("file", f"{path}: {problem}")


# -- all entries ----------------------------------------------------------------------------------


def validate_entries(entries: Sequence[ProcessEntry], *, also_known: Iterable[str] = ()) -> None:
    """Check the rules between entries: names, dependencies, trees and cycles.

    Cycles are looked for on the union of two kinds of edges, both meaning "waits for":
    ``depends_on`` (a process waits for the processes it names) and trees (in a tree a coarser
    process waits for its next finer one, its children).

    Args:
        entries: every process that will be registered, in file order.
        also_known: names of entries that exist but failed their own validation; they count as
            known so that one broken entry does not also report every entry depending on it.

    Raises:
        InvalidInputs: every problem found, each naming the process and the field.
    """
    errors: list[InvalidInput] = []
    by_name: dict[str, ProcessEntry] = {}
    for entry in entries:
        by_name.setdefault(entry.name, entry)
    counts = Counter(entry.name for entry in entries)
    for name, count in counts.items():
        if count > 1:
            errors.append(
                InvalidInput("name", f"defined {count} times", entity=f"process {name!r}")
            )
    known = set(also_known)
    for entry in by_name.values():
        errors.extend(_dependency_errors(entry, by_name, known))
    tree_edges, tree_errors = _tree_edges(by_name)
    errors.extend(tree_errors)
    errors.extend(_cycle_errors(by_name, tree_edges))
    if errors:
        raise InvalidInputs(errors)


def _dependency_errors(
    entry: ProcessEntry, by_name: Mapping[str, ProcessEntry], known: set[str]
) -> list[InvalidInput]:
    errors = []
    entity = f"process {entry.name!r}"
    for target in entry.depends_on:
        if target == entry.name:
            errors.append(InvalidInput("depends_on", "names the process itself", entity=entity))
        elif target in known:
            continue
        elif target not in by_name:
            others = [name for name in by_name if name != entry.name]
            hint = difflib.get_close_matches(target, others, n=1)
            more = f" (did you mean {hint[0]!r}?)" if hint else ""
            errors.append(
                InvalidInput("depends_on", f"names unknown process {target!r}{more}", entity=entity)
            )
        elif by_name[target].kind is not ProcessKind.MANAGED:
            kind = by_name[target].kind.value
            problem = (
                f"names {target!r}, a {kind} process; only managed processes can be depended on"
            )
            errors.append(InvalidInput("depends_on", problem, entity=entity))
    return errors


def _tree_edges(
    by_name: Mapping[str, ProcessEntry],
) -> tuple[dict[str, list[str]], list[InvalidInput]]:
    """Each tree's coarser -> next finer edges, and the problems of the trees."""
    members: dict[str, list[ProcessEntry]] = {}
    for entry in by_name.values():
        if entry.tree is not None:
            members.setdefault(entry.tree, []).append(entry)
    edges: dict[str, list[str]] = {}
    errors = []
    for tree, entries in members.items():
        managed = []
        for entry in entries:
            if entry.kind is not ProcessKind.MANAGED or entry.time_qualifier is None:
                problem = (
                    f"tree {tree!r}: only managed processes form trees, not a {entry.kind.value}"
                )
                errors.append(InvalidInput("tree", problem, entity=f"process {entry.name!r}"))
            else:
                managed.append(entry)
        by_rank: dict[int, ProcessEntry] = {}
        for entry in managed:
            other = by_rank.setdefault(entry.time_qualifier.rank, entry)
            if other is not entry:
                problem = (
                    f"tree {tree!r} already has {other.name!r} at {entry.time_qualifier.value}"
                )
                errors.append(InvalidInput("tree", problem, entity=f"process {entry.name!r}"))
        ranked = [by_rank[rank] for rank in sorted(by_rank)]
        for finer, coarser in zip(ranked, ranked[1:], strict=False):
            edges.setdefault(coarser.name, []).append(finer.name)
    return edges, errors


def _cycle_errors(
    by_name: Mapping[str, ProcessEntry], tree_edges: Mapping[str, list[str]]
) -> list[InvalidInput]:
    """One error per cycle found by a depth-first search, in file order."""
    waits_for = {
        name: [t for t in entry.depends_on if t in by_name and t != name] + tree_edges.get(name, [])
        for name, entry in by_name.items()
    }
    order = {name: i for i, name in enumerate(by_name)}
    done: set[str] = set()
    seen_cycles: set[frozenset[str]] = set()
    errors = []

    def visit(name: str, path: list[str]) -> None:
        path.append(name)
        for target in waits_for[name]:
            if target in path:
                cycle = path[path.index(target) :]
                if frozenset(cycle) not in seen_cycles:
                    seen_cycles.add(frozenset(cycle))
                    # Start the message at the cycle's first entry in the file: stable and findable.
                    start = min(range(len(cycle)), key=lambda i: order[cycle[i]])
                    ring = cycle[start:] + cycle[:start]
                    text = " -> ".join([*ring, ring[0]])
                    errors.append(
                        InvalidInput(
                            "depends_on", f"dependency cycle: {text}", entity=f"process {ring[0]!r}"
                        )
                    )
            elif target not in done:
                visit(target, path)
        path.pop()
        done.add(name)

    for name in by_name:
        if name not in done:
            visit(name, [])
    return errors


# -- re-registering -------------------------------------------------------------------------------


def merge_registration(
    record_entry: ProcessEntry, registered: Mapping[str, Any] | None, file_entry: ProcessEntry
) -> tuple[ProcessEntry, dict[str, Any]]:
    """Apply the re-register rule to one process the store already has.

    For each field: when the file's value differs from what the file said last time
    (``registered``), the file wins; otherwise the stored value stays, so an edit made at run
    time (through the API: ``enabled``, ``trigger`` ...) survives until the file changes that
    field. Refinements:

    - the fields of :data:`COUPLED_FIELDS` move together;
    - a changed ``kind``, or no ``registered`` (a process created through the API that the file
      now defines, and thereby adopts), takes every field from the file;
    - a ``start_timeperiod`` of None in the file ("the current period", resolved by the caller on
      first insert) is never a change: the stored, resolved value stays. It comes out None only
      when the qualifier changed; the caller then resolves it again.

    Args:
        record_entry: the stored, effective entry.
        registered: what the file said at the last registration (``ProcessEntry.to_dict()``
            form), or None.
        file_entry: the validated entry of the same name from the file now.

    Returns:
        The new effective entry and the new registered dict (``file_entry.to_dict()``).
    """
    new_registered = file_entry.to_dict()
    registered = _as_now(registered)
    if registered is None or registered.get("kind") != new_registered["kind"]:
        changed = set(new_registered)
    else:
        changed = {
            field
            for field, value in new_registered.items()
            if registered.get(field, _MISSING) != value
        }
        if new_registered["start_timeperiod"] is None:
            changed.discard("start_timeperiod")
        for group in COUPLED_FIELDS:
            if changed & group:
                changed |= group
    effective = record_entry.to_dict()
    effective.update({field: new_registered[field] for field in changed})
    return ProcessEntry.from_dict(effective), new_registered


def _as_now(registered: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A ``registered`` dict in today's form: one written before flows existed has no
    ``steps`` (and one written by their first version has ``[]``); either means none, so
    the first registration after an upgrade sees no change there."""
    if registered is None:
        return None
    return {**registered, "steps": registered.get("steps") or None}


class PlannedUpdate(NamedTuple):
    """One stored process that registering changes; store it with source ``file``."""

    name: str
    #: The new effective entry (``start_timeperiod`` None: resolve it to the current period).
    entry: ProcessEntry
    #: The new ``registered`` dict: what the file says now.
    registered: dict[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class RegistrationPlan:
    """What ``launch.py register`` changes in the store; each process appears in one list."""

    #: New processes, in file order; store each with ``registered=entry.to_dict()``, source
    #: ``file``, and its ``start_timeperiod`` resolved when None.
    create: tuple[ProcessEntry, ...] = ()
    update: tuple[PlannedUpdate, ...] = ()
    #: Names of processes the file defines as they are stored.
    unchanged: tuple[str, ...] = ()
    #: Names of file-registered processes the file no longer defines (only with ``prune``).
    prune: tuple[str, ...] = ()

    @property
    def has_changes(self) -> bool:
        """Whether applying the plan writes anything."""
        return bool(self.create or self.update or self.prune)


def plan_registration(
    existing: Mapping[str, tuple[ProcessEntry, Mapping[str, Any] | None, str]],
    entries: Sequence[ProcessEntry],
    *,
    prune: bool,
) -> RegistrationPlan:
    """Compare the file with the store and decide what registering it changes. Pure.

    The result is validated as a whole (:func:`validate_entries`) on the processes that exist
    once the plan is applied: the file's entries (as merged) plus the stored processes the file
    does not name and the plan does not prune. A pruned process, or one the file turned into a
    freerun, can therefore not stay behind as the dependency of a process that remains, and a
    remaining process cannot share a tree level with a process of the file.

    Args:
        existing: the stored processes: name -> (effective entry, registered dict or None,
            source ``"file"`` or ``"api"``).
        entries: the validated entries of the file (:func:`load_file`).
        prune: also remove file-registered processes the file no longer defines. Processes
            created through the API are never pruned.

    Returns:
        The plan.

    Raises:
        InvalidInputs: the processes after the plan would break a rule between entries.
    """
    create: list[ProcessEntry] = []
    update: list[PlannedUpdate] = []
    unchanged: list[str] = []
    after: dict[str, ProcessEntry] = {}
    for entry in entries:
        if entry.name not in existing:
            create.append(entry)
            after[entry.name] = entry
            continue
        stored, registered, _ = existing[entry.name]
        effective, new_registered = merge_registration(stored, registered, entry)
        if effective == stored and _as_now(registered) == new_registered:
            unchanged.append(entry.name)
        else:
            update.append(PlannedUpdate(entry.name, effective, new_registered))
        after[entry.name] = effective
    pruned = [
        name
        for name, (_, _, source) in existing.items()
        if prune and source == ProcessSource.FILE and name not in after
    ]
    remaining = [
        stored
        for name, (stored, _, _) in existing.items()
        if name not in after and name not in pruned
    ]
    validate_entries([*after.values(), *remaining])
    return RegistrationPlan(
        create=tuple(create), update=tuple(update), unchanged=tuple(unchanged), prune=tuple(pruned)
    )
