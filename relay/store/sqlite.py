"""The SQLite backend: one file in WAL mode, three connections, one write path.

- Writes: every write is a plain function run in the single commit thread on its
  own connection. While one transaction is written and fsynced, new writes queue
  and share the next one (group commit): a busy intake pays one fsync per batch
  rather than per message, and a hand-off per transaction rather than per statement.
  A write that fails rolls back alone (the others of its transaction are done
  again without it); a transaction that cannot begin or commit fails every write
  in it. `synchronous=FULL` (the intake) means a commit has reached the disk
  before the caller hears of it.
- Reads: plain functions on a reader connection in a thread of its own, each in one
  read snapshot (in WAL a reader never waits for the writer).
- Lookups: the RCPT-time suppression check reads directly on the event loop's
  thread: an indexed point read of tens of microseconds, cheaper than any hand-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from relay.store.backend import A, Db, Row
from relay.store.records import StateProbe, StoreError
from relay.store.sqlite_schema import MIGRATIONS

T = TypeVar("T")
BUSY_TIMEOUT_MS = 5000
LOOKUP_BUSY_TIMEOUT_MS = 100  # the loop thread must not wait long
MAX_GROUP_COMMIT = 256  # writes (accepts, outcomes...) of one kind sharing one transaction
WRITE_SOON_SECONDS = 0.5  # how long `write_soon` items wait for a commit to ride along with
RETURNING_ID = " RETURNING id"  # ends an INSERT that wants its new row's INTEGER PRIMARY KEY


class SqliteDb:
    """A sqlite3 connection as a `Db`: `?` placeholders are SQLite's own."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self.conn.executemany(sql, rows)

    def fetchone(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        if sql.endswith(RETURNING_ID) and sql.startswith("INSERT") and " DO UPDATE " not in sql:
            # SQLite (3.40) runs RETURNING through a temporary table, ~9 µs a row on the
            # events log; an inserted row's INTEGER PRIMARY KEY is its rowid, known anyway.
            cur = self.conn.execute(sql[: -len(RETURNING_ID)], params)
            return {"id": cur.lastrowid} if cur.rowcount == 1 else None
        cur = self.conn.execute(sql, params)
        try:
            row: Row | None = cur.fetchone()
            return row
        finally:
            cur.close()  # done with the statement (an INSERT ... RETURNING included)

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    def lock(self, keys: Iterable[str]) -> None:
        """Nothing to do: the commit thread is SQLite's one writer."""


@dataclass
class _Unit:
    """Work for one savepoint of a group commit and the callers waiting on it."""

    run: Callable[[Db], Any]
    futures: list[asyncio.Future[Any]]
    batched: bool  # several callers' items: any failure is a StoreError for all of them

    def settle(self, ok: bool, value: Any) -> None:
        if not ok:
            self.fail(value)
            return
        for future in self.futures:
            if not future.done():
                future.set_result(value)

    def fail(self, exc: BaseException) -> None:
        if not isinstance(exc, StoreError) and (self.batched or isinstance(exc, sqlite3.Error)):
            exc = StoreError(f"store write failed: {exc}")
        for future in self.futures:
            if not future.done():
                future.set_exception(exc)


@dataclass
class _Queue:
    """Writes waiting for the next commit."""

    jobs: list[tuple[Callable[[Db], Any], asyncio.Future[Any]]] = field(default_factory=list)
    batched: dict[Callable[..., None], list[tuple[Any, asyncio.Future[None] | None]]] = field(
        default_factory=dict
    )

    def __bool__(self) -> bool:
        return bool(self.jobs or self.batched)

    def take(self) -> list[_Unit]:
        """The next transaction's units: at most MAX_GROUP_COMMIT items of each kind."""
        units = []
        batched, self.batched = self.batched, {}
        for fn, entries in batched.items():
            now, later = entries[:MAX_GROUP_COMMIT], entries[MAX_GROUP_COMMIT:]
            if later:
                self.batched[fn] = later
            items = [item for item, _ in now]
            futures = [future for _, future in now if future is not None]
            units.append(_Unit(lambda db, fn=fn, items=items: fn(db, items), futures, batched=True))
        jobs, self.jobs = self.jobs[:MAX_GROUP_COMMIT], self.jobs[MAX_GROUP_COMMIT:]
        units.extend(_Unit(fn, [future], batched=False) for fn, future in jobs if not future.cancelled())
        return units


class SqliteBackend:
    """One SQLite file. Use `await SqliteBackend.open(path, synchronous=...)`."""

    def __init__(
        self,
        commit_thread: ThreadPoolExecutor,
        commit_db: sqlite3.Connection,
        reader_thread: ThreadPoolExecutor,
        reader_db: sqlite3.Connection,
        lookup_db: sqlite3.Connection,
    ) -> None:
        self._commit_thread = commit_thread
        self._commit_db = commit_db
        self._reader_thread = reader_thread
        self._reader_db = reader_db
        self._lookup_db = SqliteDb(lookup_db)
        self._queue = _Queue()
        self._committer: asyncio.Task[None] | None = None
        self._soon_due = False

    @classmethod
    async def open(cls, path: Path, *, synchronous: str) -> SqliteBackend:
        """Open the file (made if missing) and bring its schema up to date.

        Each connection is made in the thread that will use it.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        commit_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-commit")
        reader_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-read")
        opened: list[tuple[ThreadPoolExecutor, sqlite3.Connection]] = []
        try:
            commit_db = await loop.run_in_executor(commit_thread, _connect, path, synchronous)
            opened.append((commit_thread, commit_db))
            await loop.run_in_executor(commit_thread, _migrate, commit_db)
            reader_db = await loop.run_in_executor(reader_thread, _connect, path, synchronous)
            opened.append((reader_thread, reader_db))
            lookup_db = sqlite3.connect(f"{_file_uri(path)}?mode=ro", uri=True, isolation_level=None)
            lookup_db.row_factory = sqlite3.Row
            lookup_db.execute(f"PRAGMA busy_timeout = {LOOKUP_BUSY_TIMEOUT_MS}")
        except BaseException as exc:
            for thread, conn in opened:
                await loop.run_in_executor(thread, conn.close)
            commit_thread.shutdown()
            reader_thread.shutdown()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open store {path}: {exc}") from exc
            raise
        return cls(commit_thread, commit_db, reader_thread, reader_db, lookup_db)

    async def close(self) -> None:
        """Commit what is queued, then close every connection in the thread that made it."""
        self._flush_soon()
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._commit_thread, self._commit_db.close)
        await loop.run_in_executor(self._reader_thread, self._reader_db.close)
        self._commit_thread.shutdown(wait=True)
        self._reader_thread.shutdown(wait=True)
        self._lookup_db.conn.close()

    # -- reads -----------------------------------------------------------------

    async def read(self, fn: Callable[[Db], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader_thread, _in_snapshot, self._reader_db, fn)
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc

    def lookup(self, fn: Callable[[Db], T]) -> T:
        try:
            return fn(self._lookup_db)
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc

    # -- writes ----------------------------------------------------------------

    async def write(self, fn: Callable[[Db], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.jobs.append((fn, future))
        self._start_committer()
        return await future

    async def write_batched(self, fn: Callable[[Db, Sequence[A]], None], item: A) -> None:
        """Queue `item` for `fn`; when this returns it is committed (durably, with FULL).

        Shielded: a caller that gives up does not take the write back; it commits.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.batched.setdefault(fn, []).append((item, future))
        self._start_committer()
        await asyncio.shield(future)

    def write_soon(self, fn: Callable[[Db, Sequence[A]], None], items: Iterable[A]) -> None:
        """Queue items with the next commit, or on their own a little later; nobody waits."""
        entries = self._queue.batched.setdefault(fn, [])
        entries.extend((item, None) for item in items)
        if not entries:
            del self._queue.batched[fn]
        elif not self._soon_due:
            self._soon_due = True
            asyncio.get_running_loop().call_later(WRITE_SOON_SECONDS, self._flush_soon)

    def _flush_soon(self) -> None:
        self._soon_due = False
        if self._queue:
            self._start_committer()

    def _start_committer(self) -> None:
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())

    async def _commit_queued(self) -> None:
        """Commit what is queued, a transaction at a time, until nothing is."""
        loop = asyncio.get_running_loop()
        while self._queue:
            units = self._queue.take()
            if not units:
                continue  # every caller gave up before its write began
            try:
                outcomes = await loop.run_in_executor(self._commit_thread, _commit, self._commit_db, units)
            except Exception as exc:
                for unit in units:
                    unit.fail(exc)
            else:
                for unit, (ok, value) in zip(units, outcomes, strict=True):
                    unit.settle(ok, value)


