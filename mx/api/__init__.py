"""The REST API (SPEC section 6): one blueprint, ``api``, under ``/api/v1``.

Importing the route modules registers their routes on the blueprint.
"""

from __future__ import annotations

from mx.api import boxes, executor, jobs, meta, payloads, processes, registration, tasks, uows
from mx.api.common import bp

__all__ = [
    "boxes",
    "bp",
    "executor",
    "jobs",
    "meta",
    "payloads",
    "processes",
    "registration",
    "tasks",
    "uows",
]
