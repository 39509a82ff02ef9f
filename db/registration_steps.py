"""Rules between the steps of one entry of the registration file (SPEC section 10).

Each step's own fields are converted and checked by :mod:`db.registration_rules`, like the
process's; what is left here needs the steps together: unique names, ``depends_on`` naming
steps of the same process, and no cycle. :func:`run_order_text` shows the order the steps run
in (``launch.py register --check``).

Problems are ``(field, problem)`` pairs whose field names the step: ``steps.load.depends_on``,
or ``steps[2].command`` for a step without a valid name.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from db.flows import find_cycle, run_order, upstream_of

if TYPE_CHECKING:
    from db.models import ProcessEntry, StepEntry


def graph_problems(
    steps: Sequence[StepEntry], *, also_known: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """Duplicate names, ``depends_on`` naming an unknown step or the step itself, and cycles.

    Args:
        steps: the valid steps, in file order.
        also_known: names of steps that exist but failed their own rules; depending on one is
            not reported again.

    Returns:
        The problems; a cycle is looked for only when there is no other.
    """
    problems = []
    counts = Counter(step.name for step in steps)
    for name, count in counts.items():
        if count > 1:
            problems.append((f"steps.{name}.name", f"defined {count} times"))
    known = set(counts) | set(also_known)
    for step in steps:
        for up in step.depends_on or ():
            field = f"steps.{step.name}.depends_on"
            if up == step.name:
                problems.append((field, "names the step itself"))
            elif up not in known:
                hint = difflib.get_close_matches(up, sorted(known - {step.name}), n=1)
                more = f" (did you mean {hint[0]!r}?)" if hint else ""
                problems.append((field, f"names unknown step {up!r}{more}"))
    if problems:
        return problems
    cycle = find_cycle(upstream_of(steps))
    if cycle is None:
        return []
    # Start the message at the cycle's first step in the file: stable and findable.
    order = {step.name: i for i, step in enumerate(steps)}
    ring = cycle[:-1]
    start = min(range(len(ring)), key=lambda i: order[ring[i]])
    ring = ring[start:] + ring[:start]
    text = " -> ".join([*ring, ring[0]])
    return [(f"steps.{ring[0]}.depends_on", f"dependency cycle: {text}")]


def run_order_text(entry: ProcessEntry) -> str:
    """The order ``entry``'s steps run in, wave by wave: ``a -> [b, c] -> d`` (steps in
    brackets may run at the same time)."""
    waves = run_order(upstream_of(entry.steps))
    return " -> ".join(wave[0] if len(wave) == 1 else f"[{', '.join(wave)}]" for wave in waves)
