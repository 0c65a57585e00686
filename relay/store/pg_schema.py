"""The PostgreSQL schema of the shared state: numbered migrations, each run once, in order.

Never edit a released migration; add the next number. relay/store/postgres.py runs
them at open, in one transaction under an advisory lock, so that several relays
starting at once against a new database do not race (the first migrates, the others
wait and find it done).

The tables are the state half of relay/store/sqlite_schema.py (the spool stays in
each host's SQLite file) with PostgreSQL's types: times are `timestamptz`, ids
`bigint generated always as identity`, flags `boolean`. Beside them:

- `suppression_changes`: one row per change of a suppression (insert, delete, or an
  update of anything but the refusal counters), written by a trigger, so that each
  host's local copy can catch up from the last `seq` it applied. The trigger runs
  at commit (a deferred constraint trigger) and takes CHANGE_LOG_LOCK before it draws
  its `seq`: suppression-changing transactions line up for their last moments only,
  and `seq` order is commit order, so a reader that has seen `seq` N has seen every
  change before it. Each such commit sends NOTIFY `ses_relay_state` 'suppressions'
  (one per transaction: identical payloads are merged), and a change of
  `class_state` sends 'class_state'.
- `notices.lease_owner`, `lease_until`: the host delivering a notice, until when.
- `hosts`: one row per relay host, its heartbeat and whether it has mail to send.
- `outbox_shipped`: which of a host's outbox rows PostgreSQL has applied already, so
  that shipping one again changes nothing.
- `origin` (audit, review, dead_letters, transient_bounces, suppression_history): where
  a row copied from a one-host store came from (`ses-relay state migrate`), as
  `<host id>:<row id there>`, unique, so that copying again adds nothing. Rows the
  relays write themselves leave it empty.
"""

from __future__ import annotations

NOTIFY_CHANNEL = "ses_relay_state"
NOTIFY_SUPPRESSIONS = "suppressions"
NOTIFY_CLASS_STATE = "class_state"
# Advisory locks of the two-int form, a key space apart from the one-bigint form that
# per-address locks use (hashtextextended of the address).
LOCK_CLASS = 0x5E5E  # "ses-relay"
MIGRATION_LOCK = (LOCK_CLASS, 1)
CHANGE_LOG_LOCK = (LOCK_CLASS, 2)

