"""Entity history in MongoDB: an array embedded in the entity's own document.

Embedding is what makes a state change and its event one atomic single-document write. The array
is capped at :data:`~db.backends.mongo.documents.HISTORY_LIMIT` events by ``$push``'s ``$slice``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from db.backends.base import check_limit
from db.backends.mongo.core import MongoCore
from db.backends.mongo.documents import event_from_doc
from db.backends.mongo.errors import translated
from db.backends.mongo.schema import JOBS, PROCESSES, SUPERVISED, UOWS
from db.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from db.models import Event

#: Entity name -> (collection, names of the key fields its id joins with "/").
_ENTITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "job": (JOBS, ("process", "timeperiod")),
    "uow": (UOWS, ("_id",)),
    "process": (PROCESSES, ("name",)),
    "supervised": (SUPERVISED, ("box_id", "process")),
}


def _locate(entity: str, entity_id: str) -> tuple[str, dict[str, Any]]:
    """The collection and filter of the document holding an entity's history."""
    if entity not in _ENTITIES:
        raise InvalidInput("entity", f"must be one of {', '.join(_ENTITIES)} (got {entity!r})")
    collection, fields = _ENTITIES[entity]
    if len(fields) == 1:
        return collection, {fields[0]: entity_id}
    # The last part (timeperiod, process name) never contains "/"; the first might.
    parts = entity_id.rsplit("/", 1)
    if len(parts) != 2:
        raise InvalidInput("entity_id", f"a {entity} id is {'/'.join(fields)} (got {entity_id!r})")
    return collection, dict(zip(fields, parts, strict=True))


class HistoryMixin(MongoCore):
    """The history half of the store interface."""

    @translated
    def append_event(self, event: Event) -> None:
        """Append an event to an entity's history outside a state change.

        Raises:
            NotFound: the entity does not exist (its history lives in its document).
        """
        collection, match = _locate(event.entity, event.entity_id)
        if not self._push(self._db[collection], match, event):
            raise NotFound(event.entity, event.entity_id)

    @translated
    def history(self, entity: str, entity_id: str, *, limit: int = 500) -> list[Event]:
        """The latest ``limit`` events of one entity, oldest first."""
        limit = check_limit(limit)
        collection, match = _locate(entity, entity_id)
        # The whole (capped) array is read: nx-27017 refuses the {"$slice": -n} projection.
        doc = self._db[collection].find_one(match, projection={"history": True})
        if doc is None:
            return []
        return [event_from_doc(raw) for raw in (doc.get("history") or [])[-limit:]]
