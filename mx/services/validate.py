"""The checks every input of mx passes, whichever door it came through (the API, the page, the
command line): each rule is written once, here, and raises :class:`~db.errors.InvalidInput`
naming the field, so the three doors refuse the same things with the same words.

The doors only turn their text into values (a query string, a form, argv) and call these; the
service verbs call them again on what they are given, so a verb called by a new door cannot
skip a rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, TypeVar

from db.errors import InvalidInput
from db.registration_rules import NAME_PATTERN
from db.states import ProcessKind
from db.store import MAX_PAGE_SIZE

E = TypeVar("E", bound=StrEnum)

#: Page size when ``limit`` is not given.
DEFAULT_LIMIT = 100
#: Deepest nesting of a request body (MongoDB stops at 100; no entry needs more than a few).
MAX_DEPTH = 32
#: Longest cursor accepted (the stores issue a few dozen characters).
MAX_CURSOR = 2000
#: Longest process name (the stores key processes in 191 characters).
MAX_NAME = 191
#: A timeperiod bound of the ``from``/``to`` filters, and a job's timeperiod (SPEC section 2).
TIMEPERIOD = re.compile(r"[0-9]{10}")
#: A lone surrogate: what ``json.loads`` makes of ``"\\ud800"`` and ``os.fsdecode`` of bad
#: bytes; UTF-8 cannot encode it, so no store keeps it and no page shows it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def text(field: str, value: str) -> str:
    """A string every store can keep and every page can show.

    Raises:
        InvalidInput: ``field`` holds a NUL character (PostgreSQL cannot store one) or a lone
            surrogate (not Unicode text: UTF-8 cannot encode it).
    """
    if "\x00" in value:
        raise InvalidInput(field, "must not contain NUL characters")
    if _SURROGATE.search(value):
        raise InvalidInput(field, "is not valid Unicode text (a lone surrogate such as \\ud800)")
    return value


def json_value(data: Any, field: str = "body") -> Any:
    """Refuse, in a JSON value, what no store can keep: nesting deeper than ``MAX_DEPTH``,
    numbers beyond 64-bit integers (-2**63 to 2**63 - 1), NaN and infinities (Python's parser
    accepts them), empty field names, NUL characters and lone surrogates (in names and
    values).

    Args:
        data: the decoded value.
        field: its name; a problem deep inside names the top-level field it is under
            (``arguments`` for ``arguments.a[2]``), or ``body`` for the body as a whole.

    Returns:
        ``data``, unchanged.

    Raises:
        InvalidInput: the first problem found.
    """
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        path, value, depth = stack.pop()
        top = _top(path) if path else field
        if depth > MAX_DEPTH:
            raise InvalidInput(top, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    raise InvalidInput(top, f"a field name is not a string ({key!r})")
                if key == "":
                    raise InvalidInput(top, "a field name is empty")
                text(top, key)
            stack.extend(
                (f"{path}.{k}" if path else str(k), v, depth + 1) for k, v in value.items()
            )
        elif isinstance(value, str):
            text(top, value)
        elif isinstance(value, list | tuple):
            stack.extend((f"{path}[{i}]", v, depth + 1) for i, v in enumerate(value))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise InvalidInput(top, "integer out of range (64 bits)")
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(top, "must be a finite number")
        elif isinstance(value, float) and not -(2**63) <= value < 2**63:
            # The same bound for every number: JSON (and its Schema) does not tell 1e19 from
            # 10000000000000000000, and stores that keep 64-bit integers cannot keep the latter.
            raise InvalidInput(top, "number out of range (beyond 64-bit integers)")
    return data


def _top(path: str) -> str:
    """The field a nested path starts with (``arguments`` for ``arguments.a[2]``)."""
    return path.split(".")[0].split("[")[0] or "body"


def only_fields(data: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse a field the verb does not know (a typo must not be ignored silently)."""
    known = set(allowed)
    for field in data:
        if field not in known:
            raise InvalidInput(field, f"unknown field (known: {', '.join(sorted(known))})")