MIGRATIONS: tuple[str, ...] = (
    # 1: the shared state
    f"""
    CREATE TABLE submissions (
        id                text PRIMARY KEY,
        mail_from         text NOT NULL,
        class             text NOT NULL,
        class_source      text NOT NULL,
        configuration_set text,
        tags              text NOT NULL DEFAULT '[]',
        header_from       text,
        subject           text,
        message_id        text,
        headers           text NOT NULL DEFAULT '',
        size              integer NOT NULL,
        client_ip         text,
        auth_user         text,
        created_at        timestamptz NOT NULL
    );
    CREATE TABLE recipients (
        submission_id  text NOT NULL REFERENCES submissions(id),
        address        text NOT NULL,
        status         text NOT NULL,
        detail         text,
        ses_message_id text,
        updated_at     timestamptz NOT NULL,
        ordinal        integer NOT NULL DEFAULT 0,
        PRIMARY KEY (submission_id, address)
    );
    CREATE INDEX recipients_by_ses_id ON recipients(ses_message_id);
    CREATE INDEX recipients_by_address ON recipients(address);

    CREATE TABLE suppressions (
        address         text NOT NULL,
        class           text NOT NULL,
        level           integer NOT NULL,
        cause           text NOT NULL,
        reason          text NOT NULL,
        feedback_id     text,
        ses_message_id  text,
        created_at      timestamptz NOT NULL,
        updated_at      timestamptz NOT NULL,
        expires_at      timestamptz,
        refused_count   integer NOT NULL DEFAULT 0,
        last_refused_at timestamptz,
        PRIMARY KEY (address, class)
    );
    CREATE TABLE suppression_changes (
        seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        address text NOT NULL,
        class   text NOT NULL,
        at      timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX suppression_changes_by_time ON suppression_changes(at);

    CREATE FUNCTION ses_relay_suppression_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock({CHANGE_LOG_LOCK[0]}, {CHANGE_LOG_LOCK[1]});
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO suppression_changes (address, class) VALUES (OLD.address, OLD.class);
        END IF;
        IF TG_OP = 'INSERT'
           OR (TG_OP = 'UPDATE' AND (NEW.address, NEW.class) IS DISTINCT FROM (OLD.address, OLD.class)) THEN
            INSERT INTO suppression_changes (address, class) VALUES (NEW.address, NEW.class);
        END IF;
        PERFORM pg_notify('{NOTIFY_CHANNEL}', '{NOTIFY_SUPPRESSIONS}');
        RETURN NULL;
    END $$;
    CREATE CONSTRAINT TRIGGER suppressions_added_or_removed AFTER INSERT OR DELETE ON suppressions
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ses_relay_suppression_changed();
    CREATE CONSTRAINT TRIGGER suppressions_changed AFTER UPDATE ON suppressions
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
        WHEN ((OLD.address, OLD.class, OLD.level, OLD.cause, OLD.reason, OLD.feedback_id,
               OLD.ses_message_id, OLD.created_at, OLD.updated_at, OLD.expires_at)
              IS DISTINCT FROM
              (NEW.address, NEW.class, NEW.level, NEW.cause, NEW.reason, NEW.feedback_id,
               NEW.ses_message_id, NEW.created_at, NEW.updated_at, NEW.expires_at))
        EXECUTE FUNCTION ses_relay_suppression_changed();

    CREATE TABLE suppression_history (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        address         text NOT NULL,
        class           text NOT NULL,
        at              timestamptz NOT NULL,
        change          text NOT NULL,
        source          text NOT NULL,
        actor           text NOT NULL,
        level           integer NOT NULL,
        cause           text NOT NULL,
        reason          text NOT NULL,
        expires_at      timestamptz,
        note            text,
        event_id        bigint,
        feedback_id     text,
        ses_message_id  text,
        refused_count   integer NOT NULL DEFAULT 0,
        last_refused_at timestamptz,
        window_seconds  integer
    );
    CREATE INDEX suppression_history_by_address ON suppression_history(address, id);
    CREATE INDEX suppression_history_by_change ON suppression_history(change, at);

    CREATE TABLE audit (
        id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at      timestamptz NOT NULL,
        actor   text NOT NULL,
        action  text NOT NULL,
        address text,
        class   text,
        detail  text NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_by_address ON audit(address);

    CREATE TABLE events (
        id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        dedupe_key        text NOT NULL UNIQUE,
        kind              text NOT NULL,
        ses_type          text NOT NULL,
        recipient         text,
        ses_message_id    text NOT NULL,
        submission_id     text,
        class             text,
        occurred_at       timestamptz NOT NULL,
        received_at       timestamptz NOT NULL,
        bounce_type       text,
        bounce_subtype    text,
        diagnostic        text,
        status            text,
        complaint_type    text,
        feedback_id       text,
        source_ip         text,
        from_address      text,
        subject           text,
        configuration_set text,
        raw               text NOT NULL
    );
    CREATE INDEX events_by_recipient ON events(recipient, occurred_at);
    CREATE INDEX events_by_time ON events(occurred_at);
    CREATE INDEX events_by_ses_id ON events(ses_message_id);

    CREATE TABLE transient_bounces (
        id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        address text NOT NULL,
        at      timestamptz NOT NULL
    );
    CREATE INDEX transient_by_address ON transient_bounces(address, at);

    CREATE TABLE dead_letters (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        received_at timestamptz NOT NULL,
        source      text NOT NULL,
        body        text NOT NULL,
        error       text NOT NULL
    );
    CREATE TABLE review (
        id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        created_at     timestamptz NOT NULL,
        recipient      text,
        class          text,
        reason         text NOT NULL,
        ses_message_id text,
        event_id       bigint REFERENCES events(id)
    );
    CREATE TABLE notices (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        dedupe_key      text NOT NULL UNIQUE,
        created_at      timestamptz NOT NULL,
        reason          text NOT NULL,
        recipient       text NOT NULL,
        sender          text NOT NULL,
        submission_id   text,
        ses_message_id  text,
        class           text,
        status          text,
        diagnostic      text,
        bounce_type     text,
        bounce_subtype  text,
        extra           text,
        state           text NOT NULL DEFAULT 'pending',
        attempts        integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL,
        last_error      text,
        delivered_at    timestamptz,
        lease_owner     text,
        lease_until     timestamptz
    );
    CREATE INDEX notices_pending ON notices(state, next_attempt_at);

    CREATE TABLE class_state (
        class      text PRIMARY KEY,
        paused     boolean NOT NULL DEFAULT false,
        reason     text NOT NULL DEFAULT '',
        changed_at timestamptz NOT NULL,
        changed_by text NOT NULL
    );
    CREATE FUNCTION ses_relay_class_state_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{NOTIFY_CHANNEL}', '{NOTIFY_CLASS_STATE}');
        RETURN NULL;
    END $$;
    CREATE TRIGGER class_state_changed AFTER INSERT OR UPDATE OR DELETE ON class_state
        FOR EACH STATEMENT EXECUTE FUNCTION ses_relay_class_state_changed();

    CREATE TABLE unmatched_events (
        event_id       bigint PRIMARY KEY REFERENCES events(id),
        ses_message_id text NOT NULL,
        recipient      text NOT NULL,
        status         text,
        detail         text,
        notice         text,
        notice_extra   text,
        received_at    timestamptz NOT NULL
    );
    CREATE INDEX unmatched_by_message ON unmatched_events(ses_message_id, recipient);
    CREATE INDEX unmatched_by_time ON unmatched_events(received_at);

    CREATE TABLE hosts (
        host_id    text PRIMARY KEY,
        hostname   text NOT NULL,
        data_dir   text NOT NULL,
        started_at timestamptz NOT NULL,
        last_seen  timestamptz NOT NULL,
        sending    boolean NOT NULL DEFAULT false
    );
    CREATE TABLE outbox_shipped (
        host_id    text NOT NULL,
        outbox_id  bigint NOT NULL,
        shipped_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (host_id, outbox_id)
    );
    CREATE INDEX outbox_shipped_by_time ON outbox_shipped(shipped_at);
    """,  # noqa: S608 - constants of this module only
    # 2: where the rows copied from a one-host store came from (relay/store/pg_copy.py)
    """
    ALTER TABLE audit ADD COLUMN origin text;
    CREATE UNIQUE INDEX audit_by_origin ON audit(origin);
    ALTER TABLE review ADD COLUMN origin text;
    CREATE UNIQUE INDEX review_by_origin ON review(origin);
    ALTER TABLE dead_letters ADD COLUMN origin text;
    CREATE UNIQUE INDEX dead_letters_by_origin ON dead_letters(origin);
    ALTER TABLE transient_bounces ADD COLUMN origin text;
    CREATE UNIQUE INDEX transient_bounces_by_origin ON transient_bounces(origin);
    ALTER TABLE suppression_history ADD COLUMN origin text;
    CREATE UNIQUE INDEX suppression_history_by_origin ON suppression_history(origin);
    """,
)
