"""The state mirror: keeps this host's copy of the shared suppressions and class pauses current.

With `[state] url` set, serve's intake answers RCPT and DATA from the local SQLite
tables (relay/store/mirror.py), and this service, in serve's process, keeps them in
step with PostgreSQL:

- it LISTENs on a connection of its own; a notification (any suppression or class
  pause committed anywhere) wakes it, and it also looks every second, so a missed
  notification costs at most a second;
- each round reads, in one snapshot, the changes after the last one applied and the
  current rows of their keys, plus the class pauses, and writes what differs locally
  in one transaction of the local file's write path, with how far it got;
- it makes a full copy when the change log cannot bring it up to date (a first
  start; a copy older than `[state] change_retention`), and prunes that log (every
  host does, now and then: a delete of old rows);
- when PostgreSQL does not answer it logs one warning, tries again with backoff, and
  logs once more when it has caught up. Meanwhile the intake keeps answering from the
  copy: its age (`age()`) is what /healthz, the metrics and `state check` report.

All PostgreSQL work runs in one thread of its own on one connection, so a slow or
unreachable server never holds up serve's event loop; the LISTEN connection is an
async one on the loop, doing nothing but waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row, tuple_row

from relay.config import StateConfig
from relay.logredact import redact_url
from relay.loop import Loop
from relay.ops import services
from relay.store import Store, StoreError, mirror
from relay.store.mirror import Changes, ClassRow, MirrorState
from relay.store.pg_schema import NOTIFY_CHANNEL

T = TypeVar("T")
log = logging.getLogger("ses_relay.mirror")

BACKOFF_FIRST = 1.0  # seconds before the first retry after a failure, doubling...
BACKOFF_MAX = 10.0  # ...up to this: a server back is found within seconds
STAMP_EVERY = 10.0  # seconds between writes of "still current" when nothing changes
PRUNE_EVERY = 600.0  # seconds between prunes of the change log
ADOPT_CHUNK = 5_000  # local keys checked against the shared state per query


def connect_kwargs(state: StateConfig) -> dict[str, Any]:
    """libpq settings of the mirror's connections: a dead server or network is noticed in seconds."""
    return {
        "autocommit": True,
        "connect_timeout": max(2, math.ceil(state.connect_timeout.total_seconds())),
        "application_name": "ses-relay mirror",
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "options": "-c statement_timeout=120s",
    }


def why(exc: BaseException) -> str:
    """An error on one line, without a password."""
    return " ".join(redact_url(str(exc)).split()) or type(exc).__name__


class NotAMirror(StoreError):
    """The local suppressions are not a copy of the shared state: overwriting them would lose some."""


class LocalWriteFailed(StoreError):
    """The local copy could not be written (the data dir's disk), not the shared state read."""


