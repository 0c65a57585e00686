"""The store: every line of SQL in ses-relay lives in this module.

SQLite in WAL mode. The intake's commits use `synchronous=FULL`, so a commit has
reached the disk before the SMTP intake answers 250 (the worker process, whose
commits only record what already happened, opens it with NORMAL: see `Store.open`).
Callers see a narrow async interface of domain operations (accept a submission,
take due mail, record a send, merge a suppression...), never SQL, so a PostgreSQL
backend can be added for multi-host deployments without touching them.

Four ways in, each chosen for its path:
- hot writes (group-committed accepts and SES outcomes, feedback batches,
  suppression merges) run as one plain function per transaction in the store's
  single commit thread on a sqlite3 connection: one hand-off per transaction, where
  aiosqlite would take one per statement;
- RCPT-time suppression lookups read directly on the loop thread (an indexed point
  read; in WAL a reader never waits for a writer);
- listings and reports read through an aiosqlite connection;
- the remaining, rarer writes (clears, pauses, deferrals, notices' states) go
  through an aiosqlite connection guarded by an asyncio lock, so that a transaction
  never interleaves with another coroutine's statements.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import aiosqlite

from relay.suppression import ALL, Cause, Level, Suppression, merge
from relay.timeutil import from_text, id_floor, maybe_text, maybe_time, to_text
from relay.vocabulary import STATUS_RANK, NoticeState, Status, advance_status

T = TypeVar("T")
BUSY_TIMEOUT_MS = 5000
REFUSAL_FLUSH_SECONDS = 0.5
MAX_GROUP_COMMIT = 256  # accepts sharing one transaction (and one fsync)

# Numbered migrations: each runs once, in order, inside one transaction with the
# version bump. Never edit a released migration; add the next number.
MIGRATIONS: tuple[str, ...] = (
    # 1: the relay core
    """
    CREATE TABLE submissions (
        id                TEXT PRIMARY KEY,
        mail_from         TEXT NOT NULL,
        class             TEXT NOT NULL,
        class_source      TEXT NOT NULL,
        configuration_set TEXT,
        tags              TEXT NOT NULL DEFAULT '[]',
        header_from       TEXT,
        subject           TEXT,
        message_id        TEXT,
        headers           TEXT NOT NULL DEFAULT '',
        size              INTEGER NOT NULL,
        client_ip         TEXT,
        auth_user         TEXT,
        created_at        TEXT NOT NULL
    );
    CREATE TABLE recipients (
        submission_id  TEXT NOT NULL REFERENCES submissions(id),
        address        TEXT NOT NULL,
        status         TEXT NOT NULL,
        detail         TEXT,
        ses_message_id TEXT,
        updated_at     TEXT NOT NULL,
        PRIMARY KEY (submission_id, address)
    );
    CREATE INDEX recipients_by_ses_id ON recipients(ses_message_id);
    CREATE INDEX recipients_by_address ON recipients(address);
    CREATE TABLE spool (
        submission_id   TEXT PRIMARY KEY REFERENCES submissions(id),
        data            BLOB NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_until     REAL,
        last_error      TEXT,
        created_at      REAL NOT NULL
    );
    CREATE INDEX spool_due ON spool(next_attempt_at);
    CREATE TABLE suppressions (
        address         TEXT NOT NULL,
        class           TEXT NOT NULL,
        level           INTEGER NOT NULL,
        cause           TEXT NOT NULL,
        reason          TEXT NOT NULL,
        feedback_id     TEXT,
        ses_message_id  TEXT,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        expires_at      TEXT,
        refused_count   INTEGER NOT NULL DEFAULT 0,
        last_refused_at TEXT,
        PRIMARY KEY (address, class)
    );
    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY,
        at      TEXT NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL,
        address TEXT,
        class   TEXT,
        detail  TEXT NOT NULL DEFAULT ''
    );
    """,
    # 2: the feedback consumer: event log, transient-bounce history, dead letters,
    # review queue and the notices to send.
    """
    CREATE TABLE events (
        id                INTEGER PRIMARY KEY,
        dedupe_key        TEXT NOT NULL UNIQUE,
        kind              TEXT NOT NULL,
        ses_type          TEXT NOT NULL,
        recipient         TEXT,
        ses_message_id    TEXT NOT NULL,
        submission_id     TEXT,
        class             TEXT,
        occurred_at       TEXT NOT NULL,
        received_at       TEXT NOT NULL,
        bounce_type       TEXT,
        bounce_subtype    TEXT,
        diagnostic        TEXT,
        status            TEXT,
        complaint_type    TEXT,
        feedback_id       TEXT,
        source_ip         TEXT,
        from_address      TEXT,
        subject           TEXT,
        configuration_set TEXT,
        raw               TEXT NOT NULL
    );
    CREATE INDEX events_by_recipient ON events(recipient, occurred_at);
    CREATE INDEX events_by_time ON events(occurred_at);
    CREATE INDEX events_by_ses_id ON events(ses_message_id);
    CREATE TABLE transient_bounces (
        address TEXT NOT NULL,
        at      TEXT NOT NULL
    );
    CREATE INDEX transient_by_address ON transient_bounces(address, at);
    CREATE TABLE dead_letters (
        id          INTEGER PRIMARY KEY,
        received_at TEXT NOT NULL,
        source      TEXT NOT NULL,
        body        TEXT NOT NULL,
        error       TEXT NOT NULL
    );
    CREATE TABLE review (
        id             INTEGER PRIMARY KEY,
        created_at     TEXT NOT NULL,
        recipient      TEXT,
        class          TEXT,
        reason         TEXT NOT NULL,
        ses_message_id TEXT,
        event_id       INTEGER REFERENCES events(id)
    );
    CREATE TABLE notices (
        id              INTEGER PRIMARY KEY,
        dedupe_key      TEXT NOT NULL UNIQUE,
        created_at      TEXT NOT NULL,
        reason          TEXT NOT NULL,
        recipient       TEXT NOT NULL,
        sender          TEXT NOT NULL,
        submission_id   TEXT,
        ses_message_id  TEXT,
        class           TEXT,
        status          TEXT,
        diagnostic      TEXT,
        bounce_type     TEXT,
        bounce_subtype  TEXT,
        extra           TEXT,
        state           TEXT NOT NULL DEFAULT 'pending',
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error      TEXT,
        delivered_at    TEXT
    );
    CREATE INDEX notices_pending ON notices(state, next_attempt_at);
    """,
    # 3: the reputation guard: which classes are paused, why, and since when.
    """
    CREATE TABLE class_state (
        class      TEXT PRIMARY KEY,
        paused     INTEGER NOT NULL DEFAULT 0,
        reason     TEXT NOT NULL DEFAULT '',
        changed_at TEXT NOT NULL,
        changed_by TEXT NOT NULL
    );
    """,
    # 4: events that matched no recipient yet (applied before the sender recorded their
    # SES message id), with the status and notice they owe the recipient once it does.
    """
    CREATE TABLE unmatched_events (
        event_id       INTEGER PRIMARY KEY REFERENCES events(id),
        ses_message_id TEXT NOT NULL,
        recipient      TEXT NOT NULL,
        status         TEXT,
        detail         TEXT,
        notice         TEXT,
        notice_extra   TEXT,
        received_at    TEXT NOT NULL
    );
    CREATE INDEX unmatched_by_message ON unmatched_events(ses_message_id, recipient);
    CREATE INDEX unmatched_by_time ON unmatched_events(received_at);
    """,
)


class StoreError(RuntimeError):
    """The store could not do what was asked (disk full, read-only, locked too long).

    The SMTP intake turns it into `451 4.3.0`; nothing was written.
    """


@dataclass(frozen=True)
class NewRecipient:
    address: str
    status: str  # "queued" or "suppressed"
    detail: str | None = None


@dataclass(frozen=True)
class NewSubmission:
    id: str
    mail_from: str
    klass: str
    class_source: str
    configuration_set: str | None
    tags: tuple[tuple[str, str], ...]
    header_from: str | None
    subject: str | None
    message_id: str | None
    headers: str
    size: int
    client_ip: str | None
    auth_user: str | None
    created_at: datetime
    recipients: tuple[NewRecipient, ...]
    refused: tuple[tuple[str, str], ...] = ()  # (address, class) of suppressions that refused one


@dataclass(frozen=True)
class RecipientRow:
    address: str
    status: str
    detail: str | None
    ses_message_id: str | None
    updated_at: datetime


@dataclass(frozen=True)
class SubmissionRow:
    id: str
    mail_from: str
    klass: str
    class_source: str
    configuration_set: str | None
    tags: tuple[tuple[str, str], ...]
    header_from: str | None
    subject: str | None
    message_id: str | None
    headers: str
    size: int
    created_at: datetime
    recipients: tuple[RecipientRow, ...]
    client_ip: str | None = None
    auth_user: str | None = None


@dataclass(frozen=True)
class SpoolItem:
    """A spooled message the sender has leased; `pending` are recipients still queued."""

    submission: SubmissionRow
    data: bytes
    attempts: int
    spooled_at: float
    pending: tuple[str, ...]


@dataclass(frozen=True)
class AuditRow:
    at: datetime
    actor: str
    action: str
    address: str | None
    klass: str | None
    detail: str


@dataclass(frozen=True)
class EventRecord:
    """One feedback event as the log keeps it (one per recipient)."""

    dedupe_key: str
    kind: str
    ses_type: str
    recipient: str | None
    ses_message_id: str
    occurred_at: datetime
    raw: str
    submission_id: str | None = None
    klass: str | None = None
    bounce_type: str | None = None
    bounce_subtype: str | None = None
    diagnostic: str | None = None
    status: str | None = None
    complaint_type: str | None = None
    feedback_id: str | None = None
    source_ip: str | None = None
    from_address: str | None = None
    subject: str | None = None
    configuration_set: str | None = None


@dataclass(frozen=True)
class LoggedEvent:
    id: int
    received_at: datetime
    record: EventRecord


@dataclass(frozen=True)
class RecipientContext:
    """What the feedback path needs to know of the submission an event is about."""

    submission_id: str
    klass: str
    status: str
    mail_from: str
    subject: str | None
    message_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class UnmatchedEvent:
    """A logged event no recipient matched yet, and what it owes the recipient that will.

    The feedback path decides these effects when it applies the event; the store
    carries them out in the transaction that records the SES message id
    (`record_outcome`), so the order of the two commits does not matter.
    """

    event_id: int
    ses_message_id: str
    recipient: str
    status: str | None  # the status the event moves the recipient to
    detail: str | None
    notice: str | None = None  # reason of the notice owed to the original sender
    notice_extra: str | None = None


@dataclass(frozen=True)
class NoticeRecord:
    """A notice owed to a sender; at most one per dedupe_key (submission, recipient, reason)."""

    dedupe_key: str
    reason: str
    recipient: str
    sender: str
    submission_id: str | None = None
    ses_message_id: str | None = None
    klass: str | None = None
    status: str | None = None
    diagnostic: str | None = None
    bounce_type: str | None = None
    bounce_subtype: str | None = None
    extra: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    id: int
    received_at: datetime
    source: str
    body: str
    error: str


@dataclass(frozen=True)
class ReviewItem:
    id: int
    created_at: datetime
    recipient: str | None
    klass: str | None
    reason: str
    ses_message_id: str | None


class FeedbackTx:
    """The unit of work of one feedback batch: every effect commits together or not at all.

    `Store.apply_feedback(fn, now)` runs `fn(tx)` in the store's commit thread inside one
    transaction: plain synchronous SQLite calls, one hand-off for the whole batch.
    The orchestration (what to do with an event) lives in feedback/apply.py, the SQL here.
    """

    def __init__(self, db: sqlite3.Connection, now: datetime) -> None:
        self._db = db
        self.now = now

    def record_event(self, rec: EventRecord) -> int | None:
        """Log the event; None when its dedupe key is already logged (a redelivery)."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO events (dedupe_key, kind, ses_type, recipient, ses_message_id, "
            "submission_id, class, occurred_at, received_at, bounce_type, bounce_subtype, diagnostic, "
            "status, complaint_type, feedback_id, source_ip, from_address, subject, configuration_set, raw) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                rec.dedupe_key, rec.kind, rec.ses_type, rec.recipient, rec.ses_message_id,
                rec.submission_id, rec.klass, to_text(rec.occurred_at), to_text(self.now),
                rec.bounce_type, rec.bounce_subtype, rec.diagnostic, rec.status, rec.complaint_type,
                rec.feedback_id, rec.source_ip, rec.from_address, rec.subject, rec.configuration_set,
                rec.raw,
            ),
        )  # fmt: skip
        return cur.lastrowid if cur.rowcount else None

    def recipient(self, ses_message_id: str, address: str | None) -> RecipientContext | None:
        """The submission this relay sent `ses_message_id` for (to `address` when given)."""
        sql = (
            "SELECT r.status, s.id, s.class, s.mail_from, s.subject, s.message_id, s.created_at "
            "FROM recipients r JOIN submissions s ON s.id = r.submission_id WHERE r.ses_message_id = ?"
        )
        params: list[object] = [ses_message_id]
        if address is not None:
            sql += " AND r.address = ?"
            params.append(address)
        row = self._db.execute(sql + " LIMIT 1", params).fetchone()
        if row is None:
            return None
        return RecipientContext(
            submission_id=row["id"],
            klass=row["class"],
            status=row["status"],
            mail_from=row["mail_from"],
            subject=row["subject"],
            message_id=row["message_id"],
            created_at=from_text(row["created_at"]),
        )

    def transient_history(self, address: str, since: datetime) -> tuple[datetime, ...]:
        rows = self._db.execute(
            "SELECT at FROM transient_bounces WHERE address = ? AND at >= ? ORDER BY at",
            (address, to_text(since)),
        ).fetchall()
        return tuple(from_text(r["at"]) for r in rows)

    def last_engagement(self, address: str) -> datetime | None:
        """The time of the address's latest open or click (events_by_recipient serves it)."""
        row = self._db.execute(
            "SELECT max(occurred_at) AS at FROM events WHERE recipient = ? AND kind IN ('open', 'click')",
            (address,),
        ).fetchone()
        return from_text(row["at"]) if row is not None and row["at"] is not None else None

    def add_transient(self, address: str, at: datetime) -> None:
        self._db.execute(
            "INSERT INTO transient_bounces (address, at) VALUES (?, ?)", (address, to_text(at))
        )

    def set_status(self, submission_id: str, address: str, status: str, detail: str | None) -> None:
        self._db.execute(
            "UPDATE recipients SET status = ?, detail = coalesce(?, detail), updated_at = ? "
            "WHERE submission_id = ? AND address = ?",
            (status, detail, to_text(self.now), submission_id, address),
        )

    def merge_suppression(self, new: Suppression) -> Suppression:
        return _merge_suppression(self._db, new)

    def add_review(
        self, reason: str, *, recipient: str | None, klass: str | None, ses_message_id: str | None,
        event_id: int | None,
    ) -> None:  # fmt: skip
        self._db.execute(
            "INSERT INTO review (created_at, recipient, class, reason, ses_message_id, event_id) "
            "VALUES (?,?,?,?,?,?)",
            (to_text(self.now), recipient, klass, reason, ses_message_id, event_id),
        )

    def add_notice(self, rec: NoticeRecord) -> bool:
        """Queue a notice; False when one with the same dedupe key exists already."""
        return bool(self._db.execute(_NOTICE_INSERT, _notice_params(rec, self.now)).rowcount)

    def hold_unmatched(self, held: UnmatchedEvent) -> None:
        """Keep an event's effects until its SES message id is recorded for the recipient."""
        self._db.execute(
            "INSERT OR IGNORE INTO unmatched_events (event_id, ses_message_id, recipient, status, detail, "
            "notice, notice_extra, received_at) VALUES (?,?,?,?,?,?,?,?)",
            (
                held.event_id, held.ses_message_id, held.recipient, held.status, held.detail, held.notice,
                held.notice_extra, to_text(self.now),
            ),
        )  # fmt: skip

    def forget_unmatched(self, received_before: datetime) -> int:
        """Drop held events older than this: events of mail some other sender sent."""
        cur = self._db.execute(
            "DELETE FROM unmatched_events WHERE received_at < ?", (to_text(received_before),)
        )
        return cur.rowcount

    def dead_letter(self, source: str, body: str, error: str) -> None:
        self._db.execute(
            "INSERT INTO dead_letters (received_at, source, body, error) VALUES (?,?,?,?)",
            (to_text(self.now), source, body, error),
        )


