"""The MongoDB family of the store interface, on plain pymongo 4 (``mongodb://`` URIs)."""

from __future__ import annotations

from db.backends.mongo.store import MongoStore

__all__ = ["MongoStore"]
