"""The Store facade: the async interface every caller uses, whatever holds the data.

Callers see domain operations (accept a submission, take due mail, record a send,
merge a suppression...), never SQL or a connection. Each operation is a plain
function of reads.py, writes.py or spool_writes.py handed to a backend
(relay/store/backend.py), which runs it where its database wants: for SQLite,
writes in the single commit thread (group-committed), reads on a reader thread, the
RCPT lookup on the loop; for PostgreSQL, a transaction on a pooled connection in a
worker thread.

Two roles: `_local` is this host's SQLite file (the spool: message bytes and what
the sender needs of them), `_state` the record of suppressions, submissions, events,
notices and class pauses. With one host (`[state] url = ""`) both are the same file
and each operation is one transaction. With a shared state
(`[state] url = "postgresql://..."`) `_state` is PostgreSQL, and:

- `_state`: suppressions_of, list_suppressions, merge_suppression(s),
  clear_suppressions, suppression_counts, apply_feedback, dead_letters,
  review_items, events, report_events, outcome_counts, audit_log, class_states,
  set_class_paused, notices, submission, recent_submissions;
- `_state`, with a lease on each notice (relay/store/shared.py): due_notices,
  settle_notice; heartbeat (shared state only);
- `_local`: make_all_due, next_due, defer, finish, last_sent_at, spool_stats,
  schema_version, outbox_backlog, prune_shipped; and, from the local mirror of
  suppressions and class pauses that serve's state mirror keeps (relay/store/mirror.py,
  relay/ops/state_mirror.py): suppressions_for(mirror=True) (RCPT and DATA), due (a
  paused class's mail waits), and class_states / suppression_counts with `mirror=True`
  (the intake's guard view, the metrics); read_mirror and write_mirror are the mirror's own;
- `_local`, with an outbox row in the same transaction (relay/store/outbox.py):
  accept, record_outcome, note_refused. The intake's commit (fsync'd before the 250)
  and the sender's never wait on the network;
- `_local`, then `_state`, then `_local`: ship_outbox (read a batch of the outbox,
  apply it to the shared state in one transaction, delete it here).

So the intake never waits on PostgreSQL: it checks the mirror and commits locally. A
submission reaches the shared state when the worker's shipper has shipped its accept,
normally within a second of the 250 (the intake's wake reaches the shipper too);
`submission` and `recent_submissions` answer from the shared state.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from relay.clearing import ClearRequest, ClearVerdict
from relay.store import outbox, reads, shared, spool_writes, writes
from relay.store.backend import Backend, Db
from relay.store.feedback_tx import FeedbackTx
from relay.store.places import NoSpool, host_id
from relay.store.records import (
    AuditRow,
    ClassState,
    DeadLetter,
    LoggedEvent,
    NewSubmission,
    NoticeRecord,
    NoticeRow,
    ReviewItem,
    SpoolItem,
    StoreError,
    SubmissionRow,
)
from relay.store.sqlite import SqliteBackend
from relay.suppression import Level, Suppression
from relay.suppression_history import HistoryRow, Source
from relay.timeutil import to_text

if TYPE_CHECKING:
    from relay.config import StateConfig

T = TypeVar("T")


class Store:
    """Async access to the relay's store. Use `await Store.open(path)`."""

    def __init__(self, path: Path, local: Backend, state: Backend | None = None) -> None:
        self.path = path
        self._local = local
        self._state = local if state is None else state
        self.shared = self._state is not self._local  # the state is not this host's file
        self._host_id: str | None = None
        self.outbox_written: Callable[[], None] | None = None  # the shipper's wake, where it runs

    @classmethod
    async def open(
        cls, path: Path, *, fsync_every_commit: bool = True, state: StateConfig | None = None,
        spool: bool = True, state_required: bool = True,
    ) -> Store:  # fmt: skip
        """Open (and migrate) the store: the local file, and the shared state when `state` names one.

        `fsync_every_commit=False` is for the worker process: its commits record what
        already happened (an SES call's outcome, a feedback batch) and a power loss
        can only drop the last few *whole* transactions, in order, leaving those
        messages queued to be sent again — a duplicate, never a loss. The intake keeps
        the default, because its commit is the promise behind a 250.

        `spool=False` with a shared state opens the shared state alone (the admin CLI,
        which may run where no relay keeps a spool); the spool's methods then fail.
        `state_required=False` (serve, whose intake answers from its mirror) opens even
        when the shared state does not answer yet: the operations that need it fail
        until it does.
        """
        synchronous = "FULL" if fsync_every_commit else "NORMAL"
        if state is None or not state.shared:
            return cls(path, await SqliteBackend.open(path, synchronous=synchronous))
        from relay.store.postgres import PostgresBackend  # psycopg is loaded only when used

        shared_state = await PostgresBackend.open(
            state.url, pool_size=state.pool_size, connect_timeout=state.connect_timeout.total_seconds(),
            required=state_required,
        )  # fmt: skip
        try:
            local: Backend = await SqliteBackend.open(path, synchronous=synchronous) if spool else NoSpool()
        except BaseException:
            await shared_state.close()
            raise
        return cls(path, local, shared_state)

    @property
    def host_id(self) -> str:
        """This host's name in the shared state (notice leases): kept in the data dir, made once."""
        if self._host_id is None:
            self._host_id = host_id(self.path.parent)
        return self._host_id

    async def close(self) -> None:
        """Commit what is queued and close."""
        await self._local.close()
        if self._state is not self._local:
            await self._state.close()

    async def schema_version(self) -> int:
        return await self._local.read(reads.schema_version)

    # -- suppressions ------------------------------------------------------

    async def suppressions_for(
        self, addresses: Iterable[str], now: datetime, *, mirror: bool = False
    ) -> dict[str, list[Suppression]]:
        """Unexpired suppressions of each address, in every class.

        `mirror`: the intake's check at RCPT and DATA, a point read on the calling (loop)
        thread of the local file (with a shared state, its mirror there). Otherwise (an
        import weighing what is on file) the state itself; with one host, the same read.
        """
        read = partial(reads.suppressions_for, addresses=list(dict.fromkeys(addresses)), now=now)
        if self.shared and not mirror:
            return await self._state.read(read)
        return self._local.lookup(read)

    async def suppressions_of(self, address: str, *, include_expired: bool = True) -> list[Suppression]:
        entries = await self._state.read(partial(reads.suppressions_of, address=address))
        return entries if include_expired else [e for e in entries if e.expires_at is None]

    async def list_suppressions(
        self, *, now: datetime, klass: str | None = None, level: Level | None = None, include_expired=False
    ) -> list[Suppression]:
        return await self._state.read(
            partial(
                reads.list_suppressions, now=now, klass=klass, level=level, include_expired=include_expired
            )
        )

    def note_refused(self, refused: Iterable[tuple[str, str]], now: datetime) -> None:
        """Count refusals against the suppressions that caused them ("is it still saving us?").

        Not awaited: the counts ride along with the next commit, or go on their own
        half a second later, so a 550 is never held up by a write. They are
        statistics; a crash may lose the last few. With a shared state they go to the
        outbox, and from there to PostgreSQL, counted once.
        """
        stamp = to_text(now)
        counts = [(stamp, address, klass) for address, klass in refused]
        if self.shared:
            self._local.write_soon(outbox.note_refusals_local, counts)
            return
        self._local.write_soon(spool_writes.count_refusals, counts)

    async def merge_suppression(
        self,
        new: Suppression,
        *,
        actor: str | None = None,
        action: str = "add",
        detail: str = "",
        source: Source = Source.ADMIN,
    ) -> Suppression:
        """Merge `new` into the entry on file (relay.suppression.merge); with an actor, audit it.

        A change is recorded in the entry's history as made by `source` (and `actor`).
        """
        if actor is None:
            return await self._state.write(partial(writes.merge_suppression, new=new))
        entries = [(new, detail or new.reason)]
        return (
            await self._state.write(
                partial(writes.merge_audited, entries=entries, actor=actor, action=action, source=source)
            )
        )[0]

    async def merge_suppressions(
        self, entries: Sequence[Suppression], *, actor: str, action: str, source: Source, detail: str = ""
    ) -> list[Suppression]:
        """Merge many entries in one transaction (CSV import, SES sync), each audited.

        One commit instead of one per row: an fsync'd commit each would make a
        100,000-row import take minutes. Callers chunk very large inputs so that a
        transaction stays short. The audit detail is the entry's reason, followed by
        `detail` (e.g. where it came from) when given; the history of each entry
        changed keeps `detail` and `source` (an import, SES's account-level list).
        """
        noted = [(new, f"{new.reason} ({detail})" if detail else new.reason) for new in entries]
        return await self._state.write(
            partial(
                writes.merge_audited, entries=noted, actor=actor, action=action, source=source,
                note=detail or None,
            )
        )  # fmt: skip

    async def clear_suppressions(self, request: ClearRequest, now: datetime) -> ClearVerdict:
        """Remove an address's entries (one class, or all) unless the clear rules refuse it
        (relay/clearing.py, weighed in the same transaction); audited, and kept in their
        history. `verdict.cleared` is what was removed; `verdict.problems` why not."""
        return await self._state.write(partial(writes.clear_suppressions, request=request, now=now))

    async def suppression_history(self, address: str) -> list[HistoryRow]:
        """Every recorded change of the address's entries, in every class, oldest first."""
        return await self._state.read(partial(reads.suppression_history, address=address))

    async def suppression_counts(self, now: datetime, *, mirror: bool = False) -> dict[Level, int]:
        """Active suppressions per level, for the ses_relay_suppressions gauge; `mirror`: as
        this host's copy has them (what its intake enforces; with one host, the same)."""
        return await (self._local if mirror else self._state).read(partial(reads.suppression_counts, now=now))

    # -- feedback ------------------------------------------------------------

    async def apply_feedback(self, fn: Callable[[FeedbackTx], T], now: datetime) -> T:
        """Run `fn` on a FeedbackTx as one write (all of it or none); StoreError on failure."""
        return await self._state.write(partial(_feedback, fn=fn, now=now))

    async def dead_letters(self) -> list[DeadLetter]:
        return await self._state.read(reads.dead_letters)

    async def review_items(self) -> list[ReviewItem]:
        return await self._state.read(reads.review_items)

    async def events(
        self, *, address: str | None = None, since: datetime | None = None, limit: int = 10_000
    ) -> list[LoggedEvent]:
        return await self._state.read(partial(reads.events, address=address, since=since, limit=limit))

    async def report_events(self, since: datetime, until: datetime) -> list[LoggedEvent]:
        """Bounces and complaints that occurred in [since, until), oldest first: the daily report."""
        return await self._state.read(partial(reads.report_events, since=since, until=until))

    async def outcome_counts(self, since: datetime) -> list[tuple[str | None, str, int]]:
        """(class, measure, count) since a time, for relay.ops.stats (see reads.outcome_counts)."""
        return await self._state.read(partial(reads.outcome_counts, since=since))

    async def audit_log(self, address: str | None = None) -> list[AuditRow]:
        return await self._state.read(partial(reads.audit_log, address=address))

    # -- class pauses ----------------------------------------------------------

    async def class_states(self, *, mirror: bool = False) -> dict[str, ClassState]:
        """The class pauses; `mirror`: as this host's copy has them (what its intake answers with)."""
        return await (self._local if mirror else self._state).read(reads.class_states)

    # -- the local mirror of a shared state (relay/store/mirror.py) ----------------------------

    async def read_mirror(self, fn: Callable[[Db], T]) -> T:
        return await self._local.read(fn)

    async def write_mirror(self, fn: Callable[[Db], T]) -> T:
        """A change of the local copy, in the local file's one write path (its commit thread)."""
        if not self.shared:
            raise StoreError("the local store is the state itself, not a mirror of one")
        return await self._local.write(fn)

    async def set_class_paused(
        self, klass: str, paused: bool, *, reason: str, actor: str, now: datetime
    ) -> ClassState:
        """Pause or resume a class (audited). Resuming also restarts the guard's window."""
        return await self._state.write(
            partial(writes.set_class_paused, klass=klass, paused=paused, reason=reason, actor=actor, now=now)
        )

    # -- notices -----------------------------------------------------------

    async def due_notices(self, now: datetime, limit: int = 50) -> list[NoticeRow]:
        """Notices due for delivery; with a shared state, leased to this host (settle each)."""
        if self.shared:
            return await self._state.write(
                partial(shared.claim_notices, owner=self.host_id, now=now, limit=limit)
            )
        return await self._state.read(partial(reads.due_notices, now=now, limit=limit))

    async def notices(self, *, pending_only: bool = False, limit: int = 10_000) -> list[NoticeRow]:
        return await self._state.read(partial(reads.notices, pending_only=pending_only, limit=limit))

    async def settle_notice(
        self, notice_id: int, state: str, *, now: datetime, error: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> bool:  # fmt: skip
        """Mark a notice delivered ('sent'), given up on ('skipped'), or due again later ('pending').

        With a shared state, only while this host holds the notice's lease: False (and
        nothing written) when another host took the notice over after the lease ran out.
        """
        settle: Callable[..., bool | None] = writes.settle_notice
        if self.shared:
            settle = partial(shared.settle_notice, owner=self.host_id)
        result = await self._state.write(
            partial(settle, notice_id=notice_id, state=state, now=now, error=error,
                    next_attempt_at=next_attempt_at)
        )  # fmt: skip
        return result is not False

    # -- hosts -------------------------------------------------------------

    async def heartbeat(self, *, sending: bool, started_at: datetime) -> int:
        """Tell the other relays sharing the state that this one is alive and whether it
        has mail to send; the number of the others that are sending. One host alone
        (no shared state) has nobody to tell: 0."""
        if not self.shared:
            return 0
        import socket

        return await self._state.write(
            partial(
                shared.heartbeat, host_id=self.host_id, hostname=socket.gethostname(),
                data_dir=str(self.path.parent.resolve()), started_at=started_at, sending=sending,
            )
        )  # fmt: skip

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
        item = spool_writes.Accept(sub, data, now_epoch, tuple(notices))
        if self.shared:
            await self._local.write_batched(outbox.accept_local, item)
            self._outbox_written()
            return
        await self._local.write_batched(spool_writes.accept, item)

    async def submission(self, submission_id: str) -> SubmissionRow | None:
        return await self._state.read(partial(reads.submission, submission_id=submission_id))

    async def recent_submissions(
        self, since: datetime, *, sender: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[SubmissionRow]:
        """Submissions accepted since `since`, newest first (see reads.recent_submissions)."""
        return await self._state.read(
            partial(reads.recent_submissions, since=since, sender=sender, status=status, limit=limit)
        )

    # -- sending -----------------------------------------------------------

    async def make_all_due(self) -> int:
        """At worker start: everything spooled is due now, what a dead worker had in flight
        included (a restart is also how an operator says "try again now")."""
        return await self._local.write(spool_writes.make_all_due)

    async def due(self, now_epoch: float, limit: int, *, exclude: Collection[str] = ()) -> list[SpoolItem]:
        """Up to `limit` spooled messages due now, oldest first, not in `exclude`.

        A read, not a lease: the one worker that sends a data dir (worker.lock) keeps
        what it has in flight in memory; a message of a paused class (as the local
        file, or its mirror of a shared state, has it) waits.
        """
        return await self._local.read(partial(reads.due, now_epoch=now_epoch, limit=limit, exclude=exclude))

    async def next_due(self) -> float | None:
        return await self._local.read(reads.next_due)

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
        to the recipients in the same transaction. Group-committed like accepts, so
        the sender's concurrent calls share transactions.
        """
        outcome = spool_writes.Outcome(
            submission_id, tuple(addresses), status, now, ses_message_id, detail, tuple(notices)
        )
        if self.shared:
            await self._local.write_batched(outbox.record_outcomes_local, outcome)
            self._outbox_written()
            return
        await self._local.write_batched(spool_writes.record_outcomes, outcome)

    async def defer(self, submission_id: str, *, next_attempt_at: float, error: str) -> None:
        await self._local.write(
            partial(
                spool_writes.defer, submission_id=submission_id, next_attempt_at=next_attempt_at, error=error
            )
        )

    async def finish(self, submission_id: str) -> None:
        """Drop the message bytes once no recipient is left queued."""
        await self._local.write(partial(spool_writes.finish, submission_id=submission_id))

    async def last_sent_at(self) -> datetime | None:
        """When SES last accepted a message from this relay (any process's sender)."""
        return await self._local.read(reads.last_sent_at)

    async def spool_stats(self) -> tuple[int, float | None]:
        """(messages spooled, epoch time of the oldest)."""
        return await self._local.read(reads.spool_stats)

    # -- the outbox (a shared state only) ---------------------------------------

    def _outbox_written(self) -> None:
        if self.outbox_written is not None:
            self.outbox_written()

    async def ship_outbox(
        self, *, max_rows: int = outbox.SHIP_ROWS, max_addresses: int = outbox.SHIP_ADDRESSES
    ) -> outbox.Shipped:
        """Apply the oldest outbox rows to the shared state in one transaction, then delete them here.

        StoreError when either side fails; the rows then stay, to be shipped again
        (applying a row twice changes nothing). One host's shipper at a time (the
        worker's lock): two would ship the same rows, harmlessly but for nothing.
        """
        if not self.shared:
            return outbox.Shipped(0, False)
        waiting = await self._local.read(partial(outbox.pending, limit=max_rows))
        rows = outbox.batch(waiting, max_addresses)
        if not rows:
            return outbox.Shipped(0, False)
        await self._state.write(partial(outbox.ship, host_id=self.host_id, rows=rows))
        await self._local.write(partial(outbox.forget, first=rows[0].row.id, last=rows[-1].row.id))
        return outbox.Shipped(len(rows), len(rows) < len(waiting) or len(waiting) == max_rows)

    async def outbox_backlog(self) -> tuple[int, float | None]:
        """(outbox rows not shipped yet, epoch time of the oldest): (0, None) without a shared state."""
        return await self._local.read(outbox.backlog)

    async def prune_shipped(self, before: datetime, limit: int) -> int:
        """Drop up to `limit` local submissions PostgreSQL keeps (outbox.prune_shipped); how many."""
        if not self.shared:
            return 0  # the local file is the record
        return await self._local.write(partial(outbox.prune_shipped, before=before, limit=limit))


def _feedback(db: Db, *, fn: Callable[[FeedbackTx], T], now: datetime) -> T:
    """`fn` on the batch's FeedbackTx, then what the FeedbackTx held back."""
    tx = FeedbackTx(db, now)
    result = fn(tx)
    tx.finish()
    return result
