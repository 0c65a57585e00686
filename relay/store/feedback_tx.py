"""One feedback batch's unit of work: the store's side of feedback/apply.py.

Its writes are writes.py's (one write path); what it adds is holding the batch's
rows back so that a batch costs few round trips (see the class).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from relay.store import reads
from relay.store.backend import Db
from relay.store.records import EventRecord, NoticeRecord, RecipientContext, UnmatchedEvent
from relay.store.writes import (
    EVENTS_TABLE,
    FEEDBACK,
    STATUS_SQL,
    UNMATCHED_TABLE,
    add_notice,
    merge_one,
    merge_suppression,
)  # fmt: skip
from relay.suppression import Suppression
from relay.suppression_history import Cleared, Origin, Source
from relay.timeutil import to_text


class FeedbackTx:
    """The unit of work of one feedback batch: every effect commits together or not at all.

    `Store.apply_feedback(fn, now)` runs `fn(tx)` as one write: plain synchronous
    calls, one hand-off for the whole batch. The orchestration (what to do with an
    event) lives in feedback/apply.py, the SQL here and in reads.py.

    Fewer round trips to the database (each one a wait on PostgreSQL): the recipients
    of the batch's events are read at once (`prefetch`), and the rows that nothing in
    the batch reads back before it ends (held events, reviews, dead letters, statuses,
    transient bounces) are written together, one `executemany` a statement, before a
    read that could see them and at the end (`finish`).
    """

    def __init__(self, db: Db, now: datetime) -> None:
        self._db = db
        self.now = now
        self._stamp = to_text(now)  # once for the batch's rows, not once a row
        self._locked: set[str] = set()
        self._contexts: dict[tuple[str, str], RecipientContext | None] = {}
        self._pending: dict[str, list[Sequence[object]]] = {}  # statement -> rows, written by _flush
        self._ahead: dict[int, str] = {}  # logged events not reached yet: id -> recipient

    def lock(self, addresses: Iterable[str]) -> None:
        """Serialise this batch with every other writer about these addresses (see Db.lock)."""
        wanted = [a for a in addresses if a not in self._locked]
        self._db.lock(wanted)
        self._locked.update(wanted)

    def prefetch(self, keys: Iterable[tuple[str, str]]) -> None:
        """Read the recipients of these (SES message id, address) pairs at once, for `recipient`."""
        wanted = list(dict.fromkeys(k for k in keys if k not in self._contexts))
        self._flush(STATUS_SQL)
        for start in range(0, len(wanted), PREFETCH_CHUNK):
            chunk = wanted[start : start + PREFETCH_CHUNK]
            found = reads.recipient_contexts(self._db, sorted({mid for mid, _ in chunk}))
            for key in chunk:
                self._contexts[key] = found.get(key)

    def finish(self) -> None:
        """Write what is still held back; the store calls this before it commits."""
        self._flush()

    def _later(self, sql: str, values: Sequence[object]) -> None:
        self._pending.setdefault(sql, []).append(values)

    def _flush(self, *only: str) -> None:
        """Write the rows held back (of the statements `only`, when given)."""
        for sql in only or list(self._pending):
            rows = self._pending.pop(sql, None)
            if rows:
                self._db.executemany(sql, rows)

    def record_events(self, records: Sequence[EventRecord]) -> list[int | None]:
        """Log the batch's events, in few statements; each one's id, None for one whose dedupe
        key is logged already (a redelivery, or an event earlier in `records`).

        Record first, decide second: the caller then takes the events one by one, each
        `reached` before it is decided. Until then an event is hidden from the reads of
        the events log about its recipient (`logged_events`, `last_engagement`), so that
        every event is decided on what came before it in the batch, as if logged alone.
        """
        ids: list[int | None] = []
        per_statement = max(1, MAX_PARAMETERS // EVENTS_TABLE.width)
        for start in range(0, len(records), per_statement):
            chunk = records[start : start + per_statement]
            values = [v for rec in chunk for v in EVENTS_TABLE.values(rec, self._stamp)]
            rows = self._db.fetchall(EVENTS_TABLE.rows_sql(len(chunk)), values)
            logged = {row["dedupe_key"]: int(row["id"]) for row in rows}
            for rec in chunk:
                event_id = logged.pop(rec.dedupe_key, None)  # a second with the same key: a duplicate
                ids.append(event_id)
                if event_id is not None and rec.recipient is not None:
                    self._ahead[event_id] = rec.recipient
        return ids

    def reached(self, event_id: int) -> None:
        """The caller is at this event now: the reads about its recipient see it."""
        self._ahead.pop(event_id, None)

    def _hidden(self, address: str) -> set[int]:
        return {i for i, recipient in self._ahead.items() if recipient == address} if self._ahead else set()

    def recipient(self, ses_message_id: str, address: str | None) -> RecipientContext | None:
        """The submission this relay sent `ses_message_id` for (to `address` when given)."""
        if address is not None and (ses_message_id, address) in self._contexts:
            return self._contexts[(ses_message_id, address)]
        self._flush(STATUS_SQL)
        return reads.recipient_context(self._db, ses_message_id, address)

    def transient_history(self, address: str, since: datetime) -> tuple[datetime, ...]:
        self._flush(_TRANSIENT)
        return reads.transient_history(self._db, address, since)

    def last_engagement(self, address: str) -> datetime | None:
        return reads.last_engagement(self._db, address, excluding=self._hidden(address))

    def logged_events(
        self,
        address: str,
        kinds: Sequence[str],
        after: datetime,
        before: datetime,
        *,
        transient_only: bool = False,
    ) -> list[tuple[int, str, str, datetime]]:
        """Events of `address` logged already, from between the two times (reads.logged_events)."""
        self._flush(_TRANSIENT)
        logged = reads.logged_events(self._db, address, kinds, after, before, transient_only=transient_only)
        hidden = self._hidden(address)
        return [row for row in logged if row[0] not in hidden] if hidden else logged

    def add_transient(self, address: str, at: datetime) -> None:
        self._later(_TRANSIENT, (address, to_text(at)))

    def set_status(self, submission_id: str, address: str, status: str, detail: str | None) -> None:
        self._later(STATUS_SQL, (status, detail, self._stamp, submission_id, address))
        for key, ctx in self._contexts.items():
            if ctx is not None and key[1] == address and ctx.submission_id == submission_id:
                self._contexts[key] = replace(ctx, status=status)

    def recent_clears(self, address: str, since: datetime) -> tuple[Cleared, ...]:
        return reads.recent_clears(self._db, address, since)

    def merge_suppression(self, new: Suppression, event_id: int) -> Suppression:
        """Merge a suppression the policy decided on; its history names the event (`event_id`)."""
        origin = Origin(Source.EVENT, FEEDBACK, new.reason, event_id)
        if new.address in self._locked:  # the batch holds its lock already
            return merge_one(self._db, new, origin)
        return merge_suppression(self._db, new, origin)

    def add_review(
        self, reason: str, *, recipient: str | None, klass: str | None, ses_message_id: str | None,
        event_id: int | None,
    ) -> None:  # fmt: skip
        self._later(_REVIEW, (self._stamp, recipient, klass, reason, ses_message_id, event_id))

    def add_notice(self, rec: NoticeRecord) -> bool:
        """Queue a notice; False when one with the same dedupe key exists already."""
        return add_notice(self._db, rec, self.now)

    def hold_unmatched(self, held: UnmatchedEvent) -> None:
        """Keep an event's effects until its SES message id is recorded for the recipient."""
        self._later(UNMATCHED_TABLE.sql, UNMATCHED_TABLE.values(held, self._stamp))

    def forget_unmatched(self, received_before: datetime) -> int:
        """Drop held events older than this: events of mail some other sender sent."""
        self._flush(UNMATCHED_TABLE.sql)
        return self._db.execute(
            "DELETE FROM unmatched_events WHERE received_at < ?", (to_text(received_before),)
        )

    def dead_letter(self, source: str, body: str, error: str) -> None:
        self._later(_DEAD_LETTER, (self._stamp, source, body, error))


PREFETCH_CHUNK = 500  # SES message ids a query of FeedbackTx.prefetch names
# Of one statement: SQLite allows 32,766 since 3.32 (the store needs 3.35, for RETURNING);
# PostgreSQL 65,535.
MAX_PARAMETERS = 30_000
_TRANSIENT = "INSERT INTO transient_bounces (address, at) VALUES (?, ?)"
_REVIEW = (
    "INSERT INTO review (created_at, recipient, class, reason, ses_message_id, event_id) VALUES (?,?,?,?,?,?)"
)
_DEAD_LETTER = "INSERT INTO dead_letters (received_at, source, body, error) VALUES (?,?,?,?)"
