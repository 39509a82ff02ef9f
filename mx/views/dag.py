"""A flow run's DAG laid out for inline SVG (SPEC section 10), drawn by ``_charts.html`` like
the other charts: a column per wave of :func:`db.flows.run_order` (a step stands right of every
step it waits for), the steps of a wave one under the other, an edge from each upstream step to
its dependent. Each node is coloured by its step's state through the stylesheet's state classes
and links to the step's unit of work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from db import flows
from db.errors import InvalidInput
from db.states import TERMINAL_UOW_STATES, UowState
from mx.views.filters import took

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: A node's height, the least width, and the room around the drawing.
NODE_HEIGHT = 40
NODE_WIDTH = 150
PAD = 12
#: Room between two columns (for the edges) and between two nodes of a column.
COLUMN_GAP = 56
ROW_GAP = 14
#: About how wide a character of a node's name is at its font size.
CHAR = 7.4
#: The states a step can be in, in the order the legend names them (a node of a step not
#: created yet is ``none``: its flow run was not expanded).
STEP_STATES = (
    UowState.PENDING,
    UowState.REQUESTED,
    UowState.IN_PROGRESS,
    UowState.PROCESSED,
    UowState.NOOP,
    UowState.INVALID,
    UowState.CANCELED,
    UowState.UPSTREAM_FAILED,
)
_ENDED = frozenset(s.value for s in TERMINAL_UOW_STATES)


@dataclass(frozen=True, slots=True)
class Node:
    """One step: its box's top left corner, its state, its label and its tooltip."""

    name: str
    x: float
    y: float
    width: float
    height: float
    #: The step's state, or ``none`` before its flow run was expanded.
    state: str
    #: Under the name: its state and attempt (``in progress · #2``).
    detail: str
    title: str
    href: str | None = None


@dataclass(frozen=True, slots=True)
class Edge:
    """A curve from an upstream step's right side to its dependent's left side."""

    source: str
    target: str
    path: str
    #: The upstream step has ended (the edge is drawn solid, else dashed).
    done: bool


@dataclass(frozen=True, slots=True)
class DagChart:
    width: int
    height: int
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    #: The states the legend names.
    states: tuple[str, ...] = tuple(s.value for s in STEP_STATES)


def waves_of(steps: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The columns: :func:`db.flows.run_order` of the steps' upstream (names not among the
    steps are left out; a cycle, which registration refuses, is drawn as one column)."""
    names = {s["name"] for s in steps}
    upstream = {s["name"]: [u for u in s["upstream"] if u in names] for s in steps}
    try:
        return flows.run_order(upstream)
    except InvalidInput:
        return [list(upstream)]


def layout(steps: Sequence[dict[str, Any]], *, step_href: Callable[[str], str]) -> DagChart | None:
    """The DAG of a flow run from :func:`mx.services.uows.flow_steps` (None without steps);
    ``step_href`` gives a step's unit of work page from its id."""
    if not steps:
        return None
    by_name = {s["name"]: s for s in steps}
    waves = waves_of(steps)
    width = max(NODE_WIDTH, CHAR * max(len(name) for name in by_name) + 24)
    tallest = max(len(wave) for wave in waves)
    place: dict[str, tuple[float, float]] = {}
    for column, wave in enumerate(waves):
        # a wave shorter than the tallest is centred on it
        top = PAD + (tallest - len(wave)) * (NODE_HEIGHT + ROW_GAP) / 2
        for row, name in enumerate(wave):
            place[name] = (
                PAD + column * (width + COLUMN_GAP),
                top + row * (NODE_HEIGHT + ROW_GAP),
            )
    nodes = [_node(by_name[name], *place[name], width, step_href) for name in place]
    edges = [
        _edge(up, step["name"], place[up], place[step["name"]], width, by_name[up]["state"])
        for step in steps
        for up in step["upstream"]
        if up in place
    ]
    return DagChart(
        width=round(2 * PAD + len(waves) * (width + COLUMN_GAP) - COLUMN_GAP),
        height=round(2 * PAD + tallest * (NODE_HEIGHT + ROW_GAP) - ROW_GAP),
        nodes=nodes,
        edges=edges,
    )


def _node(
    step: dict[str, Any], x: float, y: float, width: float, step_href: Callable[[str], str]
) -> Node:
    state = step["state"] or "none"
    if step["uow_id"] is None:
        detail = "not created yet"
    else:
        detail = f"{state.replace('_', ' ')} · #{step['attempt']}"
    facts = [f"step {step['name']}: {state}"]
    if step["attempt"]:
        facts.append(f"attempt {step['attempt']}")
    if step["started_at"]:
        facts.append(f"took {took(step['started_at'], step['finished_at'])}")
    if step["exit_code"] is not None:
        facts.append(f"exit code {step['exit_code']}")
    if step["upstream"]:
        facts.append(f"after {', '.join(step['upstream'])} ({step['run_if']})")
    return Node(
        name=step["name"],
        x=round(x, 1),
        y=round(y, 1),
        width=round(width, 1),
        height=NODE_HEIGHT,
        state=state,
        detail=detail,
        title=", ".join(facts),
        href=None if step["uow_id"] is None else step_href(step["uow_id"]),
    )


def _edge(
    source: str,
    target: str,
    start: tuple[float, float],
    end: tuple[float, float],
    width: float,
    source_state: str | None,
) -> Edge:
    x1, y1 = start[0] + width, start[1] + NODE_HEIGHT / 2
    x2, y2 = end[0], end[1] + NODE_HEIGHT / 2
    bend = max(COLUMN_GAP / 2, (x2 - x1) / 2)
    path = (
        f"M{x1:.1f} {y1:.1f} C{x1 + bend:.1f} {y1:.1f} {x2 - bend:.1f} {y2:.1f} "
        f"{x2 - 2:.1f} {y2:.1f}"
    )
    return Edge(source=source, target=target, path=path, done=source_state in _ENDED)
