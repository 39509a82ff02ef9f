"""Turn the page's HTML forms into the same mappings the API takes, naming the bad field."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from db.errors import InvalidInput

if TYPE_CHECKING:
    from werkzeug.datastructures import MultiDict

#: Free-text fields of a freerun entry.
TEXT_FIELDS = ("trigger", "timezone", "worker", "catchup", "description")
#: Whole-number fields (seconds or counts).
NUMBER_FIELDS = ("retries", "retry_delay", "timeout", "max_active", "noop_exit_code")


def entry_fields(form: MultiDict[str, str], *, creating: bool) -> dict[str, Any]:
    """The fields of a freerun entry from its form.

    An empty field is left out when creating (the default applies) and is None when editing
    (back to the default). Checkboxes are always given.

    Raises:
        InvalidInput: a number that is not one, arguments that are not a JSON object, or a
            command that does not split into words.
    """
    fields: dict[str, Any] = {}
    if creating:
        fields["name"] = form.get("name", "").strip()

    def blank(name: str) -> None:
        if not creating:
            fields[name] = None

    for name in TEXT_FIELDS:
        value = form.get(name, "").strip()
        if value:
            fields[name] = value
        else:
            blank(name)
    for name in NUMBER_FIELDS:
        value = form.get(name, "").strip()
        if not value:
            blank(name)
            continue
        try:
            fields[name] = int(value)
        except ValueError:
            raise InvalidInput(name, f"must be a whole number, not {value!r}") from None
    fields["arguments"] = _arguments(form.get("arguments", ""))
    fields["shell"] = form.get("shell") == "on"
    fields["enabled"] = form.get("enabled") == "on"
    command = form.get("command", "").strip()
    if command:
        fields["command"] = command if fields["shell"] else _argv(command)
    else:
        blank("command")
    return fields


def _arguments(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInput("arguments", f"is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InvalidInput("arguments", "must be a JSON object")
    return value


def _argv(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError as exc:
        raise InvalidInput("command", f"cannot be split into words ({exc})") from None


def command_text(command: Any) -> str:
    """An entry's command as the form shows it (argv words quoted back)."""
    if command is None:
        return ""
    if isinstance(command, str):
        return command
    return shlex.join(command)


def task_fields(form: MultiDict[str, str]) -> dict[str, Any]:
    """``submit``'s arguments from the ad-hoc task form."""
    retries_text = form.get("retries", "").strip() or "0"
    try:
        retries = int(retries_text)
    except ValueError:
        raise InvalidInput("retries", f"must be a whole number, not {retries_text!r}") from None
    return {
        "command": form.get("command", ""),
        "scheduled_at": form.get("scheduled_at", "").strip() or None,
        "retries": retries,
        "arguments": _arguments(form.get("arguments", "")),
    }
