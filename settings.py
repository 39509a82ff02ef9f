"""Settings of a Tactus installation (SPEC section 8): one immutable object, passed explicitly.

Precedence, lowest first: the defaults below, a settings file named by ``TACTUS_SETTINGS``
(TOML, YAML or JSON, keys as below), then ``TACTUS_<KEY>`` environment variables. Paths are made
absolute against the working directory at load time. A bad value fails at start with the key
named (:class:`db.errors.InvalidInput`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from db import STORE_BACKENDS
from db.errors import InvalidInput

#: Environment variable naming a settings file.
SETTINGS_FILE_ENV = "TACTUS_SETTINGS"
#: Prefix of the environment variables that override single keys.
ENV_PREFIX = "TACTUS_"


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Every setting with its resolved value."""

    #: Where state lives: ``sqlite:///<var_dir>/tactus.db`` (embedded), ``postgresql://``,
    #: ``mysql://``, ``mongodb://``.
    store_uri: str
    #: How work travels: ``store`` (a queue kept in the store), ``amqp://user:pass@host/vhost``
    #: (RabbitMQ), ``redis://host:6379/0`` (Redis Streams) or ``nats://host:4222`` (NATS
    #: JetStream).
    broker_uri: str = "store"
    #: The registration file ``standalone`` registers when it exists.
    context_file: str = "process_context.py"
    #: This machine's name for the supervisor and the worker registry.
    box_id: str
    #: Working data (the embedded database, tokens); logs and pid files live below it.
    var_dir: str
    log_dir: str
    pid_dir: str
    #: Default IANA zone of cron and ``at`` triggers.
    timezone: str = "UTC"
    #: Where mx listens; loopback by default.
    mx_host: str = "127.0.0.1"
    mx_port: int = 5000
    #: Written on first start when no credentials exist, mode 0600.
    admin_token_file: str
    #: Prefix of every queue name (``<prefix>.<process>``); lets installations share a broker.
    queue_prefix: str = "tactus"
    #: Seconds between heartbeats of a worker (and of the unit of work it runs).
    heartbeat_interval: float = 5.0
    #: Missed heartbeats after which a worker is declared lost and its units of work retried.
    heartbeat_misses: int = 3
    #: Seconds a claimed message of the embedded queue stays invisible before redelivery
    #: (a running worker extends it with each heartbeat).
    visibility_timeout: float = 60.0
    #: Seconds a worker waits for its running unit of work on SIGTERM before releasing it.
    worker_stop_grace: float = 30.0
    #: Messages each worker thread may hold unacknowledged: the one it runs and the ones fetched
    #: ahead of it, so a busy worker never waits for the next. A unit of work that runs longer
    #: than a second hands those back to idle workers; 1 fetches nothing ahead.
    worker_prefetch: int = 2
    #: Supervisor: seconds a process must stay up to count as started (``starting -> running``).
    startsecs: float = 1.0
    #: Supervisor: failed starts in a row allowed before a process becomes ``fatal``.
    startretries: int = 3
    #: Supervisor and ``launch.py --stop``: seconds between SIGTERM and SIGKILL of a group.
    stopwaitsecs: float = 10.0
    #: Supervisor: delay after the first failed start; it doubles with each further failure.
    backoff_base: float = 1.0
    #: Supervisor: the longest delay between two failed starts.
    backoff_cap: float = 60.0
    #: Supervisor: seconds between two reads of the desired state (box configuration) in the store.
    supervisor_poll: float = 1.0
    #: Supervisor: seconds between two refreshes of the psutil facts (memory, CPU) in the store.
    stats_interval: float = 5.0
    #: Every daemon waits out an outage of the store or the broker of any length, trying again
    #: with exponential backoff and jitter; this is the longest pause between two tries (seconds).
    outage_backoff_max: float = 30.0
    #: Seconds a worker record stays listed after its worker was declared lost or stopped; then
    #: the scheduler removes it (its units of work and their history stay).
    worker_retention: float = 86400.0
    #: Largest payload ``POST /api/v1/payloads`` takes, in bytes (SPEC section 12).
    max_payload_bytes: int = 16 * 1024 * 1024
    #: Messages kept per unit of work (the oldest); later ones are counted as dropped.
    max_messages_per_uow: int = 1000

    def replace(self, **changes: Any) -> Settings:
        """A copy with some keys changed (validated like loaded values)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(changes)
        return _build(data)


#: Keys whose default is derived from ``var_dir`` (after ``var_dir`` itself is resolved).
_DERIVED: dict[str, Callable[[str], str]] = {
    "store_uri": lambda var: f"sqlite:///{Path(var) / 'tactus.db'}",
    "log_dir": lambda var: str(Path(var) / "log"),
    "pid_dir": lambda var: str(Path(var) / "run"),
    "admin_token_file": lambda var: str(Path(var) / "admin.token"),
}
_KEYS = [f.name for f in fields(Settings)]


def load_settings(
    environ: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None
) -> Settings:
    """Resolve the settings from defaults, the settings file and the environment.

    Args:
        environ: the environment to read (default ``os.environ``); the only place Tactus reads
            ``TACTUS_*`` variables.
        cwd: directory relative paths are resolved against (default: the working directory).

    Returns:
        The settings, validated.

    Raises:
        InvalidInput: a value is bad (the field names the key), the settings file cannot be read
            or names an unknown key.
    """
    environ = os.environ if environ is None else environ
    base = Path(cwd) if cwd is not None else Path.cwd()
    values: dict[str, Any] = {}
    file_name = environ.get(SETTINGS_FILE_ENV)
    if file_name:
        values.update(_read_file(base / file_name))
    for key in _KEYS:
        env_value = environ.get(ENV_PREFIX + key.upper())
        if env_value is not None:
            values[key] = env_value
    var_dir = str(base / str(values.get("var_dir", "var")))
    values["var_dir"] = var_dir
    for key, derive in _DERIVED.items():
        values.setdefault(key, derive(var_dir))
    values.setdefault("context_file", "process_context.py")
    for key in ("log_dir", "pid_dir", "admin_token_file", "context_file"):
        if key in values and values[key] != "":
            values[key] = str(base / str(values[key]))
    values.setdefault("box_id", socket.gethostname())
    return _build(values)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(SETTINGS_FILE_ENV, f"cannot read {path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise InvalidInput(SETTINGS_FILE_ENV, f"{path}: use a .toml, .yaml or .json file")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise InvalidInput(SETTINGS_FILE_ENV, f"{path} does not parse: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput(SETTINGS_FILE_ENV, f"{path} must hold a table of key = value")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise InvalidInput(unknown[0], f"unknown setting in {path} (known: {', '.join(_KEYS)})")
    return data


_BOX_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def _build(values: dict[str, Any]) -> Settings:
    checked = dict(values)
    for key in ("store_uri", "broker_uri", "context_file", "box_id", "var_dir", "log_dir"):
        if key in checked and (not isinstance(checked[key], str) or not checked[key].strip()):
            raise InvalidInput(key, "must be a non-empty string")
    checked["mx_port"] = _port(checked.get("mx_port", 5000))
    for key, (kind, minimum) in _NUMBERS.items():
        if key in checked:
            checked[key] = _number(key, checked[key], kind, minimum)
    if not re.match(r"^[A-Za-z0-9_.\-]{1,64}$", str(checked.get("queue_prefix", "tactus"))):
        raise InvalidInput("queue_prefix", "use letters, digits, '_', '.', '-' (at most 64)")
    _check_store_uri(checked["store_uri"])
    _check_broker_uri(checked.get("broker_uri", "store"))
    try:
        ZoneInfo(str(checked.get("timezone", "UTC")))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput("timezone", f"unknown IANA zone {checked.get('timezone')!r}") from exc
    if not _BOX_ID.match(str(checked["box_id"])):
        raise InvalidInput("box_id", "use letters, digits, '_', '.', '-' (at most 128)")
    if not str(checked.get("mx_host", "127.0.0.1")).strip():
        raise InvalidInput("mx_host", "must not be empty")
    return Settings(**checked)


#: Numeric keys: (type, smallest allowed value).
_NUMBERS: dict[str, tuple[type, float]] = {
    "heartbeat_interval": (float, 0.1),
    "heartbeat_misses": (int, 1),
    "visibility_timeout": (float, 1.0),
    "worker_stop_grace": (float, 0.0),
    "worker_prefetch": (int, 1),
    "startsecs": (float, 0.0),
    "startretries": (int, 0),
    "stopwaitsecs": (float, 0.0),
    "backoff_base": (float, 0.0),
    "backoff_cap": (float, 0.0),
    "supervisor_poll": (float, 0.05),
    "stats_interval": (float, 0.1),
    "outage_backoff_max": (float, 0.1),
    "worker_retention": (float, 0.0),
    "max_payload_bytes": (int, 1),
    "max_messages_per_uow": (int, 1),
}


def _number(key: str, value: Any, kind: type, minimum: float) -> int | float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(key, f"must be a number, got {value!r}") from exc
    if number < minimum:
        raise InvalidInput(key, f"must be at least {minimum}, got {value!r}")
    return number


def _port(value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("mx_port", f"must be an integer port, got {value!r}") from exc
    if isinstance(value, bool) or not 1 <= port <= 65535:
        raise InvalidInput("mx_port", f"must be between 1 and 65535, got {value!r}")
    return port


def _check_store_uri(uri: str) -> None:
    scheme = urlsplit(uri).scheme.split("+", 1)[0].lower()
    if scheme not in STORE_BACKENDS:
        raise InvalidInput(
            "store_uri", f"unknown scheme {scheme!r} (use sqlite, postgresql, mysql or mongodb)"
        )
    if scheme == "sqlite" and not uri.startswith("sqlite:///"):
        raise InvalidInput("store_uri", "a SQLite store is sqlite:///path/to/file.db")


def _check_broker_uri(uri: str) -> None:
    if uri == "store":
        return
    if urlsplit(uri).scheme.lower() not in ("amqp", "amqps", "redis", "rediss", "nats"):
        raise InvalidInput(
            "broker_uri",
            "must be 'store' or an amqp://, amqps://, redis://, rediss:// or nats:// URI",
        )
