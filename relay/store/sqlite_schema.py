"""The SQLite schema: numbered migrations, each run once, in order, with its version bump.

Never edit a released migration; add the next number. relay/store/sqlite.py runs
them when it opens the file.
"""

from __future__ import annotations

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
    # 5: the spool's lease column goes (the one sender keeps what it has in flight in
    # memory); recipients keep their envelope order in a column of their own, so that no
    # query needs SQLite's rowid (existing rows are numbered in their rowid order).
    """
    ALTER TABLE spool DROP COLUMN lease_until;
    ALTER TABLE recipients ADD COLUMN ordinal INTEGER NOT NULL DEFAULT 0;
    UPDATE recipients SET ordinal = rowid - (
        SELECT min(r.rowid) FROM recipients r WHERE r.submission_id = recipients.submission_id
    );
    """,
    # 6: the history of suppression entries: one row for every change (created, renewed,
    # raised, extended, restated, cleared), with the entry as the change left it and what
    # made it (an SES event by id, or an admin and their words). Entries already on file
    # get one `on-file` row each, whose source is read from the audit log's latest word
    # on them (an add, an import, a pull from SES's list), else an SES event.
    """
    CREATE TABLE suppression_history (
        id              INTEGER PRIMARY KEY,
        address         TEXT NOT NULL,
        class           TEXT NOT NULL,
        at              TEXT NOT NULL,
        change          TEXT NOT NULL,
        source          TEXT NOT NULL,
        actor           TEXT NOT NULL,
        level           INTEGER NOT NULL,
        cause           TEXT NOT NULL,
        reason          TEXT NOT NULL,
        expires_at      TEXT,
        note            TEXT,
        event_id        INTEGER,
        feedback_id     TEXT,
        ses_message_id  TEXT,
        refused_count   INTEGER NOT NULL DEFAULT 0,
        last_refused_at TEXT,
        window_seconds  INTEGER
    );
    CREATE INDEX suppression_history_by_address ON suppression_history(address, id);
    CREATE INDEX suppression_history_by_change ON suppression_history(change, at);
    INSERT INTO suppression_history (
        address, class, at, change, source, actor, level, cause, reason, expires_at, note,
        feedback_id, ses_message_id, refused_count, last_refused_at
    )
    SELECT s.address, s.class, s.updated_at, 'on-file',
        CASE
            WHEN a.action = 'sync-ses-pull' THEN 'ses-list'
            WHEN a.action = 'import' AND a.detail LIKE '%, SES account-level list)' THEN 'ses-list'
            WHEN a.action = 'import' THEN 'import'
            WHEN a.action = 'add' THEN 'admin'
            ELSE 'event'
        END,
        CASE WHEN a.action IN ('add', 'import', 'sync-ses-pull') THEN a.actor ELSE 'feedback' END,
        s.level, s.cause, s.reason, s.expires_at, 'on file when the history began',
        s.feedback_id, s.ses_message_id, s.refused_count, s.last_refused_at
    FROM suppressions s
    LEFT JOIN audit a ON a.id = (
        SELECT max(b.id) FROM audit b WHERE b.address = s.address AND b.class = s.class
        AND b.action IN ('add', 'import', 'sync-ses-pull', 'clear')
    )
    ORDER BY s.updated_at, s.address, s.class;
    """,
    # 7: with the state in PostgreSQL, `suppressions` and `class_state` here are this host's
    # mirror of it (relay/store/mirror.py); this row says how far the mirror has caught up:
    # the last change applied (NULL while a full copy has not finished) and when it last
    # held everything the shared state had, and which shared state it mirrors.
    """
    CREATE TABLE mirror_state (
        id        INTEGER PRIMARY KEY CHECK (id = 1),
        source    TEXT NOT NULL,
        last_seq  INTEGER,
        synced_at TEXT
    );
    """,
    # 8: the outbox of a host whose state is shared (PostgreSQL): what its accepts, outcomes
    # and refusal counts wrote locally, kept until the shared state has applied it. Ids never
    # repeat (AUTOINCREMENT), so that the shared state can tell a row it has counted already.
    """
    CREATE TABLE outbox (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        kind          TEXT NOT NULL,
        submission_id TEXT,
        body          TEXT NOT NULL,
        created_at    REAL NOT NULL
    );
    CREATE INDEX outbox_by_submission ON outbox(submission_id);
    """,
)
