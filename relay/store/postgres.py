"""The PostgreSQL backend of the shared state: psycopg 3 and its connection pool.

- Writes: every write is one transaction on a pooled connection, run in a small
  thread pool of its own (the functions of writes.py are synchronous, as in SQLite's
  commit thread; PostgreSQL takes concurrent writers, so a few threads rather than
  one). A serialization failure or a deadlock is retried a few times after a random
  pause; any other database failure fails the write with StoreError. Items handed to
  `write_batched` for one function share a transaction (group commit, as with
  SQLite); `write_soon` items join them, or go on their own a little later.
- Reads: one REPEATABLE READ, READ ONLY transaction each, so that all statements of
  a read see the same commits.
- The connection wrapper turns the portable SQL's `?` into psycopg's `%s` (and a
  literal `%` into `%%`), once per statement text.
- `Db.lock(keys)` takes a transaction-scoped advisory lock on each key's hash, in
  the order of the hashes, so two transactions that lock overlapping sets never wait
  on each other in a circle.
- Errors name the server and database, never the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from relay.logredact import redact_url
from relay.store.backend import A, Db, Row
from relay.store.pg_schema import MIGRATION_LOCK, MIGRATIONS
from relay.store.records import StateProbe, StoreError

T = TypeVar("T")
Riders = dict[Callable[[Db, Sequence[Any]], None], list[Any]]  # write_soon's items, by function
log = logging.getLogger("ses_relay.store")
# The pool warns at every failed attempt to reconnect (about one a second while the server
# is down); the operations that fail say so, and serve's state mirror logs an outage once.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

RETRIES = 5  # tries of a write that meets a serialization failure or a deadlock
RETRY_PAUSE = 0.02  # seconds; the random pause before try n is at most RETRY_PAUSE * 2**n
RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)
MAX_GROUP_COMMIT = 256  # items of one batched write sharing one transaction
WRITE_SOON_SECONDS = 0.5
MAX_SOON = 10_000  # write_soon items kept per function while they cannot be written
APPLICATION_NAME = "ses-relay"
_VERSION_SQL = "SELECT coalesce(max(version), 0) AS version FROM schema_version"
_LOCK_SQL = (
    "SELECT count(pg_advisory_xact_lock(h)) AS n FROM ("
    "SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest(%s::text[]) AS k ORDER BY h) AS ordered"
)


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """Portable SQL (`?` placeholders) as psycopg takes it (`%s`, a literal `%` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgDb:
    """A psycopg connection inside a transaction, as a `Db`."""

    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return self.conn.execute(translate(sql), params).rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        batch = list(rows)
        if batch:
            with self.conn.cursor() as cur:
                cur.executemany(translate(sql), batch)

    def fetchone(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        row: Row | None = self.conn.execute(translate(sql), params).fetchone()
        return row

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self.conn.execute(translate(sql), params).fetchall()

    def lock(self, keys: Iterable[str]) -> None:
        """Serialise this transaction with others over any of `keys` until it ends."""
        distinct = list(dict.fromkeys(keys))
        if distinct:
            self.conn.execute(_LOCK_SQL, [distinct])


def _why(exc: BaseException) -> str:
    """The driver's message on one line, without a password."""
    return " ".join(redact_url(str(exc)).split()) or type(exc).__name__


def _failure(what: str, where: str, exc: BaseException) -> StoreError:
    return StoreError(f"{what} ({where}): {_why(exc)}")


def _connect_kwargs(connect_timeout: float) -> dict[str, Any]:
    return {
        "autocommit": True,  # transactions are the explicit blocks below
        "row_factory": dict_row,
        "connect_timeout": max(2, math.ceil(connect_timeout)),  # libpq's smallest
        "application_name": APPLICATION_NAME,
    }


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Bring the schema up to date under MIGRATION_LOCK; the version it is at."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        row = conn.execute(_VERSION_SQL).fetchone()
        current = int(row["version"]) if row else 0
        if current > len(MIGRATIONS):
            raise StoreError(
                f"the shared state's schema version {current} is newer than this ses-relay "
                f"({len(MIGRATIONS)}); upgrade ses-relay"
            )
        for number in range(current + 1, len(MIGRATIONS) + 1):
            conn.execute(MIGRATIONS[number - 1])
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
    return len(MIGRATIONS)


class PostgresBackend:
    """The shared state in PostgreSQL. Use `await PostgresBackend.open(url, ...)`."""

    def __init__(self, pool: ConnectionPool[Any], threads: ThreadPoolExecutor, where: str) -> None:
        self._pool = pool
        self._threads = threads
        self.where = where  # the URL without its password, for messages
        self._queued: dict[Callable[..., None], list[tuple[Any, asyncio.Future[None]]]] = {}
        self._runners: dict[Callable[..., None], asyncio.Task[None]] = {}
        self._soon: Riders = {}
        self._soon_due = False
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, url: str, *, pool_size: int = 4, connect_timeout: float = 5.0, required: bool = True
    ) -> PostgresBackend:
        """Connect, bring the schema up to date, and open the pool; StoreError if any of it fails.

        `required=False` (serve, which can answer from its mirror): a server that does not
        answer yet is no error; the pool connects in the background, and the operations
        that need it fail (StoreError) until it answers.
        """
        where = redact_url(url)
        threads = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="state")
        try:
            pool = await asyncio.get_running_loop().run_in_executor(
                threads, _open_pool, url, where, pool_size, connect_timeout, required
            )
        except BaseException:
            threads.shutdown()
            raise
        return cls(pool, threads, where)

    async def close(self) -> None:
        """Commit what is queued, then close the pool."""
        runners = [task for task in [*self._runners.values(), self._flusher] if task and not task.done()]
        if runners:
            await asyncio.gather(*runners, return_exceptions=True)
        if self._soon:
            await self._commit_soon()
        await asyncio.get_running_loop().run_in_executor(self._threads, self._pool.close)
        self._threads.shutdown(wait=True)

    # -- reads -----------------------------------------------------------------

    async def read(self, fn: Callable[[Db], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._snapshot, fn)

    def lookup(self, fn: Callable[[Db], T]) -> T:
        return self._snapshot(fn)

    def _snapshot(self, fn: Callable[[Db], T]) -> T:
        try:
            with self._pool.connection() as conn:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                try:
                    return fn(PgDb(conn))
                finally:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
        except PoolTimeout as exc:
            raise _failure("no connection to the shared state", self.where, exc) from exc
        except psycopg.Error as exc:
            raise _failure("shared state read failed", self.where, exc) from exc

    # -- writes ----------------------------------------------------------------

    async def write(self, fn: Callable[[Db], T]) -> T:
        return await self._transact(fn)

    async def _transact(self, fn: Callable[[Db], T]) -> T:
        """`fn` in a transaction of its own, with the `write_soon` items queued so far riding along."""
        riders, self._soon = self._soon, {}
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, self.transact, fn, riders)
        except BaseException:
            for rider, items in riders.items():  # rolled back with the transaction: try them again
                kept = self._soon.setdefault(rider, [])
                kept[:0] = items
                del kept[:-MAX_SOON]
            if riders:
                self._soon_later()
            raise

    def transact(self, fn: Callable[[Db], T], riders: Riders | None = None) -> T:
        """`fn` in one transaction, tried again on a serialization failure or deadlock (blocking).

        `riders` (statistics, `write_soon`) run first, each in a savepoint: one that fails
        is dropped with a warning and takes nothing else with it.
        """
        for attempt in range(1, RETRIES + 1):
            try:
                with self._pool.connection() as conn, conn.transaction():
                    db = PgDb(conn)
                    for rider, items in (riders or {}).items():
                        try:
                            with conn.transaction():
                                rider(db, items)
                        except psycopg.Error as exc:
                            if isinstance(exc, RETRYABLE):
                                raise
                            log.warning("%d queued state update(s) dropped: %s", len(items), _why(exc))
                    return fn(db)
            except RETRYABLE as exc:
                if attempt == RETRIES:
                    raise _failure(f"shared state write failed {RETRIES} times", self.where, exc) from exc
                time.sleep(random.uniform(0, RETRY_PAUSE * 2**attempt))  # jitter
            except PoolTimeout as exc:
                raise _failure("no connection to the shared state", self.where, exc) from exc
            except psycopg.Error as exc:
                raise _failure("shared state write failed", self.where, exc) from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    async def write_batched(self, fn: Callable[[Db, Sequence[A]], None], item: A) -> None:
        """Queue `item` for `fn`; when this returns it is committed. Shielded, as SQLite's."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(fn, []).append((item, future))
        runner = self._runners.get(fn)
        if runner is None or runner.done():
            self._runners[fn] = asyncio.create_task(self._commit_queued(fn))
        await asyncio.shield(future)

    def write_soon(self, fn: Callable[[Db, Sequence[A]], None], items: Iterable[A]) -> None:
        """Queue items with the next transaction, or on their own a little later; nobody waits."""
        entries = self._soon.setdefault(fn, [])
        entries.extend(items)
        del entries[:-MAX_SOON]  # statistics: while the server is away, keep the latest only
        if not entries:
            del self._soon[fn]
        else:
            self._soon_later()

    def _soon_later(self) -> None:
        if not self._soon_due:
            self._soon_due = True
            asyncio.get_running_loop().call_later(WRITE_SOON_SECONDS, self._flush_soon)

    def _flush_soon(self) -> None:
        self._soon_due = False
        if self._soon and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._commit_soon())

    async def _commit_soon(self) -> None:
        try:
            await self._transact(_nothing)
        except Exception as exc:  # _transact put the items back for the next try
            log.debug("queued state updates wait for the next try: %s", exc)

    async def _commit_queued(self, fn: Callable[..., None]) -> None:
        """Commit `fn`'s queued items, MAX_GROUP_COMMIT a transaction, until none are left."""
        while entries := self._queued.get(fn):
            now, self._queued[fn] = entries[:MAX_GROUP_COMMIT], entries[MAX_GROUP_COMMIT:]
            items = [item for item, _ in now]
            try:
                await self._transact(_together(fn, items))
            except Exception as exc:
                error = exc if isinstance(exc, StoreError) else StoreError(f"state write failed: {exc}")
                for _, future in now:
                    if not future.done():
                        future.set_exception(error)
            else:
                for _, future in now:
                    if not future.done():
                        future.set_result(None)
        self._queued.pop(fn, None)


