"""A real, throwaway PostgreSQL for tests and benches: Debian's binaries (the newest
``/usr/lib/postgresql/<version>/bin``), one cluster in a work directory, on a free loopback port.

``initdb`` makes the cluster with one superuser, ``aisoar``, whose random password is checked
with SCRAM (``pg_hba``: scram-sha-256 for local and loopback connections); the server listens on
127.0.0.1 only, keeps its unix socket in the work directory (never /var/run/postgresql), and is
stopped with ``pg_ctl stop -m fast`` (killed if that hangs). Debian's own cluster (``15/main`` on
5432, if the package made one) is never used, and this one never takes 5432 unless that port is free.

PostgreSQL refuses to run as root: as root, the work directory is given to ``nobody`` and
``initdb``/``pg_ctl`` run as ``nobody`` (``runuser``, or ``setpriv``); the work directory's parents
must then be searchable by others (``Postgres.temporary()`` makes one under /tmp that is).

    with Postgres.temporary() as pg:                 # or Postgres(workdir).start() ... pg.stop()
        pg.create_database("aisoar")
        store = Store(pg.url("aisoar"))                # postgresql+psycopg://aisoar:...@127.0.0.1:<port>/aisoar
        prefect_url = pg.url("prefect", "asyncpg")     # what Prefect's server takes

Helpers FAIL (they never skip) when the binaries are missing: apt-get install postgresql.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import pytest

from sandbox.serving import free_port
from tests.servers.process import log_tail

INSTALL_HINT = (
    "the PostgreSQL tests need Debian's server binaries (/usr/lib/postgresql/<version>/bin): "
    "apt-get install postgresql (or `make system-packages` as root)"
)
USER = "aisoar"
# Three aisoar replicas and a Prefect server, each with its connection pools, and room to spare.
MAX_CONNECTIONS = 300
START_TIMEOUT = 60
STOP_TIMEOUT = 30
UNPRIVILEGED = "nobody"  # who runs the server when we are root


def postgres_bindir() -> Path:
    """The newest Debian PostgreSQL's bin directory; fails the test with how to install it when missing."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bindir = Path(initdb).parent
        version = bindir.parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version) and all((bindir / n).exists() for n in ("pg_ctl", "postgres")):
            found.append((tuple(int(part) for part in version.split(".")), bindir))
    if not found:
        pytest.fail(f"no PostgreSQL server binaries: {INSTALL_HINT}", pytrace=False)
    return max(found)[1]


def _as_unprivileged() -> list[str]:
    """The prefix that runs a command as ``nobody`` (we are root); util-linux has both on Debian 12."""
    if runuser := shutil.which("runuser"):
        return [runuser, "-u", UNPRIVILEGED, "--"]
    if setpriv := shutil.which("setpriv"):
        return [setpriv, f"--reuid={UNPRIVILEGED}", f"--regid={_group_of(UNPRIVILEGED)}", "--clear-groups", "--"]
    pytest.fail("running as root, and neither runuser nor setpriv is here to drop to nobody", pytrace=False)


