"""A private PostgreSQL cluster for the fault tests: ``initdb`` in a temporary folder, started on a
free port on 127.0.0.1 with trust authentication, stopped and deleted at the end.

The shared server on 5432 is never touched: an outage is made by the proxy in front of this
cluster (``tests/faults/proxy.py``), or, as a second kind of outage, by stopping this cluster
itself (:meth:`PgCluster.stop` with ``mode="immediate"``, then :meth:`PgCluster.start`).

PostgreSQL refuses to run as root, so when the tests run as root every server command runs as
the ``postgres`` OS user (``runuser -u postgres --``) in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.servers import unique_name

#: OS user that runs the cluster when the tests run as root.
PG_USER = "postgres"
#: Where Debian puts the server binaries; ``TACTUS_TEST_PG_BIN`` names another folder.
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: Server settings for a throw-away cluster: durability against a crash of the machine traded
#: for speed (``fsync`` off: nothing here must survive one), but not against a crash of the
#: server: a commit returns once its WAL is written to the OS (``synchronous_commit`` on), so
#: the ``immediate`` stop of the crash drills loses no committed transaction, as with a real
#: server. With it off, the last commits before the crash were lost and a drill "found" claims
#: and outcomes the store had acknowledged and then forgot.
SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "on",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (the newest version), or None."""
    named = os.environ.get("TACTUS_TEST_PG_BIN")
    candidates = [named] if named else sorted(glob.glob(PG_BIN_GLOB), key=_version, reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _version(folder: str) -> int:
    try:
        return int(Path(folder).parent.name)
    except ValueError:
        return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One private cluster; :meth:`create` it, :meth:`destroy` it."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="tactus-faults-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = free_port()
        self.running = False

    # -- running commands as the server's user ----------------------------------------------------

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", PG_USER, "--", *argv]
        return argv

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run(
            self._as_owner([str(self.bin_dir / argv[0]), *argv[1:]]),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if result.returncode != 0:
            log_tail = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(
                f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}\n{log_tail}"
            )
        return result

    # -- life cycle -------------------------------------------------------------------------------

    def create(self) -> PgCluster:
        """``initdb`` and start; raises RuntimeError with the server's words if it cannot."""
        if os.geteuid() == 0:
            owner = pwd.getpwnam(PG_USER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        self.start()
        return self

    def start(self) -> None:
        """Start the server (again) on its port and wait until it accepts connections."""
        options = " ".join(f"-c {key}={value}" for key, value in SERVER_OPTIONS.items())
        options += f" -p {self.port} -c unix_socket_directories={self.root}"
        self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60",
            "-o", options,
        )  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean) or ``immediate`` (as a crash: no shutdown
        checkpoint, clients cut off at once)."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")
        self.running = False

    def restart(self, mode: str = "immediate") -> None:
        """Stop (``immediate`` by default) and start again: every connection dies."""
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        """Stop the server if it runs and delete its folder."""
        if self.running:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases --------------------------------------------------------------------------------

    def uri(self, database: str = "postgres", *, port: int | None = None) -> str:
        """A store URI for ``database``, direct or (``port``) through a proxy on 127.0.0.1."""
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        """A new, empty database; returns its name."""
        name = unique_name("tactus_fault")
        self._admin(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
