"""The no-op Python worker of bench/dispatch.py, registered as
``worker: "bench.dispatch_worker:NoopWorker"`` and run by ``python -m workers`` with the
repository root on ``PYTHONPATH``.

A Python class, not ``command: ["true"]``: the shell driver forks and waits for a child per
unit of work, which would measure ``fork``/``exec`` rather than dispatch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.base import Outcome, UowWorker

if TYPE_CHECKING:
    from db.models import UnitOfWork


class NoopWorker(UowWorker):
    """Does nothing and reports processed."""

    def process_uow(self, uow: UnitOfWork) -> Outcome | None:
        return None