class _UnitFailed(Exception):
    """A write of a shared transaction failed: its transaction is to be done again."""


def _commit(conn: sqlite3.Connection, units: Sequence[_Unit]) -> list[tuple[bool, Any]]:
    """One transaction for all units, in the commit thread; (ok, result or exception) each.

    Every unit runs straight in the transaction: savepoints would copy each page a
    write touches, a few microseconds a message. Should one of several fail, it has
    taken the others' work with it, and the transaction is done again with each unit
    in a savepoint of its own, so that only the failing ones fail.
    """
    db = SqliteDb(conn)
    if len(units) == 1:
        with _immediate(conn):
            return [(True, units[0].run(db))]  # its failure is the transaction's
    try:
        with _immediate(conn):
            return [(True, _run(unit, db)) for unit in units]
    except _UnitFailed:
        pass
    with _immediate(conn):
        return [_in_savepoint(conn, db, unit) for unit in units]


def _run(unit: _Unit, db: SqliteDb) -> Any:
    try:
        return unit.run(db)
    except Exception as exc:
        raise _UnitFailed from exc


def _in_savepoint(conn: sqlite3.Connection, db: SqliteDb, unit: _Unit) -> tuple[bool, Any]:
    conn.execute("SAVEPOINT unit")
    try:
        value = unit.run(db)
    except Exception as exc:
        if not conn.in_transaction:
            raise  # SQLite rolled the whole transaction back (disk full, I/O error...)
        conn.execute("ROLLBACK TO unit")
        conn.execute("RELEASE unit")
        return False, exc
    conn.execute("RELEASE unit")
    return True, value


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction: committed when the block ends, rolled back whole if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")  # a failed COMMIT may have rolled back already
        raise