class Postgres:
    """One throwaway cluster in ``workdir`` (data in ``workdir/data``, log in ``workdir/postgres.log``)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir).resolve()
        self.password = secrets.token_urlsafe(24)
        self.port = 0  # chosen by start()
        self.bindir: Path | None = None
        self.start_seconds = 0.0  # how long ``pg_ctl start`` took (initdb not counted)
        self._root = os.geteuid() == 0
        self._owns_workdir = False

    @classmethod
    def temporary(cls) -> Postgres:
        """A cluster (not started) in a fresh directory under the temp dir, reachable by ``nobody``
        when we are root; ``stop()`` removes it."""
        workdir = Path(tempfile.mkdtemp(prefix="aisoar-postgres-"))
        workdir.chmod(0o755)
        pg = cls(workdir)
        pg._owns_workdir = True
        return pg

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def log(self) -> Path:
        return self.workdir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "run"

    def url(self, database: str, driver: str = "psycopg") -> str:
        """The SQLAlchemy URL of ``database`` as ``aisoar`` over TCP: ``psycopg`` for aisoar's
        store, ``asyncpg`` for Prefect's server."""
        if not self.port:
            raise RuntimeError("the cluster is not started")
        return f"postgresql+{driver}://{USER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{quote(database)}"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string (psycopg.connect, psql)."""
        return f"host=127.0.0.1 port={self.port} user={USER} password={self.password} dbname={database}"

    def create_database(self, name: str) -> None:
        try:
            import psycopg
            from psycopg import sql
        except ImportError:
            pytest.fail("psycopg is not installed: pip install -e '.[postgres]'", pytrace=False)

        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> Postgres:
        """initdb, then ``pg_ctl start --wait``; on failure the test fails with the server log's
        tail, and whatever was started is stopped."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Postgres:
        self.bindir = postgres_bindir()
        prefix = self._prepare_workdir()
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._give_away(pwfile)
        pwfile.chmod(0o600)
        try:
            self._run(
                [
                    *prefix,
                    str(self.bindir / "initdb"),
                    f"--pgdata={self.data}",
                    f"--username={USER}",
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",  # a throwaway cluster: nothing to flush to disk
                ],
                "initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self.port = free_port()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# aisoar tests: a throwaway cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                f"max_connections = {MAX_CONNECTIONS}\n"
                # Durability is not tested here: a crash loses the cluster anyway, and without
                # flushes the tests and benches measure aisoar and Prefect, not the disk.
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "logging_collector = off\n"
                # As deployments/README.md asks of the store's server: the autovacuum looks every
                # 5 s, so a storm's dead inbox rows are cleared while it goes on (migration 0007).
                "autovacuum_naptime = 5s\n"
            )
        started = time.monotonic()
        self._run(
            [
                *prefix,
                str(self.bindir / "pg_ctl"),
                "start",
                f"--pgdata={self.data}",
                f"--log={self.log}",
                "--wait",
                f"--timeout={START_TIMEOUT}",
            ],
            "pg_ctl start",
            timeout=START_TIMEOUT + 10,
        )
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; the postmaster is killed if that does not finish in time."""
        try:
            if self.bindir is not None and (self.data / "postmaster.pid").exists():
                argv = [
                    *(_as_unprivileged() if self._root else []),
                    str(self.bindir / "pg_ctl"),
                    "stop",
                    f"--pgdata={self.data}",
                    "--mode=fast",
                    "--wait",
                    f"--timeout={STOP_TIMEOUT}",
                ]
                try:
                    done = subprocess.run(argv, capture_output=True, cwd=self.workdir, timeout=STOP_TIMEOUT + 5)
                    if done.returncode != 0:
                        self._kill()
                except subprocess.TimeoutExpired:
                    self._kill()
        finally:
            if self._owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- helpers -------------------------------------------------------------------------------
    def _prepare_workdir(self) -> list[str]:
        """Make the work directory; as root, hand it to ``nobody`` and return the command prefix
        that runs as ``nobody``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if len(str(self.socket_dir / f".s.PGSQL.{65535}")) > 107:
            raise ValueError(f"{self.workdir} is too long for a unix socket path; use Postgres.temporary()")
        if not self._root:
            return []
        for parent in self.workdir.parents:
            if not parent.stat().st_mode & 0o001:
                raise PermissionError(
                    f"as root the cluster runs as {UNPRIVILEGED}, who cannot reach {self.workdir}: {parent} is not "
                    "searchable by others; use Postgres.temporary() (a directory under /tmp)"
                )
        for path in (self.workdir, self.socket_dir):
            self._give_away(path)
        return _as_unprivileged()

    def _give_away(self, path: Path) -> None:
        if self._root:
            shutil.chown(path, UNPRIVILEGED, _group_of(UNPRIVILEGED))

    def _run(self, argv: list[str], what: str, timeout: float = 120) -> None:
        try:
            done = subprocess.run(argv, capture_output=True, cwd=self.workdir, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"PostgreSQL {what} did not finish within {timeout}s:\n{log_tail(self.log)}", pytrace=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
            tail = log_tail(self.log) if self.log.exists() else "(no server log)"
            pytest.fail(
                f"PostgreSQL {what} failed (code {done.returncode}):\n{output}\n--- server log ---\n{tail}",
                pytrace=False,
            )

    def _kill(self) -> None:
        """SIGKILL the postmaster named in ``postmaster.pid`` (its backends exit when it dies)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def _group_of(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def fresh_database(postgres: Postgres, driver: str = "psycopg") -> str:
    """A new, empty database on the cluster (a unique name); returns its SQLAlchemy URL."""
    name = f"test_{secrets.token_hex(6)}"
    postgres.create_database(name)
    return postgres.url(name, driver)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL cluster for the test session; each test makes its own database
    (``fresh_database(postgres)``)."""
    with Postgres.temporary() as pg:
        yield pg
