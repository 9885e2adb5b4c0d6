"""A throwaway PostgreSQL cluster for the test run (pytest plugin, see ``tests/conftest.py``).

``pg_url`` (session scope) starts a private cluster once per run and yields
``postgresql://postgres@127.0.0.1:PORT/smscenter_test``; the cluster is stopped and its folder
removed at the end. Nothing of the machine's own PostgreSQL is used: not its clusters, not
its port, not /var/run/postgresql.

- Binaries: ``$PG_BIN`` if set, else the newest ``/usr/lib/postgresql/*/bin`` (Debian), else
  ``initdb``/``pg_ctl`` on PATH. If none is found the tests that need PostgreSQL are skipped
  with the reason — except under CI (env ``CI`` set), where that is a failure: CI installs
  PostgreSQL (``.ci/run``) and must not go green by skipping the PostgreSQL half.
- initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` system
  user (``runuser -u postgres``) and lives in a /tmp folder chowned to it.
- Loopback TCP only, on a free port, trust authentication (it is a throwaway test cluster),
  Unix socket in the cluster's own folder. fsync is off: the tests kill our daemon, never the
  database server, so the server's own durability is not what they prove.
- ``new_pg_database()`` gives a test its own empty database on that cluster.
- ``db_url`` runs a test once per backend: ``[sqlite]`` (a file in ``tmp_path``) and
  ``[postgresql]`` (a new database on the cluster). Any test that starts the daemon or a
  ``Store`` can take it instead of a hard-coded SQLite URL.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

DATABASE = "smscenter_test"
SUPERUSER = "postgres"
HOST = "127.0.0.1"


def find_pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl, or None."""
    override = os.environ.get("PG_BIN")
    if override:
        return Path(override) if (Path(override) / "initdb").exists() else None

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class PgCluster:
    """A private cluster: ``start()``, ``url``, ``create_database()``, ``stop()``."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="smscenter-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self.started = False
        if self.as_root:
            shutil.chown(self.root, SUPERUSER, SUPERUSER)

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", SUPERUSER, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{log}"
            )
        return proc

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        last_error: Exception | None = None
        for _ in range(5):  # a free port can be taken between our probe and the server's bind
            self.port = free_port()
            options = (
                f"-p {self.port} -h {HOST} -k {self.root} -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200"
            )
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                          "-o", options, "start", timeout=90)
            except RuntimeError as exc:
                last_error = exc
                continue
            self.started = True
            break
        else:
            raise RuntimeError(f"PostgreSQL did not start: {last_error}")
        self.create_database(DATABASE)

    def url_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", HOST, "-p", str(self.port), "-U", SUPERUSER, name)
        return self.url_for(name)

    def stop(self) -> None:
        try:
            if self.started:
                # Immediate: no shutdown checkpoint writing out what every test database dirtied
                # (tens of seconds on a loaded machine) — the folder is removed just after.
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop", timeout=60)
                self.started = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required under CI (.ci/run installs it): {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason} (apt-get install postgresql, or set PG_BIN)")


@pytest.fixture(scope="session")
def pg_cluster():
    """The run's private PostgreSQL cluster (started on first use)."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        _unavailable("no initdb/pg_ctl in $PG_BIN, /usr/lib/postgresql/*/bin or on PATH")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        _unavailable("running as root but runuser is missing (initdb refuses to run as root)")
    cluster = PgCluster(bin_dir)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def pg_url(pg_cluster) -> str:
    """``postgresql://postgres@127.0.0.1:PORT/smscenter_test`` on the private cluster."""
    return pg_cluster.url


_names = itertools.count(1)


@pytest.fixture
def new_pg_database(pg_cluster):
    """``new_pg_database()`` → the URL of a new, empty database (one per call)."""

    def make() -> str:
        return pg_cluster.create_database(f"t{os.getpid()}_{int(time.time())}_{next(_names)}")

    return make


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A storage URL, once per backend: a SQLite file in ``tmp_path``, then a new, empty
    database on the run's PostgreSQL (skipped, or failed under CI, when it is missing)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'smscenter.db'}"
    return request.getfixturevalue("new_pg_database")()


@pytest.fixture
async def engine(db_url):
    """An async engine on ``db_url`` (each backend), the schema upgraded to head."""
    from storage import db

    engine = db.create_engine(db_url)
    await db.upgrade(engine)
    yield engine
    await engine.dispose()