def limit(value: int | str | None) -> int:
    """``limit``: an integer from 1 to 1000 (``MAX_PAGE_SIZE``); None: ``DEFAULT_LIMIT``.

    A string (a query parameter) must be plain decimal digits.
    """
    if value is None:
        return DEFAULT_LIMIT
    number: int | None = None
    if isinstance(value, str):
        if value.isascii() and value.isdigit() and len(value) <= 5:
            number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    if number is None or not 1 <= number <= MAX_PAGE_SIZE:
        raise InvalidInput(
            "limit", f"must be an integer from 1 to {MAX_PAGE_SIZE} (got {str(value)!r})"
        )
    return number


def cursor(value: str | None) -> str | None:
    """``cursor``: None or empty means the first page; anything else goes to the list, which
    refuses a cursor it did not issue (field ``cursor``)."""
    if value is None or value == "":
        return None
    if len(value) > MAX_CURSOR or not value.isascii() or not value.isprintable():
        raise InvalidInput("cursor", "is not a cursor this server issued")
    return value


def process_name(value: str, field: str = "process") -> str:
    """A process name: ``[a-z0-9_]+``, at most ``MAX_NAME`` characters (SPEC section 4)."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or len(value) > MAX_NAME:
        raise InvalidInput(
            field, f"must be a process name: [a-z0-9_]+, at most {MAX_NAME} (got {value!r})"
        )
    return value


def process_filter(value: str | None, field: str = "process") -> str | None:
    """A ``process`` filter: empty or None means every process, else a process name."""
    if value is None or value == "":
        return None
    return process_name(value, field)


def timeperiod(value: str, field: str = "timeperiod") -> str:
    """A timeperiod of ten digits (SPEC section 2), e.g. ``2026010513``."""
    if not isinstance(value, str) or not TIMEPERIOD.fullmatch(value):
        raise InvalidInput(
            field, f"must be a timeperiod of ten digits, e.g. 2026010513 ({value!r})"
        )
    return value


def timeperiod_bound(value: str | None, field: str) -> str | None:
    """``from``/``to``: None for no bound, else a timeperiod (an empty one is refused: it
    would bound nothing and hide a script's missing value)."""
    return None if value is None else timeperiod(value, field)


def states(
    enum: type[E], value: str | Iterable[str] | None, field: str = "state"
) -> frozenset[E] | None:
    """``"a,b"`` or ``["a", "b"]``: members of ``enum``; None, empty: every state."""
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    if not items:
        return None
    found = set()
    for item in items:
        try:
            found.add(enum(item))
        except ValueError:
            known = ", ".join(m.value for m in enum)
            raise InvalidInput(field, f"unknown state {item!r} (known: {known})") from None
    return frozenset(found)


def kind(value: str | None) -> ProcessKind | None:
    """A ``kind`` filter: None for every kind, else ``managed``, ``freerun`` or ``daemon``."""
    if value is None:
        return None
    try:
        return ProcessKind(value)
    except ValueError:
        known = ", ".join(k.value for k in ProcessKind)
        raise InvalidInput("kind", f"must be one of {known} (got {value!r})") from None


def identifier(value: str, field: str) -> str:
    """An id or a box name in a path: non-empty text without NUL or surrogates."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, "must not be empty")
    return text(field, value)


def whole(value: Any) -> Any:
    """A JSON number that is whole, as an ``int``: JSON does not tell ``7`` from ``7.0`` (nor
    does JSON Schema's ``integer``), so neither may the count fields. Anything else is returned
    as it is, for the field's own rule."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


#: The finest duration a store keeps (``timedelta`` has microseconds).
MIN_SECONDS = 1e-6


def seconds(field: str, value: Any) -> Any:
    """Refuse a positive duration shorter than a microsecond: it would be kept as 0."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < MIN_SECONDS:
        raise InvalidInput(field, f"must be at least {MIN_SECONDS:f} seconds (got {value!r})")
    return value
