"""Events that arrive before the sender has recorded their SES message id.

The sender records SES's message id after the SES call returns; SES (and the sandbox)
may publish the Delivery or Bounce first, and a consumer on another host may apply it
first. Whatever the order of the two commits, the recipient's final status must be
the same, and a notice the event owes its sender must still be written and delivered.

Deterministic: each test accepts a submission, applies the events through the real
feedback path while the recipients are still queued, then records the outcome as the
sender does, against a real Store file. The burst through `serve --sandbox`, where the
order is left to chance, is in tests/system/test_late_events.py.
"""

from __future__ import annotations

import asyncio
import mailbox
import random
from datetime import timedelta
from typing import Any

from feedback.apply import UNMATCHED_KEEP
from feedback.notices.notifier import Notifier
from relay.config import Config
from relay.store import NewRecipient, NewSubmission, Store
from relay.timeutil import new_id, utcnow
from tests.support.sns_sqs import bounce, complaint, delivery, per_message, ses_mail
from tests.support.stores import Place, apply, in_store, shipped, status_of

CONFIG = Config()
SENDER = "app@example.com"


async def accept(store: Store, recipients: list[str], *, mail_from: str = SENDER, klass: str = "bulk") -> str:
    """A submission the intake accepted: recipients queued, no SES id yet."""
    now = utcnow()
    sid = new_id(now)
    sub = NewSubmission(
        id=sid, mail_from=mail_from, klass=klass, class_source="header", configuration_set="bulk",
        tags=(), header_from=f"App <{SENDER}>", subject="late", message_id=f"<{sid}@example.com>",
        headers=f"From: App <{SENDER}>\r\nSubject: late\r\nMessage-ID: <{sid}@example.com>\r\n",
        size=100, client_ip="127.0.0.1", auth_user=None, created_at=now,
        recipients=tuple(NewRecipient(r, "queued") for r in recipients),
    )  # fmt: skip
    await store.accept(sub, b"Subject: late\r\n\r\nhi\r\n", now.timestamp())
    await shipped(store)  # with a shared state, the accept is in PostgreSQL once shipped
    return sid


def mail(ses_id: str, rcpts: list[str], sid: str, *, tags: bool = True) -> dict[str, Any]:
    return ses_mail(ses_id, rcpts, submission_id=sid, klass="bulk", tags=tags)


async def sent(store: Store, sid: str, rcpts: list[str], ses_id: str) -> None:
    """What the sender does once SES has answered: record the id for the chunk (and ship it)."""
    await store.record_outcome(sid, rcpts, "sent", now=utcnow(), ses_message_id=ses_id)
    await shipped(store)


def held(place: Place) -> list[Any]:
    return place.rows("SELECT * FROM unmatched_events ORDER BY event_id")


def test_a_delivery_applied_before_the_id_is_recorded_ends_delivered(place: Place) -> None:
    addr, ses_id = "late@example.org", "0100late-0001-000000"

    async def scenario(store: Store) -> None:
        sid = await accept(store, [addr])
        result = await apply(store, delivery(mail(ses_id, [addr], sid), [addr]), now=utcnow())
        assert result.events == 1
        assert await status_of(store, sid, addr) == "queued"  # nothing to match yet
        assert len(held(place)) == 1
        await sent(store, sid, [addr], ses_id)
        assert await status_of(store, sid, addr) == "delivered"
        sub = await store.submission(sid)
        assert sub is not None and sub.recipients[0].ses_message_id == ses_id
        assert held(place) == []
        [logged] = await store.events(address=addr)
        assert (logged.record.submission_id, logged.record.klass) == (sid, "bulk")

    in_store(place, scenario)


def test_the_usual_order_holds_nothing(place: Place) -> None:
    addr, ses_id = "usual@example.org", "0100late-0002-000000"

    async def scenario(store: Store) -> None:
        sid = await accept(store, [addr])
        await sent(store, sid, [addr], ses_id)
        await apply(store, delivery(mail(ses_id, [addr], sid), [addr]), now=utcnow())
        assert await status_of(store, sid, addr) == "delivered"
        assert held(place) == []

    in_store(place, scenario)


