"""The store: every line of SQL in ses-relay lives in this package.

- records.py: the records callers hand in and get back, and StoreError;
- store.py: `Store`, the async facade callers use;
- reads.py, writes.py, spool_writes.py: every read and write as a plain function of
  a connection, in SQL that SQLite and PostgreSQL both run (spool_writes.py: the
  intake's and the sender's, whole or in their shared and local halves);
- backend.py: the connection wrapper and backend protocols between them;
- sqlite.py, sqlite_schema.py: the SQLite backend (commit thread, group commit,
  reader, RCPT lookups) and its numbered migrations;
- postgres.py, pg_schema.py: the PostgreSQL backend of a shared state (a connection
  pool, advisory locks) and its migrations (the change log, notifications, leases);
- shared.py: the writes only a shared state has (notice leases);
- mirror.py: each host's local copy of a shared state's suppressions and class
  pauses (what its intake checks): reads of PostgreSQL, writes of the local file.
- feedback_tx.py: one feedback batch's unit of work (writes.py's writes, held back
  so that a batch costs few round trips);
- places.py: where a Store keeps things, seen from outside one (state check's probe,
  this host's id in a shared state, the missing spool of a state-only Store);
- outbox.py: with a shared state, what this host committed locally and PostgreSQL has
  yet to hear, and how a batch of it is applied there.
"""

from relay.store.feedback_tx import FeedbackTx
from relay.store.places import probe_state
from relay.store.records import (
    AuditRow,
    ClassState,
    DeadLetter,
    EventRecord,
    LoggedEvent,
    MirrorProbe,
    NewRecipient,
    NewSubmission,
    NoticeRecord,
    NoticeRow,
    RecipientContext,
    RecipientRow,
    ReviewItem,
    SpoolItem,
    StateProbe,
    StoreError,
    SubmissionRow,
    UnmatchedEvent,
)
from relay.store.store import Store
from relay.suppression import ALL

__all__ = [
    "ALL",
    "AuditRow",
    "ClassState",
    "DeadLetter",
    "EventRecord",
    "FeedbackTx",
    "LoggedEvent",
    "MirrorProbe",
    "NewRecipient",
    "NewSubmission",
    "NoticeRecord",
    "NoticeRow",
    "RecipientContext",
    "RecipientRow",
    "ReviewItem",
    "SpoolItem",
    "StateProbe",
    "Store",
    "StoreError",
    "SubmissionRow",
    "UnmatchedEvent",
    "probe_state",
]
