"""Putting a message the relay itself wrote (a notice, an alert, a report) on the spool.

Such mail then goes out through the same durable path as client mail: DKIM, SES,
retries. It is refused nothing at RCPT (there is no SMTP session), so callers
must only address people who asked for it: senders, admins, report readers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from relay import headers as hdr
from relay.config import Config
from relay.store import NewRecipient, NewSubmission, Store
from relay.timeutil import new_id, utcnow
from relay.vocabulary import Status


async def spool_message(
    store: Store,
    config: Config,
    raw: bytes,
    source: str,
    recipients: Sequence[str],
    *,
    origin: str,
    klass: str | None = None,
) -> str:
    """Commit `raw` for sending in the default class; returns the submission id.

    `origin` ("notice", "alert", "report") is recorded as the class source, so
    `submission show` tells the relay's own mail from clients' mail.
    """
    now = utcnow()
    msg = hdr.parse_raw(raw)
    klass = klass or config.default_class
    sub = NewSubmission(
        id=new_id(now),
        mail_from=source,
        klass=klass,
        class_source=origin,
        configuration_set=config.classes[klass].configuration_set,
        tags=(),
        header_from=hdr.first(msg, "From"),
        subject=hdr.decoded(hdr.first(msg, "Subject")),  # as the intake stores a client's
        message_id=hdr.first(msg, "Message-ID"),
        headers=hdr.header_text(raw),
        size=len(raw),
        client_ip=None,
        auth_user=None,
        created_at=now,
        recipients=tuple(NewRecipient(r, Status.QUEUED) for r in dict.fromkeys(recipients)),
    )
    await store.accept(sub, raw, time.time())
    return sub.id
