"""Test servers: PostgreSQL, MariaDB and the MongoDB-wire server nx-27017.

A server that cannot be reached is a visible skip on a developer's machine and a failure when
``CI=true`` (CI must prove every backend). Each test gets its own database, dropped afterwards, so
runs sharing a server never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

#: Where the test suite finds the servers; override for a machine with other credentials.
POSTGRES_ADMIN_URI = os.environ.get(
    "TACTUS_TEST_POSTGRES", "postgresql://tactus_test:tactus_test@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN_URI = os.environ.get(
    "TACTUS_TEST_MYSQL", "mysql://tactus_test:tactus_test@127.0.0.1:3306/"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


class Missing(pytest.fail.Exception):
    """A dependency of the test is missing and ``CI=true`` requires it: the test fails (raised in
    a fixture's set-up, ``tests/conftest.py`` reports it as the test's failure, not an error)."""


def unavailable(what: str) -> NoReturn:
    """Skip (locally) or fail (in CI) because ``what`` is missing."""
    if in_ci():
        raise Missing(f"{what} (CI=true requires it)", pytrace=False)
    pytest.skip(what)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def unique_name(prefix: str = "tactus_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _with_database(uri: str, database: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path=f"/{database}"))


class SqlServer:
    """Creates and drops one database per test on a PostgreSQL or MariaDB server."""

    def __init__(self, name: str, admin_uri: str, driver_uri: str) -> None:
        self.name = name
        self.admin_uri = admin_uri
        self.driver_uri = driver_uri
        parts = urlsplit(admin_uri)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port

    def available(self) -> str | None:
        """None if usable, else why not."""
        if not port_open(self.host, self.port or 0):
            return f"{self.name} not reachable on {self.host}:{self.port}"
        try:
            self._execute("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable", with its reason
            return f"{self.name} at {self.host}:{self.port} refused the test login: {exc}"
        return None

    def _engine(self):
        import sqlalchemy

        return sqlalchemy.create_engine(self.driver_uri, isolation_level="AUTOCOMMIT")

    def _execute(self, sql: str) -> None:
        import sqlalchemy

        engine = self._engine()
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text(sql))
        finally:
            engine.dispose()

    def create_database(self) -> tuple[str, str]:
        """Returns (database name, store URI in the public scheme the user would write)."""
        database = unique_name()
        self._execute(f"CREATE DATABASE {database}")
        return database, _with_database(self.admin_uri, database)

    def drop_database(self, database: str) -> None:
        if self.name == "postgresql":
            self._execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        else:
            self._execute(f"DROP DATABASE IF EXISTS {database}")


POSTGRES = SqlServer(
    "postgresql",
    POSTGRES_ADMIN_URI,
    POSTGRES_ADMIN_URI.replace("postgresql://", "postgresql+psycopg://", 1),
)
MARIADB = SqlServer(
    "mariadb", MYSQL_ADMIN_URI, MYSQL_ADMIN_URI.replace("mysql://", "mysql+pymysql://", 1)
)


class NxServer:
    """A MongoDB-wire server (nx-27017, in memory) started for the test session."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.problem: str | None = None

    def start(self) -> None:
        exe = shutil.which("nx-27017") or os.path.join(os.path.dirname(sys.executable), "nx-27017")
        if not os.path.exists(exe):
            self.problem = "nx-27017 (MongoDB-wire test server) is not installed"
            return
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # nx-27017 refuses to start while another copy holds its default pid file: give each
        # test session its own, so concurrent sessions on one machine do not collide.
        self._dir = tempfile.mkdtemp(prefix="tactus-nx-")
        self.proc = subprocess.Popen(
            [
                exe,
                "--db",
                "memory",
                "--host",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--pid-file",
                os.path.join(self._dir, "nx.pid"),
                "--log-file",
                os.path.join(self._dir, "nx.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if port_open("127.0.0.1", self.port):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.problem = "nx-27017 did not start"
        self.stop()

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_dir", None):
            shutil.rmtree(self._dir, ignore_errors=True)