class StateMirror(Loop):
    """The service. `prepare()` once before the listeners open, then `run()` as any Loop."""

    def __init__(self, store: Store, state: StateConfig, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.store = store
        self.url = state.url
        self.source = state.where
        self.max_age = state.mirror_max_age.total_seconds()
        self.retention = state.change_retention
        self.kwargs = connect_kwargs(state)
        self.clock = clock
        self.every = services.every("state-mirror")
        self.batch = mirror.CHANGES_BATCH  # changes applied a local transaction
        self.chunk = mirror.COPY_CHUNK  # rows of a full copy merged a local transaction
        self.on_classes: Callable[[], None] | None = None  # told when the class pauses changed
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-mirror")
        self._conn: psycopg.Connection[Any] | None = None  # used in the thread only
        self._listener: asyncio.Task[None] | None = None
        self._state = MirrorState()
        self._classes: list[ClassRow] = []
        self._synced: float | None = None  # wall-clock time the copy last held everything
        self._stamped = 0.0
        self._behind_since: float | None = None  # set while PostgreSQL cannot be read
        self._applied_while_behind = 0
        self._backoff = 0.0
        self._next_prune = 0.0
        self.resyncs = 0  # full copies made since start

    # -- what others read ---------------------------------------------------------------

    def age(self, now: float | None = None) -> float | None:
        """Seconds since the copy last held everything the shared state had; None: never did."""
        if self._synced is None:
            return None
        return max(0.0, (self.clock() if now is None else now) - self._synced)

    @property
    def synced_at(self) -> datetime | None:
        return None if self._synced is None else datetime.fromtimestamp(self._synced, UTC)

    def problem(self, now: float | None = None) -> str | None:
        """Why /healthz should fail because of the copy, or None."""
        age = self.age(now)
        if age is None:
            return "the state mirror has never been synced with PostgreSQL"
        if age <= self.max_age:
            return None
        return (
            f"state mirror {age:.0f} s old (over [state] mirror_max_age {self.max_age:.0f} s): "
            "PostgreSQL has not answered; RCPT and DATA answer from the local copy"
        )

    # -- start ------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Bring the copy up to date before the intake opens; raise StoreError if it cannot serve.

        PostgreSQL unreachable is no reason to stay down when a copy is here (its age is
        reported); with no copy at all the intake could not check a recipient, so serve
        does not start (a supervisor starts it again; once PostgreSQL answers, it copies).
        """
        self._state = await self.store.read_mirror(mirror.read_state)
        self._classes = await self.store.read_mirror(mirror.read_classes)
        if self._state.source not in (None, self.source):  # a copy of another state: copy this one
            self._state = MirrorState(self._state.source)
        elif self._state.complete and self._state.synced_at is not None:
            self._synced = self._state.synced_at.timestamp()
        try:
            while await self.sync():
                pass
        except NotAMirror:
            await self.close()
            raise
        except (psycopg.Error, OSError, StoreError) as exc:
            await self._disconnect()
            if self._synced is None:
                await self.close()
                raise StoreError(
                    f"cannot read the shared state ({self.source}): {why(exc)}; this data dir has no "
                    "copy of its suppressions yet, so the intake could not check recipients: "
                    "serve starts once PostgreSQL answers"
                ) from exc
            self._fell_behind(exc, at_start=True)

    # -- the rounds ---------------------------------------------------------------------------

    async def tick(self) -> float:
        try:
            more = await self.sync()
        except (psycopg.Error, OSError, StoreError) as exc:
            self._fell_behind(exc)
            await self._disconnect()
            self._backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._backoff * 2))
            return self._backoff * random.uniform(0.8, 1.2)
        self._backoff = 0.0
        return 0.0 if more else self.every

    async def sync(self) -> bool:
        """One round: connect if need be, then catch up (or copy); True when more changes wait."""
        await self._connect()
        started = self.clock()
        changes: Changes = await self._run(mirror.read_changes, self._conn, self._state.last_seq, self.batch)
        if changes.resync is not None:
            if await self._copy(changes.resync, started):
                self._caught_up()
            return False
        classes_changed = changes.classes != self._classes
        done = not changes.more
        state = MirrorState(
            self.source, changes.upto,
            datetime.fromtimestamp(started, UTC) if done else self._state.synced_at,
        )  # fmt: skip
        if changes.rows or changes.gone or classes_changed or state.last_seq != self._state.last_seq:
            await self._write(partial(mirror.apply_changes, changes=changes, state=state,
                                      classes_changed=classes_changed))  # fmt: skip
            self._stamped = started
            if self._behind_since is not None:
                self._applied_while_behind += changes.behind
        elif done and started - self._stamped >= STAMP_EVERY:
            await self._write(partial(mirror.stamp, state=state))
            self._stamped = started
        self._state, self._classes = state, changes.classes
        if done:
            self._synced = started
            self._caught_up()
        if classes_changed and self.on_classes is not None:
            self.on_classes()
        if done and started >= self._next_prune:
            self._next_prune = started + PRUNE_EVERY
            pruned = await self._run(mirror.prune_changes, self._conn, self.retention)
            if pruned:
                log.debug("state mirror: pruned %d changes older than %s", pruned, self.retention)
        return not done

    async def _copy(self, reason: str, started: float) -> bool:
        """A full copy from one snapshot, merged a chunk at a time (see relay/store/mirror.py);
        False when a shutdown interrupted it (the next start copies again)."""
        if self._state.source is None:
            await self._check_adoptable()
        log.info("state mirror: copying every suppression from %s (%s)", self.source, reason)
        begun = time.monotonic()
        rows = changed = 0
        copy = await self._run(mirror.copy_rows, self._conn, self.chunk)
        reading: asyncio.Future[list[mirror.Entry]] | None = None
        try:
            upto, classes = await self._run(next, copy)
            after = None
            reading = asyncio.ensure_future(self._run(next, copy, []))
            while True:
                chunk = await reading
                last = len(chunk) < self.chunk
                # The next chunk is read (the mirror's thread) while this one is written (the commit thread).
                reading = None if last else asyncio.ensure_future(self._run(next, copy, []))
                changed += await self._write(partial(mirror.merge_chunk, rows=chunk, after=after, last=last))
                rows += len(chunk)
                if chunk:
                    after = mirror.key(chunk[-1])
                if last:
                    break
                if self.stop.is_set():
                    log.info("state mirror: copy interrupted by shutdown; it starts again next time")
                    return False
        finally:
            if reading is not None:
                with contextlib.suppress(Exception):
                    await reading  # the generator runs on one thread, a step at a time: let it finish
            await self._run(copy.close)
        state = MirrorState(self.source, upto, datetime.fromtimestamp(started, UTC))
        await self._write(partial(mirror.finish_copy, classes=classes, state=state))
        self._state, self._stamped, self._synced = state, started, started
        classes_changed = classes != self._classes
        self._classes = classes
        self.resyncs += 1
        log.info(
            "state mirror: copied %d suppressions (%d local rows changed) in %.1f s, up to change %d",
            rows, changed, time.monotonic() - begun, upto,
        )  # fmt: skip
        if classes_changed and self.on_classes is not None:
            self.on_classes()
        return True

    async def _check_adoptable(self) -> None:
        """Refuse to overwrite a local list that is not a copy: a one-host store whose entries
        the shared state lacks (copy them there first, with `ses-relay state migrate`)."""
        if not await self.store.read_mirror(mirror.count_entries):
            return
        now = datetime.now(UTC)
        missing: list[tuple[str, str]] = []
        after = None
        while keys := await self.store.read_mirror(
            partial(mirror.active_keys, after=after, now=now, limit=ADOPT_CHUNK)
        ):
            missing += await self._run(mirror.missing_keys, self._conn, keys)
            after = keys[-1]
        if missing:
            example = ", ".join(f"{a} ({c})" for a, c in missing[:3])
            raise NotAMirror(
                f"{len(missing)} suppression(s) of this data dir are not in the shared state "
                f"({self.source}), e.g. {example}: this store kept a one-host relay's state. Copy it "
                "there first (`ses-relay state migrate --to URL`); serve would otherwise replace them "
                "with the shared state's"
            )

    # -- connections ------------------------------------------------------------------------

    async def _write(self, fn: Callable[[Any], T]) -> T:
        try:
            return await self.store.write_mirror(fn)
        except StoreError as exc:
            raise LocalWriteFailed(str(exc)) from exc

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _connect(self) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = await self._run(self._open)
        if self._listener is not None and self._listener.done() and not self._listener.cancelled():
            self._listener.exception()  # retrieved: it ended with its connection, as expected
        if self._listener is None or self._listener.done():
            listening: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._listener = asyncio.create_task(self._listen(listening))
            await asyncio.wait_for(asyncio.shield(listening), self.kwargs["connect_timeout"] + 1)

    def _open(self) -> psycopg.Connection[Any]:
        from relay.store.postgres import migrate

        conn = psycopg.connect(self.url, **self.kwargs)
        try:
            conn.row_factory = dict_row  # type: ignore[assignment]
            migrate(conn)  # a server first reached now may not have the schema yet
            conn.row_factory = tuple_row  # type: ignore[assignment]
        except BaseException:
            conn.close()
            raise
        return conn

    async def _listen(self, listening: asyncio.Future[None]) -> None:
        """Wake the rounds on each notification, until the connection fails (the next round reconnects)."""
        try:
            conn = await psycopg.AsyncConnection.connect(self.url, **self.kwargs)
        except BaseException as exc:
            if not listening.done():
                listening.set_exception(exc)
            return
        try:
            async with conn:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                listening.set_result(None)
                async for _ in conn.notifies():
                    self.wake()
        except psycopg.Error as exc:
            log.debug("state mirror: notifications stopped: %s", why(exc))
            self.wake()  # the next round finds out and reconnects
        finally:
            if not listening.done():
                listening.set_exception(StoreError("the notification connection closed"))

    async def _disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
            self._listener = None
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self._run(conn.close)

    async def close(self) -> None:
        await self._disconnect()
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def on_stop(self) -> None:
        await self.close()

    # -- the log: once when behind, once when caught up --------------------------------------

    def _fell_behind(self, exc: BaseException, *, at_start: bool = False) -> None:
        if self._behind_since is not None:
            log.debug("state mirror: PostgreSQL still not answering: %s", why(exc))
            return
        self._behind_since, self._applied_while_behind = self.clock(), 0
        synced = self.synced_at
        last = "never" if synced is None else f"at {synced:%Y-%m-%d %H:%M:%S} UTC"
        doing = "starting, answering RCPT and DATA" if at_start else "RCPT and DATA answer"
        failed = (
            "cannot write the local copy of" if isinstance(exc, LocalWriteFailed) else "cannot read"
        )
        log.warning(
            "state mirror: %s the shared state (%s): %s; %s from the local copy (last synced %s), "
            "trying again with backoff",
            failed, self.source, why(exc), doing, last,
        )  # fmt: skip

    def _caught_up(self) -> None:
        if self._behind_since is None:
            return
        log.warning(
            "state mirror: caught up with the shared state after %.0f s behind (%d changes applied)",
            self.clock() - self._behind_since, self._applied_while_behind,
        )  # fmt: skip
        self._behind_since = None
