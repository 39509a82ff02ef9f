"""Freerun fires in MongoDB: one document per fire, unique by (process, scheduled_at)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pymongo.errors import DuplicateKeyError

from db.backends.base import check_limit
from db.backends.mongo.core import MongoCore
from db.backends.mongo.documents import fire_doc, fire_from_doc, to_utc
from db.backends.mongo.errors import translated
from db.backends.mongo.schema import FIRES
from db.states import FireOutcome

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from db.models import FireRecord

log = logging.getLogger(f"tactus.{__name__}")


class FiresMixin(MongoCore):
    """The freerun-fire half of the store interface."""

    @translated
    def record_fire(self, fire: FireRecord) -> bool:
        """Record one fire once; False if (process, scheduled_at) was already recorded."""
        try:
            self._db[FIRES].insert_one(fire_doc(fire))
        except DuplicateKeyError:
            return False
        return True

    @translated
    def set_fire_uow(self, process: str, scheduled_at: datetime, uow_id: str) -> None:
        """Link a recorded fire to the unit of work created for it."""
        at = to_utc(scheduled_at, "scheduled_at")
        result = self._db[FIRES].update_one(
            {"process": process, "scheduled_at": at},
            self._portable({"$set": {"uow_id": uow_id}}),
        )
        if result.matched_count == 0:
            log.warning("fire %s@%s: not recorded, cannot link uow %s", process, at, uow_id)

    @translated
    def last_fire(self, process: str) -> FireRecord | None:
        """The fire of ``process`` with the latest ``scheduled_at``, or None."""
        fires = self.list_fires(process, limit=1)
        return fires[0] if fires else None

    @translated
    def unlinked_fires(self, processes: Sequence[str]) -> list[FireRecord]:
        """Fired fires with no unit of work linked (indexed by uow_id, outcome, process)."""
        docs = (
            self._db[FIRES]
            .find(
                {
                    "uow_id": None,
                    "outcome": FireOutcome.FIRED.value,
                    "process": {"$in": list(dict.fromkeys(processes))},
                }
            )
            .sort([("process", 1), ("scheduled_at", 1)])
        )
        return [fire_from_doc(doc) for doc in docs]

    @translated
    def list_fires(self, process: str, *, limit: int = 100) -> list[FireRecord]:
        """The latest fires of ``process``, newest first."""
        docs = (
            self._db[FIRES]
            .find({"process": process})
            .sort("scheduled_at", -1)
            .limit(check_limit(limit))
        )
        return [fire_from_doc(doc) for doc in docs]
