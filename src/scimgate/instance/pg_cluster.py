"""A throwaway PostgreSQL cluster in an instance directory, for `scimgate up --nodes N`
(Debian's PostgreSQL binaries): unix socket only (no TCP port), trust authentication for
the local user, started and stopped by PID. Not for production: a real fleet points
``SCIMGATE_DATABASE_URL`` at a managed, replicated PostgreSQL.

Does: initdb (once), start `postgres` on a socket in DIR/pg/sock, wait until it answers,
create the database, stop it (fast shutdown).
Does not: tune, back up or replicate anything.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from scimgate.instance.layout import DemoError

PG_BIN_DIRS = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin",
               "/usr/lib/postgresql/15/bin")  # fmt: skip
DATABASE = "scimgate"
PORT = 5432  # only names the socket file: listen_addresses is empty


def pg_binary(name: str) -> str:
    for d in PG_BIN_DIRS:
        p = Path(d) / name
        if p.exists():
            return str(p)
    found = shutil.which(name)
    if not found:
        raise DemoError(
            f"PostgreSQL binary {name!r} not found (Debian: apt-get install postgresql), or "
            "set SCIMGATE_DATABASE_URL to an existing PostgreSQL"
        )
    return found


def _run_as() -> list[str]:
    """initdb and postgres refuse root: run them as `postgres` (Debian's package user)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise DemoError(
            "running as root needs the `postgres` user (apt-get install postgresql)"
        ) from None
    return ["runuser", "-u", "postgres", "--"]


class LocalCluster:
    """DIR/pg: data in ``data/``, the socket in ``sock/``, the log in ``pg.log``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "pg.log"
        self.prefix = _run_as()
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@/{DATABASE}?host={self.sock}&port={PORT}"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _prepare(self) -> None:
        self.sock.mkdir(parents=True, exist_ok=True)
        if self.prefix:
            user = self.prefix[2]
            for path in (self.root, self.sock):
                shutil.chown(path, user)
            self.root.chmod(0o700)
            probe = subprocess.run(
                [*self.prefix, "test", "-w", str(self.root)], capture_output=True
            )
            if probe.returncode != 0:
                raise DemoError(
                    f"the postgres user cannot reach {self.root}: every parent directory "
                    "must be searchable by it (chmod o+x), or set SCIMGATE_DATABASE_URL"
                )
        if not (self.data / "PG_VERSION").exists():
            out = subprocess.run(
                [*self.prefix, pg_binary("initdb"), "-D", str(self.data), "-U", "postgres",
                 "--auth=trust", "-E", "UTF8"],
                capture_output=True, text=True,
            )  # fmt: skip
            if out.returncode != 0:
                raise DemoError(f"initdb failed:\n{out.stdout}{out.stderr}")

    def start(self, timeout: float = 30.0) -> None:
        self._prepare()
        with open(self.log, "ab") as log:
            self._popen = subprocess.Popen(
                [*self.prefix, pg_binary("postgres"), "-D", str(self.data), "-k", str(self.sock),
                 "-p", str(PORT), "-c", "listen_addresses=", "-c", "max_connections=300"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [pg_binary("pg_isready"), "-h", str(self.sock), "-p", str(PORT)],
                capture_output=True,
            )
            if ready.returncode == 0:
                self._create_database()
                return
            if self._popen.poll() is not None:
                raise DemoError(f"postgres exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        self.stop()
        raise DemoError(f"postgres not ready within {timeout}s")

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(host=str(self.sock), port=PORT, user="postgres", dbname="postgres",
                             autocommit=True) as conn:  # fmt: skip
            if (
                conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
                is None
            ):
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT to the postmaster, by its PID file; runuser does not forward
        signals)."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            pid = self.pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid or popen.pid, signal.SIGINT)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid or popen.pid, signal.SIGKILL)
                popen.wait(5)
        self._popen = None
