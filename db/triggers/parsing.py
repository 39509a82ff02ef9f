"""Reading triggers: :func:`parse_trigger` for every syntax of the package docstring, with its
caches, and the ``next-runs`` preview of the fires a trigger will make.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from db.clock import require_aware
from db.errors import InvalidInput
from db.triggers.base import IntervalTrigger, OnceTrigger, Trigger
from db.triggers.wallclock import AtTrigger, CronTrigger, _change_instant

#: Every form a trigger can take, for error messages.
SYNTAXES = (
    "a cron expression such as '*/5 * * * *', 'every 300', 'every 1h30m', "
    "'at 10:00,22:00', 'at Mon-Fri 09:30' or 'once 2026-12-24T18:00:00Z'"
)
_CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31 or L"),
    ("month", "1-12 or Jan-Dec"),
    ("day-of-week", "0-7 or Sun-Sat"),
    ("second", "0-59"),
)
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_CLOCK_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_trigger(text: str, timezone: str = "UTC") -> Trigger:
    """Parse a trigger of SPEC section 4.

    Args:
        text: ``*/5 * * * *``, ``every 300``, ``every 1h30m``, ``at 10:00,22:00``,
            ``at Mon-Fri 09:30`` or ``once 2026-12-24T18:00:00Z``.
        timezone: IANA zone for cron fields, ``at`` times and ``once`` values without an offset.

    Returns:
        The trigger; parsing the same text and zone again returns an equal (cached) one.

    Raises:
        InvalidInput: ``trigger`` for a syntax error, naming what is wrong; ``timezone`` for a
            zone the time-zone database does not know.
    """
    if not isinstance(text, str):
        raise InvalidInput("trigger", f"must be text, got {type(text).__name__}")
    if not isinstance(timezone, str):
        raise InvalidInput("timezone", f"must be text, got {type(timezone).__name__}")
    return _parse(" ".join(text.split()), timezone)


def preview(trigger: Trigger, after: datetime, count: int) -> list[tuple[datetime, datetime]]:
    """The next ``count`` fires, each with its wall-clock time in the trigger's zone.

    Args:
        trigger: The trigger.
        after: Fires strictly after this instant (aware).
        count: How many fires at most (fewer when the trigger stops firing).

    Returns:
        ``(utc instant, local time)`` pairs in fire order.

    Raises:
        InvalidInput: ``count`` when negative; ``after`` when naive.
    """
    if count < 0:
        raise InvalidInput("count", f"must be 0 or more, got {count}")
    pairs: list[tuple[datetime, datetime]] = []
    fire: datetime | None = after
    while len(pairs) < count and (fire := trigger.next_fire(fire)) is not None:
        pairs.append((fire, fire.astimezone(trigger.zone)))
    return pairs


def format_preview_line(utc: datetime, local: datetime) -> str:
    """One line of ``next-runs``: ``2026-11-01T05:30:00Z  2026-11-01 01:30:00 EDT``.

    Args:
        utc: The fire instant (aware; shown in UTC).
        local: The same instant in the trigger's zone.

    Returns:
        The UTC instant, two spaces, then the local date, time and zone abbreviation.
    """
    utc = require_aware(utc, "utc")
    return f"{utc:%Y-%m-%dT%H:%M:%SZ}  {local:%Y-%m-%d %H:%M:%S %Z}"


@lru_cache(maxsize=16384)
def _parse(text: str, timezone: str) -> Trigger:
    zone = _zone(timezone)
    keyword, _, rest = text.partition(" ")
    keyword = keyword.lower()
    if keyword == "every":
        return IntervalTrigger(text, timezone, zone, _parse_interval(rest))
    if keyword == "at":
        days, times = _parse_at(rest)
        return AtTrigger(text, timezone, zone, days, times)
    if keyword == "once":
        return OnceTrigger(text, timezone, zone, _parse_once(rest, zone))
    return CronTrigger(text, timezone, zone, _parse_cron(text))


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a key naming a directory of the database, such as "America".
        raise InvalidInput(
            "timezone", f"{name!r} is not a known IANA time zone (e.g. UTC, Europe/Berlin)"
        ) from None


def _parse_cron(text: str) -> str:
    expression = _CRON_ALIASES.get(text.lower(), text)
    if expression.startswith("@"):
        raise InvalidInput(
            "trigger",
            f"unknown cron shorthand {text!r}: expected one of {', '.join(_CRON_ALIASES)}",
        )
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise InvalidInput(
            "trigger",
            f"{text!r} is not a trigger: a cron expression has 5 fields (minute hour "
            f"day-of-month month day-of-week) or 6 (plus seconds), found {len(fields)}; "
            f"expected {SYNTAXES}",
        )
    try:
        croniter.expand(expression, strict=True)
    except CroniterError as exc:
        _refuse_cron_field(text, fields)
        raise InvalidInput("trigger", f"{text!r} is not a valid cron expression: {exc}") from None
    return expression


def _refuse_cron_field(text: str, fields: list[str]) -> None:
    """Raise for the first field that croniter refuses on its own, to name it in the message."""
    for index, field in enumerate(fields):
        probe = ["*"] * len(fields)
        probe[index] = field
        try:
            croniter.expand(" ".join(probe))
        except CroniterError as exc:
            name, allowed = _CRON_FIELDS[index]
            raise InvalidInput(
                "trigger",
                f"{name} field {field!r} of {text!r} is not valid{_cron_detail(exc, probe)}: "
                f"expected {allowed}, lists (1,2), ranges (1-5) or steps (*/15)",
            ) from None


def _cron_detail(exc: CroniterError, probe: list[str]) -> str:
    """croniter's reason without its echo of the probe expression, as `` (reason)``."""
    expression = " ".join(probe)
    detail = str(exc).split("Cron:")[0].replace(f"[{expression}]", "").replace(expression, "")
    detail = re.sub(r"^\s*is not acceptable[,.]?", "", detail).strip(" .,")
    return f" ({detail})" if detail else ""


