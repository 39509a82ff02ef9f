"""A state machine built once from a transition table, deciding for any stored state.

Each table is a list of :class:`Row` (trigger, source, dest, conditions). The ``transitions``
library holds the graph; one machine serves every entity of its kind: a decision sets the stored
state on a private model under a lock and fires the trigger, so restoring a machine for a stored
document costs nothing (no construction per document). Callbacks do no I/O: the machine only
decides or refuses; :mod:`db.state_change` persists.

Conditions are names of *facts* the caller establishes before asking (``finalizable``,
``attempts_remain`` ...): a condition holds when the fact is passed and true.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from transitions import Machine, MachineError

from db.errors import TransitionRefused


@dataclass(frozen=True, slots=True)
class Row:
    """One edge of a transition table."""

    trigger: str
    source: str
    dest: str
    conditions: tuple[str, ...] = ()


class _Model:
    """The single model a :class:`TableMachine` decides on; its state is set per decision."""

    state: str


class TableMachine:
    """A ``transitions`` machine over one table; thread-safe, shared by all entities of a kind."""

    def __init__(self, name: str, entity: str, states: Iterable[str], rows: Sequence[Row]) -> None:
        self.name = name
        self.entity = entity
        self.states = tuple(str(s) for s in states)
        self.rows = tuple(rows)
        self.conditions = sorted({c for row in self.rows for c in row.conditions})
        model_class = type(
            f"{name.title().replace('_', '')}Model",
            (_Model,),
            {c: _fact_condition(c) for c in self.conditions},
        )
        self._model = model_class()
        self._machine = Machine(
            model=self._model,
            states=list(self.states),
            transitions=[
                {
                    "trigger": row.trigger,
                    "source": str(row.source),
                    "dest": str(row.dest),
                    "conditions": list(row.conditions),
                }
                for row in self.rows
            ],
            initial=self.states[0],
            auto_transitions=False,
            send_event=True,
        )
        self._lock = threading.Lock()
        #: (state, trigger, facts) -> destination, of the decisions made (few: a table's edges).
        self._decided: dict[tuple[str, str, frozenset[tuple[str, Any]]], str] = {}
        self.triggers = tuple(dict.fromkeys(row.trigger for row in self.rows))

    def allowed(self, state: str) -> list[str]:
        """Triggers with an edge out of ``state`` (conditions not evaluated)."""
        return list(dict.fromkeys(r.trigger for r in self.rows if r.source == state))

    def decide(self, state: str, trigger: str, key: object = "", **facts: Any) -> str:
        """The destination of ``trigger`` from ``state`` given ``facts``.

        Raises:
            TransitionRefused: no edge for (state, trigger), or a condition does not hold.
        """
        state = str(state)
        try:
            # a destination depends on the table and these only: decided once each
            return self._decided[(state, trigger, frozenset(facts.items()))]
        except KeyError:
            pass
        except TypeError:  # a fact that is not hashable: decide it below
            return self._decide(state, trigger, key, facts)
        dest = self._decide(state, trigger, key, facts)
        self._decided[(state, trigger, frozenset(facts.items()))] = dest
        return dest

    def _decide(self, state: str, trigger: str, key: object, facts: dict[str, Any]) -> str:
        if state not in self.states:
            raise TransitionRefused(self.entity, key, state, trigger, "unknown state")
        if trigger not in self.triggers:
            raise TransitionRefused(self.entity, key, state, trigger, "unknown trigger")
        with self._lock:
            self._model.state = state
            try:
                moved = self._model.trigger(trigger, **facts)
            except MachineError as exc:
                raise TransitionRefused(self.entity, key, state, trigger, "not allowed") from exc
            dest = self._model.state
        if not moved:
            raise TransitionRefused(
                self.entity, key, state, trigger, self._failed_conditions(state, trigger, facts)
            )
        return dest

    def _failed_conditions(self, state: str, trigger: str, facts: dict[str, Any]) -> str:
        missing = [
            c
            for row in self.rows
            if row.source == state and row.trigger == trigger
            for c in row.conditions
            if not facts.get(c)
        ]
        return "condition not met: " + ", ".join(dict.fromkeys(missing))


def _fact_condition(name: str):
    def condition(self: _Model, event: Any) -> bool:
        return bool(event.kwargs.get(name))

    condition.__name__ = name
    return condition