def test_a_bounce_before_the_id_still_owes_and_delivers_its_notice(place: Place) -> None:
    """The suppression happens at once; status and notice wait for the id, then both land."""
    addr, ses_id = "gone@example.org", "0100late-0003-000000"
    data_dir = place.data_dir / "data"

    async def scenario(store: Store) -> None:
        sid = await accept(store, [addr, "ok@example.org"])
        doc = bounce(mail(ses_id, [addr], sid, tags=False), [addr], "Permanent", "General")  # no tags
        result = await apply(store, doc, now=utcnow())
        assert (result.suppressions, result.notices) == (1, 0)
        assert await store.notices() == []
        assert [e.klass for e in await store.suppressions_of(addr)] == ["*"]
        # A redelivery before the id lands changes nothing.
        assert (await apply(store, doc, now=utcnow())).duplicates == 1
        assert len(held(place)) == 1

        await sent(store, sid, [addr, "ok@example.org"], ses_id)
        assert await status_of(store, sid, addr) == "bounced"
        assert await status_of(store, sid, "ok@example.org") == "sent"
        [notice] = await store.notices()
        rec = notice.record
        assert (rec.reason, rec.recipient, rec.sender, rec.submission_id) == (
            "permanent_bounce", addr, SENDER, sid,
        )  # fmt: skip
        assert (rec.klass, rec.ses_message_id, rec.bounce_type, rec.bounce_subtype) == (
            "bulk", ses_id, "Permanent", "General",
        )  # fmt: skip
        assert rec.status == "5.1.1" and "User unknown" in (rec.diagnostic or "")
        assert rec.extra and "suppressed" in rec.extra  # the note written when the bounce was applied
        assert notice.original_subject == "late"

        # A redelivery after the match: still one notice, still bounced.
        assert (await apply(store, doc, now=utcnow())).duplicates == 1
        assert len(await store.notices()) == 1

        # And the notifier delivers it to the sender's mailbox like any other.
        delivered = await Notifier(store, CONFIG, data_dir, hostname="relay.test").deliver_due()
        assert delivered == 1
        [row] = await store.notices()
        assert row.state == "sent"

    in_store(place, scenario)
    [copy] = list(mailbox.Maildir(data_dir / "mailboxes" / SENDER, create=False))
    assert copy["From"] == "Mail Delivery System <MAILER-DAEMON@relay.test>"
    assert addr in copy.as_string()


def test_statuses_only_move_forward_whatever_the_order(place: Place) -> None:
    a, b, c = "a@example.org", "b@example.org", "c@example.org"
    ses_id = "0100late-0004-000000"

    async def scenario(store: Store) -> None:
        sid = await accept(store, [a, b, c])
        m = mail(ses_id, [a, b, c], sid)
        now = utcnow()
        await apply(store, bounce(m, [a], "Permanent", "General"), delivery(m, [a]), now=now)  # b. then d.
        await apply(store, delivery(m, [b]), complaint(m, [b]), now=now)  # delivered, then complained
        await apply(store, per_message("Send", m), now=now)  # Send: "sent" for all three
        await sent(store, sid, [a, b, c], ses_id)
        assert [await status_of(store, sid, x) for x in (a, b, c)] == ["bounced", "complained", "sent"]
        sub = await store.submission(sid)
        assert sub is not None
        details = {r.address: r.detail for r in sub.recipients}
        assert details[a] is not None and details[a].startswith("Permanent/General")
        assert details[b] == "complaint: abuse"
        assert held(place) == []
        # A late Delivery for the bounced one, applied normally now, moves nothing back.
        await apply(store, delivery(m, [a], at=now + timedelta(minutes=5)), now=now)
        assert await status_of(store, sid, a) == "bounced"

    in_store(place, scenario)