_NOTICE_INSERT = (
    "INSERT OR IGNORE INTO notices (dedupe_key, created_at, reason, recipient, sender, submission_id, "
    "ses_message_id, class, status, diagnostic, bounce_type, bounce_subtype, extra, next_attempt_at) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _notice_params(rec: NoticeRecord, now: datetime) -> tuple[object, ...]:
    return (
        rec.dedupe_key, to_text(now), rec.reason, rec.recipient, rec.sender, rec.submission_id,
        rec.ses_message_id, rec.klass, rec.status, rec.diagnostic, rec.bounce_type,
        rec.bounce_subtype, rec.extra, to_text(now),
    )  # fmt: skip


@dataclass(frozen=True)
class ClassState:
    klass: str
    paused: bool
    reason: str
    changed_at: datetime
    changed_by: str


@dataclass(frozen=True)
class NoticeRow:
    """A notice owed to a sender, with what the composer needs of the original message."""

    id: int
    record: NoticeRecord
    state: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None
    original_headers: str
    original_message_id: str | None
    original_subject: str | None
    arrival_date: datetime | None


def _notice_row(r: sqlite3.Row) -> NoticeRow:
    record = NoticeRecord(
        dedupe_key=r["dedupe_key"],
        reason=r["reason"],
        recipient=r["recipient"],
        sender=r["sender"],
        submission_id=r["submission_id"],
        ses_message_id=r["ses_message_id"],
        klass=r["class"],
        status=r["status"],
        diagnostic=r["diagnostic"],
        bounce_type=r["bounce_type"],
        bounce_subtype=r["bounce_subtype"],
        extra=r["extra"],
    )
    return NoticeRow(
        id=r["id"],
        record=record,
        state=r["state"],
        attempts=r["attempts"],
        created_at=from_text(r["created_at"]),
        next_attempt_at=from_text(r["next_attempt_at"]),
        last_error=r["last_error"],
        delivered_at=maybe_time(r["delivered_at"]),
        original_headers=r["headers"] or "",
        original_message_id=r["message_id"],
        original_subject=r["subject"],
        arrival_date=maybe_time(r["sub_created_at"]),
    )


_NOTICE_SELECT = (
    "SELECT n.*, s.headers, s.message_id, s.subject, s.created_at AS sub_created_at "
    "FROM notices n LEFT JOIN submissions s ON s.id = n.submission_id"
)


def _suppression(row: sqlite3.Row) -> Suppression:
    return Suppression(
        address=row["address"],
        klass=row["class"],
        level=Level(row["level"]),
        cause=Cause(row["cause"]),
        reason=row["reason"],
        created_at=from_text(row["created_at"]),
        updated_at=from_text(row["updated_at"]),
        expires_at=maybe_time(row["expires_at"]),
        feedback_id=row["feedback_id"],
        ses_message_id=row["ses_message_id"],
        refused_count=row["refused_count"],
        last_refused_at=maybe_time(row["last_refused_at"]),
    )


class Store:
    """Async access to one SQLite database file. Use `await Store.open(path)`."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        lookup: sqlite3.Connection,
        commit_db: sqlite3.Connection,
    ) -> None:
        self.path = path
        self._lookup = lookup
        # Group commits of the intake run here: one thread, one plain connection.
        self._commit_db = commit_db
        self._commit_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-commit")
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()
        self._accepts: list[_PendingAccept] = []
        self._refusals: list[tuple[str, str, str]] = []  # (time, address, class) not yet counted
        self._outcomes: list[tuple[_Outcome, asyncio.Future[None]]] = []
        self._refusal_flush_due = False
        self._committer: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    async def open(cls, path: Path, *, fsync_every_commit: bool = True) -> Store:
        """Open (and migrate) the store.

        `fsync_every_commit=False` is for the worker process: its commits record what
        already happened (an SES call's outcome, a feedback batch) and a power loss
        can only drop the last few *whole* transactions, in order, leaving those
        messages queued to be sent again — a duplicate, never a loss. The intake keeps
        the default, because its commit is the promise behind a 250.
        """
        return await cls._open(path, "FULL" if fsync_every_commit else "NORMAL")

    @classmethod
    async def _open(cls, path: Path, synchronous: str) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            writer = await cls._connect(path, synchronous)
            await cls._migrate(writer)
            reader = await cls._connect(path, synchronous)
            lookup = sqlite3.connect(f"{_file_uri(path)}?mode=ro", uri=True, isolation_level=None)
            lookup.row_factory = sqlite3.Row
            lookup.execute("PRAGMA busy_timeout = 100")
            commit_db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            commit_db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            commit_db.execute(f"PRAGMA synchronous = {synchronous}")
            commit_db.execute("PRAGMA foreign_keys = ON")
            commit_db.row_factory = sqlite3.Row
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        return cls(path, writer, reader, lookup, commit_db)

    @staticmethod
    async def _connect(path: Path, synchronous: str = "FULL") -> aiosqlite.Connection:
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = sqlite3.Row
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute(f"PRAGMA synchronous = {synchronous}")
        await db.execute("PRAGMA foreign_keys = ON")
        return db

    @staticmethod
    async def _migrate(db: aiosqlite.Connection) -> None:
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            async with db.execute("SELECT max(version) FROM schema_version") as cur:
                row = await cur.fetchone()
            current = (row[0] if row else None) or 0
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"store schema version {current} is newer than this ses-relay ({len(MIGRATIONS)}); "
                    "upgrade ses-relay"
                )
            for number in range(current + 1, len(MIGRATIONS) + 1):
                for statement in _statements(MIGRATIONS[number - 1]):
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        self._flush_refusals()
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        self._commit_thread.shutdown(wait=True)
        self._commit_db.close()
        self._lookup.close()
        await self._reader.close()
        await self._writer.close()

    async def schema_version(self) -> int:
        async with self._reader.execute("SELECT max(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; any failure rolls it back whole and surfaces as StoreError."""
        async with self._lock:
            db = self._writer
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"store unavailable: {exc}") from exc
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException as exc:
                try:
                    await db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the failed COMMIT may already have rolled back
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"store write failed: {exc}") from exc
                raise

    async def _read(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        try:
            async with self._reader.execute(sql, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc

    # -- suppressions ------------------------------------------------------

    async def suppressions_for(self, addresses: Iterable[str], now: datetime) -> dict[str, list[Suppression]]:
        """Unexpired suppressions of each address, in every class."""
        wanted = list(dict.fromkeys(addresses))
        out: dict[str, list[Suppression]] = {a: [] for a in wanted}
        if not wanted:
            return out
        marks = ",".join("?" * len(wanted))
        sql = (
            f"SELECT * FROM suppressions WHERE address IN ({marks}) "  # noqa: S608 - placeholders only
            "AND (expires_at IS NULL OR expires_at > ?)"
        )
        # The hot path of every RCPT: an indexed point read on the loop thread itself
        # (tens of microseconds) instead of a round trip through aiosqlite's thread.
        # In WAL mode a reader never waits for a writer, so this cannot stall the loop
        # behind a commit.
        try:
            rows = self._lookup.execute(sql, [*wanted, to_text(now)]).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc
        for row in rows:
            out[row["address"]].append(_suppression(row))
        return out

    async def suppressions_of(self, address: str, *, include_expired: bool = True) -> list[Suppression]:
        sql = "SELECT * FROM suppressions WHERE address = ?"
        rows = await self._read(sql + " ORDER BY class", [address])
        entries = [_suppression(r) for r in rows]
        return entries if include_expired else [e for e in entries if e.expires_at is None]

    async def list_suppressions(
        self, *, now: datetime, klass: str | None = None, level: Level | None = None, include_expired=False
    ) -> list[Suppression]:
        clauses, params = [], []
        if not include_expired:
            clauses.append("(expires_at IS NULL OR expires_at > ?)")
            params.append(to_text(now))
        if klass is not None:
            clauses.append("class = ?")
            params.append(klass)
        if level is not None:
            clauses.append("level = ?")
            params.append(int(level))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._read(f"SELECT * FROM suppressions {where} ORDER BY address, class", params)  # noqa: S608
        return [_suppression(r) for r in rows]

    def note_refused(self, refused: Iterable[tuple[str, str]], now: datetime) -> None:
        """Count refusals against the suppressions that caused them ("is it still saving us?").

        Not awaited: the counts ride along with the next group commit, so a 550 is
        never held up by a write. They are statistics; a crash may lose the last few.
        """
        stamp = to_text(now)
        self._refusals.extend((stamp, address, klass) for address, klass in refused)
        if self._refusals and not self._refusal_flush_due:
            # Not at once: a refused RCPT should cost the reply nothing. The counts go
            # with the next accept's commit, or on their own half a second later.
            self._refusal_flush_due = True
            asyncio.get_running_loop().call_later(REFUSAL_FLUSH_SECONDS, self._flush_refusals)

    def _flush_refusals(self) -> None:
        self._refusal_flush_due = False
        if self._refusals:
            self._start_committer()

    async def merge_suppression(
        self, new: Suppression, *, actor: str | None = None, action: str = "add", detail: str = ""
    ) -> Suppression:
        """Merge `new` into the entry on file (relay.suppression.merge); with an actor, audit it."""

        def write(db: sqlite3.Connection) -> Suppression:
            merged = _merge_suppression(db, new)
            if actor is not None:
                note = detail or new.reason
                db.execute(_AUDIT_INSERT, _audit_params(new.updated_at, actor, action, new, note))
            return merged

        return await self._write(write)

    async def merge_suppressions(
        self, entries: Sequence[Suppression], *, actor: str, action: str, detail: str = ""
    ) -> list[Suppression]:
        """Merge many entries in one transaction (CSV import, SES sync), each audited.

        One commit instead of one per row: an fsync'd commit each would make a
        100,000-row import take minutes. Callers chunk very large inputs so that the
        writer lock is not held for long. The audit detail is the entry's reason,
        followed by `detail` (e.g. where it came from) when given.
        """

        def write(db: sqlite3.Connection) -> list[Suppression]:
            merged = []
            for new in entries:
                merged.append(_merge_suppression(db, new))
                note = f"{new.reason} ({detail})" if detail else new.reason
                db.execute(_AUDIT_INSERT, _audit_params(new.updated_at, actor, action, new, note))
            return merged

        return await self._write(write)

    async def clear_suppressions(
        self, address: str, klass: str | None, *, actor: str, reason: str, now: datetime
    ) -> list[Suppression]:
        """Remove the entries (one class, or all when klass is None); audited; returns what was removed."""
        async with self._transaction() as db:
            sql, params = "SELECT * FROM suppressions WHERE address = ?", [address]
            if klass is not None:
                sql += " AND class = ?"
                params.append(klass)
            async with db.execute(sql, params) as cur:
                removed = [_suppression(r) for r in await cur.fetchall()]
            # A manual clear also forgets the transient bounces before it, so the
            # next soft bounce does not escalate on history the admin just forgave.
            await db.execute("DELETE FROM transient_bounces WHERE address = ?", (address,))
            for entry in removed:
                await db.execute(
                    "DELETE FROM suppressions WHERE address = ? AND class = ?", (address, entry.klass)
                )
                await _audit(
                    db,
                    now,
                    actor,
                    "clear",
                    address,
                    entry.klass,
                    f"{reason} (was {entry.level} {entry.cause}: {entry.reason})",
                )
        return removed

    async def apply_feedback(self, fn: Callable[[FeedbackTx], T], now: datetime) -> T:
        """Run `fn` on a FeedbackTx as one transaction in the commit thread; StoreError on failure."""
        return await self._write(lambda db: fn(FeedbackTx(db, now)))

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """One write transaction, as a plain function, in the store's commit thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._commit_thread, _in_transaction, self._commit_db, fn)
        except sqlite3.Error as exc:
            raise StoreError(f"store write failed: {exc}") from exc

    async def dead_letters(self) -> list[DeadLetter]:
        rows = await self._read("SELECT * FROM dead_letters ORDER BY id")
        return [
            DeadLetter(r["id"], from_text(r["received_at"]), r["source"], r["body"], r["error"]) for r in rows
        ]

    async def review_items(self) -> list[ReviewItem]:
        rows = await self._read("SELECT * FROM review ORDER BY id")
        return [
            ReviewItem(
                id=r["id"],
                created_at=from_text(r["created_at"]),
                recipient=r["recipient"],
                klass=r["class"],
                reason=r["reason"],
                ses_message_id=r["ses_message_id"],
            )
            for r in rows
        ]

    async def events(
        self, *, address: str | None = None, since: datetime | None = None, limit: int = 10_000
    ) -> list[LoggedEvent]:
        clauses, params = [], []
        if address is not None:
            clauses.append("recipient = ?")
            params.append(address)
        if since is not None:
            clauses.append("occurred_at >= ?")
            params.append(to_text(since))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._read(
            f"SELECT * FROM events {where} ORDER BY occurred_at, id LIMIT ?",  # noqa: S608
            [*params, limit],
        )
        return [_logged_event(r) for r in rows]

    # -- reputation ----------------------------------------------------------

    async def class_states(self) -> dict[str, ClassState]:
        rows = await self._read("SELECT * FROM class_state ORDER BY class")
        return {
            r["class"]: ClassState(
                r["class"], bool(r["paused"]), r["reason"], from_text(r["changed_at"]), r["changed_by"]
            )
            for r in rows
        }

    async def set_class_paused(
        self, klass: str, paused: bool, *, reason: str, actor: str, now: datetime
    ) -> ClassState:
        """Pause or resume a class (audited). Resuming also restarts the guard's window."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO class_state (class, paused, reason, changed_at, changed_by) VALUES (?,?,?,?,?) "
                "ON CONFLICT(class) DO UPDATE SET paused = excluded.paused, reason = excluded.reason, "
                "changed_at = excluded.changed_at, changed_by = excluded.changed_by",
                (klass, int(paused), reason, to_text(now), actor),
            )
            await _audit(db, now, actor, "pause" if paused else "resume", None, klass, reason)
        return ClassState(klass, paused, reason, now, actor)

    async def outcome_counts(self, since: datetime) -> list[tuple[str | None, str, int]]:
        """(class, measure, count) since a time, for relay.ops.stats.

        Measures: "sent" (recipients SES accepted from this relay, plus Send events of
        messages it did not send), "delivered", "bounced_permanent",
        "bounced_transient", "bounced_undetermined", "complained", "rejected".
        """
        start = to_text(since)
        rows = await self._read(
            "SELECT s.class AS class, 'sent' AS measure, count(*) AS n FROM recipients r "
            "JOIN submissions s ON s.id = r.submission_id "
            "WHERE r.ses_message_id IS NOT NULL AND s.created_at >= ? GROUP BY s.class "
            "UNION ALL "
            "SELECT e.class, 'sent', count(*) FROM events e WHERE e.kind = 'send' AND e.occurred_at >= ? "
            "AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.ses_message_id = e.ses_message_id) "
            "GROUP BY e.class "
            "UNION ALL "
            "SELECT class, CASE kind WHEN 'bounce' THEN 'bounced_' || lower(coalesce(bounce_type, "
            "'undetermined')) WHEN 'complaint' THEN 'complained' WHEN 'reject' THEN 'rejected' "
            "ELSE 'delivered' END, count(*) FROM events "
            "WHERE occurred_at >= ? AND kind IN ('delivery', 'bounce', 'complaint', 'reject') "
            "GROUP BY 1, 2",
            [start, start, start],
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    # -- notices -----------------------------------------------------------

    async def due_notices(self, now: datetime, limit: int = 50) -> list[NoticeRow]:
        rows = await self._read(
            f"{_NOTICE_SELECT} WHERE n.state = 'pending' AND n.next_attempt_at <= ? "
            "ORDER BY n.next_attempt_at, n.id LIMIT ?",
            [to_text(now), limit],
        )
        return [_notice_row(r) for r in rows]

    async def notices(self, *, pending_only: bool = False, limit: int = 10_000) -> list[NoticeRow]:
        where = "WHERE n.state = 'pending' " if pending_only else ""
        rows = await self._read(f"{_NOTICE_SELECT} {where}ORDER BY n.id LIMIT ?", [limit])
        return [_notice_row(r) for r in rows]

    async def settle_notice(
        self, notice_id: int, state: str, *, now: datetime, error: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:  # fmt: skip
        """Mark a notice delivered ('sent'), given up on ('skipped'), or due again later ('pending')."""
        async with self._transaction() as db:
            if state == NoticeState.PENDING:
                assert next_attempt_at is not None
                await db.execute(
                    "UPDATE notices SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
                    "WHERE id = ?",
                    (to_text(next_attempt_at), error, notice_id),
                )
            else:
                await db.execute(
                    "UPDATE notices SET state = ?, attempts = attempts + 1, last_error = ?, "
                    "delivered_at = ? WHERE id = ?",
                    (state, error, to_text(now), notice_id),
                )

    async def audit_log(self, address: str | None = None) -> list[AuditRow]:
        sql, params = "SELECT * FROM audit", []
        if address is not None:
            sql += " WHERE address = ?"
            params.append(address)
        rows = await self._read(sql + " ORDER BY id", params)
        return [
            AuditRow(from_text(r["at"]), r["actor"], r["action"], r["address"], r["class"], r["detail"])
            for r in rows
        ]

    # -- intake ------------------------------------------------------------

    async def accept(
        self, sub: NewSubmission, data: bytes, now_epoch: float, notices: Sequence[NoticeRecord] = ()
    ) -> None:
        """Record a submission, its recipients and the message bytes in one durable commit.

        When this returns, the message survives a crash; when it raises, nothing of it
        was written. Concurrent accepts are group-committed: while one transaction is
        being written and fsynced, the next ones queue up and share the next commit, so
        a busy intake pays for one fsync per batch rather than per message.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._accepts.append(_PendingAccept(sub, data, now_epoch, tuple(notices), future))
        self._start_committer()
        await asyncio.shield(future)

    def _start_committer(self) -> None:
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._group_commit())

    async def _group_commit(self) -> None:
        """Write everything queued (accepts, outcomes, refusal counts) in shared transactions.

        While one batch is written and fsynced in the commit thread, new work queues
        and goes into the next batch. A failed batch fails every caller in it (the
        intake answers 451, the sender retries); nothing of it is half-written.
        """
        loop = asyncio.get_running_loop()
        while self._accepts or self._refusals or self._outcomes:
            batch, self._accepts = self._accepts[:MAX_GROUP_COMMIT], self._accepts[MAX_GROUP_COMMIT:]
            outcomes, self._outcomes = self._outcomes[:MAX_GROUP_COMMIT], self._outcomes[MAX_GROUP_COMMIT:]
            refusals, self._refusals = self._refusals, []
            futures = [item.future for item in batch] + [future for _, future in outcomes]
            try:
                await loop.run_in_executor(
                    self._commit_thread, _write_batch, self._commit_db, batch, refusals,
                    [outcome for outcome, _ in outcomes],
                )  # fmt: skip
            except Exception as exc:
                error = exc if isinstance(exc, StoreError) else StoreError(f"store write failed: {exc}")
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            else:
                for future in futures:
                    if not future.done():
                        future.set_result(None)

    async def submission(self, submission_id: str) -> SubmissionRow | None:
        rows = await self._read("SELECT * FROM submissions WHERE id = ?", [submission_id])
        if not rows:
            return None
        recips = await self._read(
            "SELECT * FROM recipients WHERE submission_id = ? ORDER BY rowid", [submission_id]
        )
        return _submission(rows[0], recips)

    async def recent_submissions(
        self,
        since: datetime,
        *,
        sender: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[SubmissionRow]:
        """Submissions accepted since `since`, newest first, each with its recipients.

        `sender` is the envelope sender; `status` keeps the submissions that have at
        least one recipient in that status. Ids begin with their time (`new_id`), so
        the primary key both orders the rows and bounds the scan to the window.
        """
        params = [id_floor(since), to_text(since), sender, sender, status, status, limit]
        rows = await self._read(
            f"SELECT * FROM submissions WHERE id IN ({_RECENT}) ORDER BY id DESC", params  # noqa: S608
        )
        recips = await self._read(
            f"SELECT * FROM recipients WHERE submission_id IN ({_RECENT}) ORDER BY rowid", params  # noqa: S608
        )
        by_id: dict[str, list[sqlite3.Row]] = {}
        for r in recips:
            by_id.setdefault(r["submission_id"], []).append(r)
        return [_submission(row, by_id.get(row["id"], ())) for row in rows]

    # -- sending -----------------------------------------------------------

    async def make_all_due(self) -> int:
        """At worker start: everything spooled is due now, what a dead worker had in flight
        included (a restart is also how an operator says "try again now").

        The spool's lease_until column (migration 1) is no longer used: the single
        worker keeps its in-flight set in memory.
        """
        async with self._transaction() as db:
            cur = await db.execute("UPDATE spool SET next_attempt_at = 0")
            return cur.rowcount

    async def due(self, now_epoch: float, limit: int, *, exclude: Collection[str] = ()) -> list[SpoolItem]:
        """Up to `limit` spooled messages due now, oldest first, not in `exclude`.

        A read, not a lease: the one worker that sends a data dir (worker.lock) keeps
        what it has in flight in memory; a message of a paused class waits.
        """
        skip = list(exclude)
        not_in = f"AND submission_id NOT IN ({','.join('?' * len(skip))}) " if skip else ""
        spooled = await self._read(
            "SELECT submission_id, data, attempts, created_at FROM spool "  # noqa: S608 - placeholders only
            f"WHERE next_attempt_at <= ? {not_in}"
            "AND NOT EXISTS (SELECT 1 FROM submissions s JOIN class_state c ON c.class = s.class "
            "WHERE s.id = spool.submission_id AND c.paused) "
            "ORDER BY next_attempt_at LIMIT ?",
            [now_epoch, *skip, limit],
        )
        if not spooled:
            return []
        ids = [row["submission_id"] for row in spooled]
        marks = ",".join("?" * len(ids))
        rows = await self._read(f"SELECT * FROM submissions WHERE id IN ({marks})", ids)  # noqa: S608
        subs = {r["id"]: r for r in rows}
        recips: dict[str, list[sqlite3.Row]] = {}
        for r in await self._read(
            f"SELECT * FROM recipients WHERE submission_id IN ({marks}) ORDER BY rowid", ids  # noqa: S608
        ):
            recips.setdefault(r["submission_id"], []).append(r)
        items = []
        for row in spooled:
            sid = row["submission_id"]
            submission = _submission(subs[sid], recips.get(sid, []))
            pending = tuple(r.address for r in submission.recipients if r.status == Status.QUEUED)
            data = bytes(row["data"])
            items.append(SpoolItem(submission, data, row["attempts"], row["created_at"], pending))
        return items

    async def next_due(self) -> float | None:
        rows = await self._read("SELECT min(next_attempt_at) FROM spool")
        return rows[0][0] if rows and rows[0][0] is not None else None

    async def record_outcome(
        self,
        submission_id: str,
        addresses: Sequence[str],
        status: str,
        *,
        now: datetime,
        ses_message_id: str | None = None,
        detail: str | None = None,
        notices: Sequence[NoticeRecord] = (),
    ) -> None:
        """Settle queued recipients after an SES call: sent (with SES's message id) or failed.

        Only `queued` rows change, so a retry path can never overwrite an earlier outcome;
        notices owed for the outcome commit with it, and so does dropping the message
        bytes once no recipient is left queued (one commit per SES call, not two). SES
        events that arrived before the id was recorded (held as unmatched) are applied
        to the recipients in the same transaction.
        """
        # Group-committed like accepts: concurrent sender workers share one transaction,
        # so the worker takes SQLite's write lock far less often than once per SES call.
        outcome = _Outcome(
            submission_id, tuple(addresses), status, now, ses_message_id, detail, tuple(notices)
        )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outcomes.append((outcome, future))
        self._start_committer()
        await asyncio.shield(future)

    async def defer(self, submission_id: str, *, next_attempt_at: float, error: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE spool SET attempts = attempts + 1, next_attempt_at = ?, "
                "last_error = ? WHERE submission_id = ?",
                (next_attempt_at, error, submission_id),
            )

    async def finish(self, submission_id: str) -> None:
        """Drop the message bytes once no recipient is left queued."""
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM spool WHERE submission_id = ? AND NOT EXISTS ("
                "SELECT 1 FROM recipients WHERE submission_id = ? AND status = 'queued')",
                (submission_id, submission_id),
            )

    async def last_sent_at(self) -> datetime | None:
        """When SES last accepted a message from this relay (any process's sender)."""
        rows = await self._read(
            "SELECT max(updated_at) FROM recipients WHERE ses_message_id IS NOT NULL"
        )
        return maybe_time(rows[0][0]) if rows else None

    async def spool_stats(self) -> tuple[int, float | None]:
        """(messages spooled, epoch time of the oldest)."""
        rows = await self._read("SELECT count(*), min(created_at) FROM spool")
        return int(rows[0][0]), rows[0][1]

    # -- monitoring and reports -----------------------------------------------

    async def suppression_counts(self, now: datetime) -> dict[Level, int]:
        """Active suppressions per level, for the ses_relay_suppressions gauge."""
        rows = await self._read(
            "SELECT level, count(*) FROM suppressions WHERE expires_at IS NULL OR expires_at > ? "
            "GROUP BY level",
            [to_text(now)],
        )
        return {Level(int(r[0])): int(r[1]) for r in rows}

    async def report_events(self, since: datetime, until: datetime) -> list[LoggedEvent]:
        """Bounces and complaints that occurred in [since, until), oldest first: the daily report."""
        rows = await self._read(
            "SELECT * FROM events WHERE kind IN ('bounce', 'complaint') AND occurred_at >= ? "
            "AND occurred_at < ? ORDER BY occurred_at, id",
            [to_text(since), to_text(until)],
        )
        return [_logged_event(r) for r in rows]


def _logged_event(r: sqlite3.Row) -> LoggedEvent:
    record = EventRecord(
        dedupe_key=r["dedupe_key"],
        kind=r["kind"],
        ses_type=r["ses_type"],
        recipient=r["recipient"],
        ses_message_id=r["ses_message_id"],
        occurred_at=from_text(r["occurred_at"]),
        raw=r["raw"],
        submission_id=r["submission_id"],
        klass=r["class"],
        bounce_type=r["bounce_type"],
        bounce_subtype=r["bounce_subtype"],
        diagnostic=r["diagnostic"],
        status=r["status"],
        complaint_type=r["complaint_type"],
        feedback_id=r["feedback_id"],
        source_ip=r["source_ip"],
        from_address=r["from_address"],
        subject=r["subject"],
        configuration_set=r["configuration_set"],
    )
    return LoggedEvent(r["id"], from_text(r["received_at"]), record)


def _submission(row: sqlite3.Row, recips: Iterable[sqlite3.Row]) -> SubmissionRow:
    return SubmissionRow(
        id=row["id"],
        mail_from=row["mail_from"],
        klass=row["class"],
        class_source=row["class_source"],
        configuration_set=row["configuration_set"],
        tags=tuple((str(n), str(v)) for n, v in json.loads(row["tags"])),
        header_from=row["header_from"],
        subject=row["subject"],
        message_id=row["message_id"],
        headers=row["headers"],
        size=row["size"],
        created_at=from_text(row["created_at"]),
        recipients=tuple(
            RecipientRow(
                r["address"], r["status"], r["detail"], r["ses_message_id"], from_text(r["updated_at"])
            )
            for r in recips
        ),
        client_ip=row["client_ip"],
        auth_user=row["auth_user"],
    )


# The ids of recent_submissions(since, sender, status, limit); a None filter matches all.
_RECENT = (
    "SELECT s.id FROM submissions s WHERE s.id >= ? AND s.created_at >= ? "
    "AND (? IS NULL OR s.mail_from = ?) "
    "AND (? IS NULL OR EXISTS (SELECT 1 FROM recipients x WHERE x.submission_id = s.id AND x.status = ?)) "
    "ORDER BY s.id DESC LIMIT ?"
)


@dataclass(frozen=True)
class _PendingAccept:
    sub: NewSubmission
    data: bytes
    now_epoch: float
    notices: tuple[NoticeRecord, ...]
    future: asyncio.Future[None]


@dataclass(frozen=True)
class _Outcome:
    submission_id: str
    addresses: tuple[str, ...]
    status: str
    now: datetime
    ses_message_id: str | None
    detail: str | None
    notices: tuple[NoticeRecord, ...]


def _write_batch(
    db: sqlite3.Connection,
    batch: Sequence[_PendingAccept],
    refusals: list[tuple[str, str, str]],
    outcomes: Sequence[_Outcome],
) -> None:
    """All rows of a group commit in one transaction: a few executemany calls for the batch.

    Runs in the store's commit thread on a plain sqlite3 connection: one hand-off per
    batch rather than one per statement, which profiled as most of the intake's cost.
    """
    submissions, recipients, spool = [], [], []
    for item in batch:
        sub = item.sub
        created = to_text(sub.created_at)
        submissions.append(
            (
                sub.id, sub.mail_from, sub.klass, sub.class_source, sub.configuration_set,
                json.dumps([list(t) for t in sub.tags]), sub.header_from, sub.subject, sub.message_id,
                sub.headers, sub.size, sub.client_ip, sub.auth_user, created,
            )
        )  # fmt: skip
        recipients.extend((sub.id, r.address, r.status, r.detail, created) for r in sub.recipients)
        if any(r.status == Status.QUEUED for r in sub.recipients):
            spool.append((sub.id, item.data, item.now_epoch, item.now_epoch))
        refusals.extend((created, address, klass) for address, klass in sub.refused)
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(
            "INSERT INTO submissions (id, mail_from, class, class_source, configuration_set, tags, "
            "header_from, subject, message_id, headers, size, client_ip, auth_user, created_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            submissions,
        )
        db.executemany(
            "INSERT INTO recipients (submission_id, address, status, detail, updated_at) VALUES (?,?,?,?,?)",
            recipients,
        )
        db.executemany(
            "INSERT INTO spool (submission_id, data, next_attempt_at, created_at) VALUES (?,?,?,?)", spool
        )
        db.executemany(
            "UPDATE suppressions SET refused_count = refused_count + 1, last_refused_at = ? "
            "WHERE address = ? AND class = ?",
            refusals,
        )
        db.executemany(
            _NOTICE_INSERT, [_notice_params(n, item.sub.created_at) for item in batch for n in item.notices]
        )
        for o in outcomes:
            stamp = to_text(o.now)
            db.executemany(
                "UPDATE recipients SET status = ?, ses_message_id = coalesce(?, ses_message_id), "
                "detail = ?, updated_at = ? WHERE submission_id = ? AND address = ? AND status = 'queued'",
                [(o.status, o.ses_message_id, o.detail, stamp, o.submission_id, a) for a in o.addresses],
            )
            if o.ses_message_id is not None:
                _match_unmatched(db, o.submission_id, o.ses_message_id, o.now)
            db.executemany(_NOTICE_INSERT, [_notice_params(n, o.now) for n in o.notices])
            db.execute(
                "DELETE FROM spool WHERE submission_id = ? AND NOT EXISTS ("
                "SELECT 1 FROM recipients WHERE submission_id = ? AND status = 'queued')",
                (o.submission_id, o.submission_id),
            )
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def _match_unmatched(db: sqlite3.Connection, submission_id: str, ses_message_id: str, now: datetime) -> None:
    """Carry out what events logged before this SES message id was recorded owe its recipients.

    Runs in the transaction that records the id, so an event is applied exactly once
    whichever commits first: the feedback path (it finds no recipient and holds the
    event) or the sender (the feedback path then finds the recipient itself). Statuses
    only move forward; notices keep their dedupe keys (submission, recipient, reason).
    """
    held = db.execute(
        "SELECT u.*, e.status AS dsn_status, e.diagnostic, e.bounce_type, e.bounce_subtype "
        "FROM unmatched_events u JOIN events e ON e.id = u.event_id "
        "WHERE u.ses_message_id = ? ORDER BY u.event_id",
        (ses_message_id,),
    ).fetchall()
    if not held:
        return
    statuses = {
        r["address"]: r["status"]
        for r in db.execute(
            "SELECT address, status FROM recipients WHERE submission_id = ? AND ses_message_id = ?",
            (submission_id, ses_message_id),
        )
    }
    sub = db.execute("SELECT mail_from, class FROM submissions WHERE id = ?", (submission_id,)).fetchone()
    stamp, matched = to_text(now), []
    for row in held:
        address = row["recipient"]
        if address not in statuses:
            continue  # another chunk's recipient, or mail this relay did not send
        matched.append(row["event_id"])
        if row["status"] in STATUS_RANK and statuses[address] in STATUS_RANK:
            status = advance_status(statuses[address], row["status"])
            if status != statuses[address]:
                statuses[address] = status
                db.execute(
                    "UPDATE recipients SET status = ?, detail = coalesce(?, detail), updated_at = ? "
                    "WHERE submission_id = ? AND address = ?",
                    (status, row["detail"], stamp, submission_id, address),
                )
        if row["notice"] and sub["mail_from"]:
            notice = NoticeRecord(
                dedupe_key=f"{submission_id}:{address}:{row['notice']}",
                reason=row["notice"],
                recipient=address,
                sender=sub["mail_from"],
                submission_id=submission_id,
                ses_message_id=ses_message_id,
                klass=sub["class"],
                status=row["dsn_status"],
                diagnostic=row["diagnostic"],
                bounce_type=row["bounce_type"],
                bounce_subtype=row["bounce_subtype"],
                extra=row["notice_extra"],
            )
            db.execute(_NOTICE_INSERT, _notice_params(notice, now))
    if not matched:
        return
    marks = ",".join("?" * len(matched))
    db.execute(
        f"UPDATE events SET submission_id = ?, class = ? WHERE id IN ({marks})",  # noqa: S608
        (submission_id, sub["class"], *matched),
    )
    db.execute(f"DELETE FROM unmatched_events WHERE event_id IN ({marks})", matched)  # noqa: S608


def _merge_suppression(db: sqlite3.Connection, new: Suppression) -> Suppression:
    row = db.execute(
        "SELECT * FROM suppressions WHERE address = ? AND class = ?", (new.address, new.klass)
    ).fetchone()
    existing = _suppression(row) if row else None
    if existing is not None and not existing.active(new.updated_at):
        existing = None  # an expired entry is history, not a floor for the new one
    merged = merge(existing, new)
    db.execute(
        "INSERT OR REPLACE INTO suppressions (address, class, level, cause, reason, feedback_id, "
        "ses_message_id, created_at, updated_at, expires_at, refused_count, last_refused_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            merged.address,
            merged.klass,
            int(merged.level),
            str(merged.cause),
            merged.reason,
            merged.feedback_id,
            merged.ses_message_id,
            to_text(merged.created_at),
            to_text(merged.updated_at),
            maybe_text(merged.expires_at),
            merged.refused_count,
            maybe_text(merged.last_refused_at),
        ),
    )
    return merged


async def _audit(
    db: aiosqlite.Connection,
    at: datetime,
    actor: str,
    action: str,
    address: str | None,
    klass: str | None,
    detail: str,
) -> None:
    await db.execute(_AUDIT_INSERT, (to_text(at), actor, action, address, klass, detail))


_AUDIT_INSERT = "INSERT INTO audit (at, actor, action, address, class, detail) VALUES (?,?,?,?,?,?)"


def _audit_params(
    at: datetime, actor: str, action: str, entry: Suppression, detail: str
) -> tuple[str | None, ...]:
    return (to_text(at), actor, action, entry.address, entry.klass, detail)


def _in_transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    return result


def _file_uri(path: Path) -> str:
    """A file: URI for SQLite's URI filenames (percent-encoded, so any path works)."""
    return Path(os.path.abspath(path)).as_uri()


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


__all__ = [
    "ALL",
    "AuditRow",
    "NewRecipient",
    "NewSubmission",
    "RecipientRow",
    "SpoolItem",
    "Store",
    "StoreError",
    "SubmissionRow",
]