def _together(fn: Callable[[Db, Sequence[A]], None], items: Sequence[A]) -> Callable[[Db], None]:
    return lambda db: fn(db, items)


def _nothing(db: Db) -> None:
    """The transaction the `write_soon` items ride along in when no other write comes."""


def _open_pool(
    url: str, where: str, pool_size: int, connect_timeout: float, required: bool = True
) -> ConnectionPool[Any]:
    """Connect once (a clear error if that fails), migrate, then open the pool (blocking).

    Not `required`: a server that does not answer leaves the pool to connect in the background.
    """
    kwargs = _connect_kwargs(connect_timeout)
    answered = True
    try:
        with psycopg.connect(url, **kwargs) as conn:
            migrate(conn)
    except psycopg.Error as exc:
        if required:
            raise _failure("cannot open the shared state", where, exc) from exc
        log.debug("shared state not answering at open (%s): %s", where, _why(exc))
        answered = False
    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        kwargs=kwargs,
        min_size=1,
        max_size=pool_size,
        open=False,
        timeout=connect_timeout,
        check=ConnectionPool.check_connection,  # a connection the server dropped is replaced, not used
        name="ses-relay-state",
    )
    if not answered:
        pool.open(wait=False)
        return pool
    try:
        pool.open(wait=True, timeout=connect_timeout)
    except PoolTimeout as exc:
        pool.close()
        raise _failure("cannot open the shared state's connection pool", where, exc) from exc
    return pool


# -- `ses-relay state check` ----------------------------------------------------------------


def probe(url: str, connect_timeout: float = 5.0) -> StateProbe:
    """Connect and read the schema version, changing nothing (blocking); a failure is part of the answer."""
    where = redact_url(url)
    started = time.monotonic()
    try:
        with psycopg.connect(url, **_connect_kwargs(connect_timeout)) as conn:
            connect_ms = (time.monotonic() - started) * 1000
            present = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL AS present").fetchone()
            version = 0
            if present and present["present"]:
                row = conn.execute(_VERSION_SQL).fetchone()
                version = int(row["version"]) if row else 0
            server = conn.info.parameter_status("server_version")
    except psycopg.Error as exc:
        return StateProbe("postgresql", where, len(MIGRATIONS), reachable=False, error=_why(exc))
    return StateProbe(
        "postgresql", where, len(MIGRATIONS), reachable=True, schema_version=version,
        server_version=server, connect_ms=round(connect_ms, 1),
    )  # fmt: skip
