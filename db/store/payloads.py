"""The payloads part of the store interface (SPEC section 12): bytes stored once per content."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from db.models import Payload


class PayloadStore(ABC):
    """Payloads of tasks, triggers and freerun entries: a part of :class:`~db.store.Store`."""

    @abstractmethod
    def save_payload(self, payload: Payload) -> tuple[Payload, bool]:
        """Store a payload unless one of the same ``sha256`` is stored (insert-if-absent under
        the unique key: of two racing callers with the same bytes, both get the one stored).

        Args:
            payload: the payload with its ``data`` (``sha256`` and ``size`` computed by the
                caller, :func:`db.payloads.new_payload`).

        Returns:
            (the stored payload without its data, True if this call stored it). When the bytes
            were stored before, that payload (its id, content type and ``created_at``) is
            returned.
        """

    @abstractmethod
    def get_payload(self, payload_id: str, *, data: bool = True) -> Payload:
        """One payload, with its bytes unless ``data`` is false.

        Raises:
            NotFound: no payload has this id.
        """
