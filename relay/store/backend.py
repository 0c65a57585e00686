"""The contract between the Store facade, the SQL and a database backend.

Reads and writes (relay/store/reads.py, writes.py) are plain functions of a `Db`:
statements with `?` placeholders, rows read by column name, SQL that SQLite and
PostgreSQL both run (`INSERT ... ON CONFLICT`, `RETURNING`, standard functions). A
backend wraps its driver's connection in a `Db` (PostgreSQL's turns `?` into `%s`
there, in one place, and makes `lock` an advisory lock) and runs those functions
where its database wants them: the `Backend` protocol is all the facade knows of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
A = TypeVar("A")


class Row(Protocol):
    """A result row: columns by name (give computed columns an alias)."""

    def __getitem__(self, column: str) -> Any: ...


class Db(Protocol):
    """A connection inside the transaction (or read snapshot) a backend opened for the caller."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None: ...

    def fetchone(self, sql: str, params: Sequence[object] = ()) -> Row | None: ...

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    def lock(self, keys: Iterable[str]) -> None:
        """Serialise this transaction with every other that locks one of `keys`, until it ends.

        Write functions that read, decide and write about an address (a suppression's
        merge, a feedback batch, a sender's outcome) lock it first, so that concurrent
        writers on several hosts give the result of some serial order. A database with
        one writer at a time (SQLite) has nothing to do.
        """
        ...


class Backend(Protocol):
    """Where the functions of reads.py and writes.py run.

    `write` runs one unit of work in a transaction of its own or shared with others
    (group commit), all or nothing for that unit; `write_batched` hands `item` to
    `fn(db, items)` together with every item queued for the same `fn` before the
    next commit (the intake's accepts: one insert of many rows); `write_soon` does
    the same without waiting (counters). `read` runs on a reader connection off the
    event loop; `lookup` is a point read on the calling thread, for the SMTP hot
    path. Any database failure surfaces as StoreError.

    A write function may run more than once: when a transaction it shared with
    others is done again without the one that failed, or when a database asks for a
    retry. A run whose transaction rolled back leaves no trace, so a write function
    changes nothing but the database it is given.
    """

    async def write(self, fn: Callable[[Db], T]) -> T: ...

    async def write_batched(self, fn: Callable[[Db, Sequence[A]], None], item: A) -> None: ...

    def write_soon(self, fn: Callable[[Db, Sequence[A]], None], items: Iterable[A]) -> None: ...

    async def read(self, fn: Callable[[Db], T]) -> T: ...

    def lookup(self, fn: Callable[[Db], T]) -> T: ...

    async def close(self) -> None: ...


def marks(count: int) -> str:
    """Placeholders for an IN list of `count` values."""
    return ",".join("?" * count)
