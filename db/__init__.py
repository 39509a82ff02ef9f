"""The bottom layer: models, states, machines, the store interface and its backends."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from db.errors import InvalidInput

if TYPE_CHECKING:
    from db.store import Store

#: URI scheme -> "module:Class" of the backend; modules load lazily so SQL users never import
#: pymongo and MongoDB users never import SQLAlchemy.
STORE_BACKENDS = {
    "sqlite": "db.backends.sql:SqlStore",
    "postgresql": "db.backends.sql:SqlStore",
    "postgres": "db.backends.sql:SqlStore",
    "mysql": "db.backends.sql:SqlStore",
    "mariadb": "db.backends.sql:SqlStore",
    "mongodb": "db.backends.mongo:MongoStore",
    "mongodb+srv": "db.backends.mongo:MongoStore",
}


def open_store(uri: str) -> Store:
    """Open the store named by ``uri`` (``sqlite:///path``, ``postgresql://...``,
    ``mysql://...``, ``mongodb://...``).

    Raises:
        InvalidInput: the scheme is not one Tactus knows (field ``store_uri``).
        StoreUnavailable: the backend's driver is not installed.
    """
    scheme = urlsplit(uri).scheme.split("+", 1)[0].lower()
    if uri.startswith("mongodb+srv"):
        scheme = "mongodb+srv"
    target = STORE_BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(sorted({s for s in STORE_BACKENDS if "+" not in s}))
        raise InvalidInput("store_uri", f"unknown scheme {scheme!r} (known: {known})")
    module_name, class_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(uri)
