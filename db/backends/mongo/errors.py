"""Translation of pymongo exceptions into Tactus errors, at the boundary of every store method."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from bson.errors import InvalidDocument
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError

from db.errors import DuplicateKey, InvalidInput, StoreUnavailable

if TYPE_CHECKING:
    from pymongo.errors import BulkWriteError

P = ParamSpec("P")
R = TypeVar("R")

#: MongoDB's error code for a unique-index violation.
DUPLICATE_KEY_CODE = 11000


class Described(Protocol):
    """Anything that can name its store for an error message without revealing a password."""

    def describe(self) -> str: ...


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """Decorate a store method so that no pymongo exception escapes it.

    Methods catch :class:`DuplicateKeyError` themselves where they know the entity and key; this
    is the fallback. Connection failures (``ServerSelectionTimeoutError`` and ``AutoReconnect``
    are both ``ConnectionFailure``) and any other server failure become
    :class:`~db.errors.StoreUnavailable`, named by the masked URI.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        store: Described = args[0]  # type: ignore[assignment]
        try:
            return method(*args, **kwargs)
        except DuplicateKeyError as exc:
            raise DuplicateKey("document", _duplicate_key(exc)) from exc
        except ConnectionFailure as exc:
            raise StoreUnavailable(f"{store.describe()} is unreachable: {exc}") from exc
        except PyMongoError as exc:
            raise StoreUnavailable(f"{store.describe()} failed: {exc}") from exc
        except InvalidDocument as exc:
            raise InvalidInput("document", f"cannot be stored in MongoDB: {exc}") from exc

    return wrapper


def _duplicate_key(exc: DuplicateKeyError) -> Any:
    details = exc.details or {}
    return details.get("keyValue") or details.get("errmsg") or str(exc)


def only_duplicates(exc: BulkWriteError) -> bool:
    """True when every error of an unordered bulk insert is a duplicate key (expected in a race)."""
    details = exc.details or {}
    errors = details.get("writeErrors", [])
    return not details.get("writeConcernErrors") and all(
        error.get("code") == DUPLICATE_KEY_CODE for error in errors
    )