def test_only_the_recipients_the_id_was_recorded_for_are_matched(place: Place) -> None:
    """Two SES calls (chunks) of one submission: each id settles its own recipients only."""
    first, second = "first@example.org", "second@example.org"

    async def scenario(store: Store) -> None:
        sid = await accept(store, [first, second])
        now = utcnow()
        # SES reports on `second` under chunk 1's id, which was never sent to it: held, unused.
        stray = delivery(mail("0100late-chunk1", [first, second], sid), [second])
        await apply(store, stray, delivery(mail("0100late-chunk2", [second], sid), [second]), now=now)
        await sent(store, sid, [first], "0100late-chunk1")
        assert await status_of(store, sid, first) == "sent"
        assert await status_of(store, sid, second) == "queued"
        await sent(store, sid, [second], "0100late-chunk2")
        assert await status_of(store, sid, second) == "delivered"
        assert [r["ses_message_id"] for r in held(place)] == ["0100late-chunk1"]

        # Events nobody claims are forgotten after UNMATCHED_KEEP (any later batch prunes them).
        await apply(store, now=now + UNMATCHED_KEEP - timedelta(minutes=1))
        assert len(held(place)) == 1
        await apply(store, now=now + UNMATCHED_KEEP + timedelta(minutes=1))
        assert held(place) == []

    in_store(place, scenario)


def test_a_null_sender_gets_its_status_but_no_notice(place: Place) -> None:
    addr, ses_id = "gone@example.net", "0100late-0005-000000"

    async def scenario(store: Store) -> None:
        sid = await accept(store, [addr], mail_from="")
        await apply(store, bounce(mail(ses_id, [addr], sid), [addr], "Permanent", "NoEmail"), now=utcnow())
        await sent(store, sid, [addr], ses_id)
        assert await status_of(store, sid, addr) == "bounced"
        assert await store.notices() == []

    in_store(place, scenario)


def test_a_failed_outcome_matches_nothing(place: Place) -> None:
    addr = "never@example.org"

    async def scenario(store: Store) -> None:
        sid = await accept(store, [addr])
        await apply(store, delivery(mail("0100late-0006", [addr], sid), [addr]), now=utcnow())
        await store.record_outcome(sid, [addr], "failed", now=utcnow(), detail="refused")
        await shipped(store)
        assert await status_of(store, sid, addr) == "failed"
        assert len(held(place)) == 1

    in_store(place, scenario)


def test_either_commit_order_under_concurrency_gives_the_same_statuses(place: Place) -> None:
    """Many submissions; outcomes and events committed from two tasks in random interleavings."""
    n = 200
    rng = random.Random(11)

    async def scenario(store: Store) -> None:
        subs = [(await accept(store, [f"r{i}@example.org"]), f"0100race-{i:04d}") for i in range(n)]
        kinds = [rng.choice(["delivery", "bounce", "complaint"]) for _ in range(n)]

        def event(i: int) -> dict[str, Any]:
            sid, ses_id = subs[i]
            m, rcpt = mail(ses_id, [f"r{i}@example.org"], sid), [f"r{i}@example.org"]
            return {"delivery": delivery, "complaint": complaint}.get(kinds[i], bounce)(m, rcpt)

        async def senders() -> None:
            for i in rng.sample(range(n), n):
                await sent(store, subs[i][0], [f"r{i}@example.org"], subs[i][1])
                await asyncio.sleep(0)

        async def consumer() -> None:
            order = rng.sample(range(n), n)
            for start in range(0, n, 7):
                await apply(store, *(event(i) for i in order[start : start + 7]), now=utcnow())

        await asyncio.gather(senders(), consumer())
        expected = {"delivery": "delivered", "bounce": "bounced", "complaint": "complained"}
        got = [await status_of(store, sid, f"r{i}@example.org") for i, (sid, _) in enumerate(subs)]
        assert got == [expected[k] for k in kinds]
        assert held(place) == []
        notices = await store.notices()
        assert sorted(n.record.recipient for n in notices) == sorted(
            f"r{i}@example.org" for i, k in enumerate(kinds) if k == "bounce"
        )

    in_store(place, scenario)
