"""Flow runs for the page's tests (mx and browser): a process with steps registered in a store,
and a run of it driven through the funnel as workers would drive it (the contract suite's
:class:`~tests.contract.test_store_flows.Flow`, on a clock and a run of the caller's)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from db import flows
from db.models import ProcessEntry, StepEntry
from db.registration import entry_from_mapping
from db.state_change import UowChange, change_uows
from db.states import UowKind
from db.uow_factory import create_once
from tests.contract.test_store_flows import ACTOR, Flow
from tests.mx.conftest import insert_entry

#: extract, then t1 and t2 side by side, then load once both succeeded.
STEPS = (
    StepEntry(name="extract", command=("true",), depends_on=()),
    StepEntry(name="t1", command=("true",), depends_on=("extract",)),
    StepEntry(name="t2", command=("true",), depends_on=("extract",)),
    StepEntry(name="load", command=("true",), depends_on=("t1", "t2")),
)
#: Each step's wave (its column in the DAG).
WAVES = {"extract": 0, "t1": 1, "t2": 1, "load": 2}


def register_flow(store, clock, name: str = "etl", **fields: Any) -> ProcessEntry:
    """A freerun process (unless ``fields`` say otherwise) with :data:`STEPS` and no retries."""
    fields = {"name": name, "kind": "freerun", "trigger": "every 3600", **fields}
    # the registration file takes no steps yet: the entry is made with a command, then given
    # its steps in place of it
    plain = entry_from_mapping({**fields, "command": ["true"], "retries": 0})
    entry = replace(plain, command=None, steps=STEPS)
    insert_entry(store, clock, entry)
    return entry


class PageFlow(Flow):
    """A flow run of a registered process, expanded as its worker would expand it."""

    def __init__(self, store, clock, name: str, run=None, *, run_key: str = "r1") -> None:
        self.store = store
        self.clock = clock
        self.entry = store.get_process(name).entry
        self.announced: list = []
        if run is None:
            stamp = clock.now().strftime("%Y%m%d%H%M%S")
            run, _ = create_once(
                store,
                self.entry,
                clock=clock,
                actor=ACTOR,
                reason="test",
                kind=UowKind.FREERUN,
                start=stamp,
                end=stamp,
                run_key=run_key,
                scheduled_at=clock.now(),
            )
        self.run = flows.expand(
            store, run, self.entry, clock=clock, actor=ACTOR, announce=self.announced.extend
        )

    def cancel_by_failure(self) -> None:
        """extract processed, t1 failed for good, t2 processed: load upstream_failed and the
        flow run canceled."""
        self.end("extract")
        self.fail_for_good("t1")
        self.end("t2")

    def finish(self, name: str, trigger: str = "succeed") -> None:
        """End a step its worker has claimed."""
        (done,) = change_uows(
            self.store,
            [UowChange(uow=self.get(name), trigger=trigger)],
            clock=self.clock,
            actor=ACTOR,
            announce=self.announced.extend,
        )
        assert not isinstance(done, Exception), done
