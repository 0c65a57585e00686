"""What callers hand the store and get back: plain frozen records, no SQL, no backend.

Every backend decodes its rows into these, so a caller cannot tell which one holds
the data. `klass` is the message class (`class` is a keyword).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from datetime import datetime


class StoreError(RuntimeError):
    """The store could not do what was asked (disk full, read-only, locked too long).

    The SMTP intake turns it into `451 4.3.0`; nothing was written.
    """


@dataclass(frozen=True)
class NewRecipient:
    address: str
    status: str  # relay.vocabulary.START: queued or suppressed
    detail: str | None = None


@dataclass(frozen=True)
class Submission:
    """What the intake decided about a message: sender, class, SES settings, header facts."""

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


@dataclass(frozen=True)
class NewSubmission(Submission):
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
class SubmissionRow(Submission):
    created_at: datetime
    recipients: tuple[RecipientRow, ...]
    client_ip: str | None = None
    auth_user: str | None = None


@dataclass(frozen=True)
class SpoolItem:
    """A spooled message due for sending; `pending` are recipients still queued."""

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
class SesVerdict:
    """What SES said about one recipient, as an event logs it and a notice repeats it.

    Keyword-only, so that the records built on it keep their own positional fields.
    """

    _: KW_ONLY
    klass: str | None = None
    status: str | None = None  # the DSN status code, e.g. 5.1.1
    diagnostic: str | None = None
    bounce_type: str | None = None
    bounce_subtype: str | None = None


@dataclass(frozen=True)
class EventRecord(SesVerdict):
    """One feedback event as the log keeps it (one per recipient)."""

    dedupe_key: str
    kind: str
    ses_type: str
    recipient: str | None
    ses_message_id: str
    occurred_at: datetime
    raw: str
    submission_id: str | None = None
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
class NoticeRecord(SesVerdict):
    """A notice owed to a sender; at most one per dedupe_key (submission, recipient, reason)."""

    dedupe_key: str
    reason: str
    recipient: str
    sender: str
    submission_id: str | None = None
    ses_message_id: str | None = None
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


@dataclass(frozen=True)
class ClassState:
    """A class's pause, as the guard or an admin last set it (the class is the key)."""

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


OUTBOX_STUCK_AFTER = 300.0  # seconds: an outbox row this old means shipping has stopped


@dataclass(frozen=True)
class MirrorProbe:
    """This data dir's mirror of a shared state, as `ses-relay state check` finds it."""

    max_age_seconds: float  # [state] mirror_max_age
    synced_at: datetime | None = None  # when it last held everything (written at most every 10 s)
    last_seq: int | None = None  # the last change applied
    behind: int | None = None  # changes not applied yet; None: not known (unreachable) or a full copy due
    lag_seconds: float | None = None  # how far behind: the oldest change not applied, else since synced
    note: str = ""

    @property
    def problems(self) -> list[str]:
        if self.synced_at is None or self.last_seq is None:
            return [f"this data dir's mirror of the shared state is not synced ({self.note or 'never'}): "
                    "serve copies it at start"]  # fmt: skip
        if self.lag_seconds is not None and self.lag_seconds > self.max_age_seconds:
            return [
                f"this data dir's mirror is {self.lag_seconds:.0f} s behind the shared state "
                f"(over [state] mirror_max_age {self.max_age_seconds:.0f} s): is serve running?"
            ]
        return []


@dataclass(frozen=True)
class StateProbe:
    """What `ses-relay state check` found where the state is kept, without changing anything."""

    backend: str  # "sqlite" or "postgresql"
    where: str  # the file, or the URL without its password
    expected_schema_version: int  # the one this ses-relay brings
    reachable: bool
    schema_version: int | None = None  # 0: no ses-relay schema there yet
    error: str | None = None
    server_version: str | None = None
    connect_ms: float | None = None
    mirror: MirrorProbe | None = None  # a shared state's mirror in this data dir, when there is one
    # With a shared state: this data dir's outbox (None when it has no store file)
    outbox_backlog: int | None = None
    outbox_oldest_age_seconds: float | None = None

    @property
    def problems(self) -> list[str]:
        found = self._outbox_problems() + (self.mirror.problems if self.mirror is not None else [])
        if not self.reachable:
            return [f"cannot open {self.where}: {self.error}", *found]
        return self._schema_problems() + found

    def _outbox_problems(self) -> list[str]:
        age = self.outbox_oldest_age_seconds
        if not self.outbox_backlog or age is None or age <= OUTBOX_STUCK_AFTER:
            return []
        return [
            f"{self.outbox_backlog} outbox row(s) not shipped to the shared state, the oldest {age:.0f} s "
            f"old (over {OUTBOX_STUCK_AFTER:.0f} s): PostgreSQL unreachable from this host's worker, "
            "or the worker not running"
        ]

    def _schema_problems(self) -> list[str]:
        if not self.schema_version:
            return ["no ses-relay schema there yet: `ses-relay serve` or `worker` creates it at start"]
        if self.schema_version < self.expected_schema_version:
            return [
                f"schema version {self.schema_version} is behind this ses-relay's "
                f"{self.expected_schema_version}: `serve` or `worker` migrates it at start"
            ]
        if self.schema_version > self.expected_schema_version:
            return [
                f"schema version {self.schema_version} is newer than this ses-relay's "
                f"{self.expected_schema_version}: upgrade ses-relay"
            ]
        return []