def _in_snapshot(conn: sqlite3.Connection, fn: Callable[[Db], T]) -> T:
    """`fn` in one read transaction, so that its statements see the same commit."""
    conn.execute("BEGIN")
    try:
        return fn(SqliteDb(conn))
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    with _immediate(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
        if current > len(MIGRATIONS):
            raise StoreError(
                f"store schema version {current} is newer than this ses-relay ({len(MIGRATIONS)}); "
                "upgrade ses-relay"
            )
        for number in range(current + 1, len(MIGRATIONS) + 1):
            for statement in _statements(MIGRATIONS[number - 1]):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _file_uri(path: Path) -> str:
    """A file: URI for SQLite's URI filenames (percent-encoded, so any path works)."""
    return Path(os.path.abspath(path)).as_uri()


def read_only(path: Path) -> sqlite3.Connection:
    """A connection that can only read the file (and never creates it)."""
    conn = sqlite3.connect(f"{_file_uri(path)}?mode=ro", uri=True, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def probe(path: Path) -> StateProbe:
    """The file's schema version, read-only (a missing file is not created)."""
    where = str(path)
    if not path.is_file():
        return StateProbe("sqlite", where, len(MIGRATIONS), reachable=False, error="no such file")
    try:
        conn = read_only(path)
        try:
            present = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()[0]
            version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] if present else 0
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return StateProbe("sqlite", where, len(MIGRATIONS), reachable=False, error=str(exc))
    return StateProbe("sqlite", where, len(MIGRATIONS), reachable=True, schema_version=int(version or 0))


def outbox_backlog(path: Path) -> tuple[int, float | None] | None:
    """(outbox rows, epoch time of the oldest) of the file, read-only; None without a file or an outbox."""
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{_file_uri(path)}?mode=ro", uri=True, isolation_level=None)
        try:
            row = conn.execute("SELECT count(*), min(created_at) FROM outbox").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None  # no outbox yet (a file an older ses-relay made), or not a store
    return int(row[0]), row[1]