def _parse_interval(rest: str) -> timedelta:
    example = "every 300 (seconds) or every 1h30m (units d, h, m, s in that order)"
    if not rest:
        raise InvalidInput("trigger", f"'every' needs an interval: expected {example}")
    if rest.isdigit():
        seconds = int(rest)
    else:
        match = _DURATION.fullmatch(rest)
        if match is None:
            unknown = [u for u in re.findall(r"\d+([a-zA-Z]+)", rest) if u not in "dhms"]
            if unknown:
                problem = f"unknown unit {unknown[0]!r} in 'every {rest}'"
            else:
                problem = f"'every {rest}' is not an interval"
            raise InvalidInput("trigger", f"{problem}: expected {example}")
        days, hours, minutes, secs = (int(part or 0) for part in match.groups())
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    if seconds <= 0:
        raise InvalidInput("trigger", f"'every {rest}' must be longer than 0 seconds")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise InvalidInput("trigger", f"'every {rest}' is too long") from None


def _parse_at(rest: str) -> tuple[frozenset[int], tuple[int, ...]]:
    days = frozenset(range(7))
    head, _, tail = rest.partition(" ")
    if head[:1].isalpha():
        days = _parse_days(head, f"at {rest}")
        rest_times = tail
    else:
        rest_times = rest
    tokens = [token for token in re.split(r"[\s,]+", rest_times) if token]
    if not tokens:
        raise InvalidInput(
            "trigger",
            f"{f'at {rest}'.strip()!r} needs clock times: expected at 10:00,22:00 or "
            "at Mon-Fri 09:30",
        )
    times = set()
    for token in tokens:
        match = _CLOCK_TIME.fullmatch(token)
        if match is None:
            raise InvalidInput(
                "trigger",
                f"{token!r} in 'at {rest}' is not a clock time: expected HH:MM such as 09:30 "
                "(day names go before the times: at Mon-Fri 09:30)",
            )
        hour, minute, second = (int(part or 0) for part in match.groups())
        if hour > 23 or minute > 59 or second > 59:
            raise InvalidInput(
                "trigger", f"{token!r} in 'at {rest}' is not a time of day (00:00 to 23:59)"
            )
        times.add(hour * 3600 + minute * 60 + second)
    return days, tuple(sorted(times))


def _parse_days(names: str, text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in names.split(","):
        bounds = part.split("-", 1)
        for name in bounds:
            if name.lower() not in _DAY_NAMES:
                raise InvalidInput(
                    "trigger",
                    f"unknown day name {name!r} in {text!r}: expected Mon, Tue, Wed, Thu, Fri, "
                    "Sat or Sun, ranges (Mon-Fri) or lists (Mon,Wed)",
                )
        start, end = (_DAY_NAMES.index(name.lower()) for name in (bounds[0], bounds[-1]))
        # Ranges may wrap around the week: Fri-Mon is Fri, Sat, Sun, Mon.
        days.update((start + step) % 7 for step in range((end - start) % 7 + 1))
    return frozenset(days)


def _parse_once(rest: str, zone: ZoneInfo) -> datetime:
    try:
        value = datetime.fromisoformat(rest)
    except ValueError:
        raise InvalidInput(
            "trigger",
            f"{rest!r} is not an ISO 8601 date and time: expected e.g. once 2026-12-24T18:00:00Z",
        ) from None
    value = value.replace(microsecond=0)
    try:
        return _once_instant(value, zone)
    except OverflowError:
        raise InvalidInput("trigger", f"{rest!r} is out of the representable range") from None


def _once_instant(value: datetime, zone: ZoneInfo) -> datetime:
    if value.tzinfo is not None:
        return value.astimezone(UTC)
    first = zone.utcoffset(value)
    second = zone.utcoffset(value.replace(fold=1))
    if first >= second:
        # A repeated local time means its first occurrence.
        return (value - first).replace(tzinfo=UTC)
    # A local time inside a gap means the end of the gap, as for fixed cron times.
    lower = (value - second).replace(tzinfo=UTC)
    return _change_instant(zone, lower, (value - first).replace(tzinfo=UTC), first)
