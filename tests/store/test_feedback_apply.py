"""The suppression policy, row by row, as it ends up *stored*: apply_batch against a real Store.

tests/unit/test_policy.py table-tests the pure decisions; here the same rows go through
parsing, the store's history and merge rules and one transaction per batch, and the
assertions read back what an admin would see: suppression rows, statuses, the
events log, the review queue and the notices owed to senders.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relay.clearing import ClearRequest
from relay.store import NewRecipient, NewSubmission, Store
from relay.suppression import ALL, Cause, Level, Suppression
from relay.timeutil import new_id
from tests.support.sns_sqs import bounce, complaint, delivery, delivery_delay, per_message, ses_mail
from tests.support.stores import CONFIG, Place, apply, in_store, shipped, status_of

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
DMARC = (
    "smtp; 550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's "
    "DMARC policy. Please contact the administrator of example.com domain."
)


async def seed(
    store: Store,
    recipients: list[str],
    *,
    klass: str = "transactional",
    mail_from: str = "app@example.com",
    at: datetime = T0,
) -> tuple[str, str]:
    """A submission the relay accepted and SES took: returns (submission id, SES message id)."""
    sid = new_id(at)
    ses_id = f"0102018e{sid}-{len(recipients):04d}-000000"
    sub = NewSubmission(
        id=sid,
        mail_from=mail_from,
        klass=klass,
        class_source="header",
        configuration_set=CONFIG.classes[klass].configuration_set,
        tags=(),
        header_from="App <app@example.com>",
        subject="hello",
        message_id=f"<{sid}@example.com>",
        headers="",
        size=100,
        client_ip="127.0.0.1",
        auth_user=None,
        created_at=at,
        recipients=tuple(NewRecipient(r, "queued") for r in recipients),
    )
    await store.accept(sub, b"Subject: hello\r\n\r\nhi\r\n", at.timestamp())
    await store.record_outcome(sid, recipients, "sent", now=at, ses_message_id=ses_id)
    await shipped(store)
    return sid, ses_id


def mail_of(ses_id: str, rcpts: list[str], sid: str | None = None, klass: str | None = None, **kw: Any):
    return ses_mail(ses_id, rcpts, submission_id=sid, klass=klass, sent_at=kw.pop("sent_at", T0), **kw)


async def only(store: Store, address: str) -> Suppression:
    entries = await store.suppressions_of(address)
    assert len(entries) == 1, entries
    return entries[0]


# --------------------------------------------------------------------------- permanent bounces


@pytest.mark.parametrize("subtype", ["NoEmail", "Suppressed", "OnAccountSuppressionList"])
def test_permanent_noemail_like_bounces_suppress_hard_in_all_classes_forever(place: Place, subtype) -> None:
    addr = "gone@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr])
        now = T0 + timedelta(seconds=30)
        doc = bounce(mail_of(ses_id, [addr], sid, "transactional"), [addr], "Permanent", subtype, at=now)
        result = await apply(store, doc, now=now)
        assert (result.events, result.suppressions, result.notices) == (1, 1, 1)

        entry = await only(store, addr)
        assert (entry.klass, entry.level, entry.cause, entry.expires_at) == (
            ALL,
            Level.HARD,
            Cause.BOUNCE,
            None,
        )
        assert entry.reason.startswith(f"Permanent/{subtype}")
        assert entry.ses_message_id == ses_id
        assert entry.feedback_id == doc["bounce"]["feedbackId"]
        assert await status_of(store, sid, addr) == "bounced"

        [logged] = await store.events(address=addr)
        assert (logged.record.kind, logged.record.bounce_type, logged.record.bounce_subtype) == (
            "bounce",
            "Permanent",
            subtype,
        )
        assert (logged.record.submission_id, logged.record.klass) == (sid, "transactional")

    in_store(place, scenario)


def test_permanent_general_suppresses_hard_for_30_days(place: Place) -> None:
    addr = "moved@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr])
        now = T0 + timedelta(minutes=1)
        doc = bounce(mail_of(ses_id, [addr], sid), [addr], "Permanent", "General", at=now)
        await apply(store, doc, now=now + timedelta(minutes=3))  # applied a little later
        entry = await only(store, addr)
        assert (entry.klass, entry.level, entry.cause) == (ALL, Level.HARD, Cause.BOUNCE)
        assert entry.expires_at == now + timedelta(days=30)  # from the bounce, not from its arrival
        assert "5.1.1" in entry.reason

    in_store(place, scenario)


def test_sender_at_fault_bounce_goes_to_review_with_a_notice_and_no_suppression(place: Place) -> None:
    addr = "strict@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr], klass="list")
        doc = bounce(
            mail_of(ses_id, [addr], sid, "list"),
            [addr],
            "Permanent",
            "General",
            diagnostic=DMARC,
            status="5.7.26",
        )
        result = await apply(store, doc, now=T0)
        assert result.suppressions == 0
        assert await store.suppressions_of(addr) == []
        assert await status_of(store, sid, addr) == "bounced"
        [item] = await store.review_items()
        assert (item.recipient, item.klass, item.ses_message_id) == (addr, "list", ses_id)
        assert "sender at fault" in item.reason and "DMARC" in item.reason

    in_store(place, scenario)
    [notice] = place.rows("SELECT * FROM notices")
    assert (notice["reason"], notice["recipient"], notice["sender"]) == (
        "sender_at_fault",
        addr,
        "app@example.com",
    )


# --------------------------------------------------------------------------- transient bounces


@pytest.mark.parametrize("subtype", ["General", "MailboxFull"])
def test_transient_bounce_suppresses_soft_for_an_hour_without_notice(place: Place, subtype) -> None:
    addr = "full@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr])
        result = await apply(
            store, bounce(mail_of(ses_id, [addr], sid), [addr], "Transient", subtype, at=T0), now=T0
        )
        assert result.notices == 0
        entry = await only(store, addr)
        assert (entry.klass, entry.level, entry.expires_at) == (ALL, Level.SOFT, T0 + timedelta(hours=1))

    in_store(place, scenario)
    assert place.rows("SELECT * FROM notices") == []


async def transient_series(store: Store, addr: str, times: list[datetime]) -> Suppression:
    """One transient bounce per batch, each for its own message and applied when it happens."""
    for at in times:
        sid, ses_id = await seed(store, [addr], at=at - timedelta(minutes=5))
        doc = bounce(mail_of(ses_id, [addr], sid, sent_at=at), [addr], "Transient", "General", at=at)
        result = await apply(store, doc, now=at + timedelta(seconds=10))
        assert result.events == 1
    return await only(store, addr)


def spread(count: int, over: timedelta) -> list[datetime]:
    return [T0 + over * i / (count - 1) for i in range(count)]


def test_fifth_transient_bounce_within_24h_escalates_to_hard_for_7_days(place: Place) -> None:
    addr = "flaky@example.org"
    times = spread(5, timedelta(hours=23))

    async def scenario(store: Store) -> None:
        entry = await transient_series(store, addr, times)
        assert (entry.klass, entry.level, entry.cause) == (ALL, Level.HARD, Cause.BOUNCE)
        assert entry.expires_at == times[-1] + timedelta(days=7)  # from the fifth bounce
        assert entry.reason.startswith("5 transient bounces within 1d")

    in_store(place, scenario)
    notices = place.rows("SELECT reason, recipient FROM notices")
    assert [tuple(n) for n in notices] == [("soft_bounce_escalated", addr)]


def test_four_transient_bounces_within_24h_stay_soft(place: Place) -> None:
    addr = "flaky@example.org"
    times = spread(4, timedelta(hours=3))

    async def scenario(store: Store) -> None:
        entry = await transient_series(store, addr, times)
        assert entry.level is Level.SOFT
        assert entry.expires_at == times[-1] + timedelta(hours=1)

    in_store(place, scenario)
    assert place.rows("SELECT * FROM notices") == []


def test_five_transient_bounces_spread_over_25h_stay_soft(place: Place) -> None:
    addr = "flaky@example.org"
    times = spread(5, timedelta(hours=25))

    async def scenario(store: Store) -> None:
        entry = await transient_series(store, addr, times)
        assert entry.level is Level.SOFT
        assert entry.expires_at == times[-1] + timedelta(hours=1)

    in_store(place, scenario)


def test_manual_clear_resets_the_transient_history(place: Place) -> None:
    addr = "flaky@example.org"
    times = spread(5, timedelta(hours=4))

    async def scenario(store: Store) -> None:
        await transient_series(store, addr, times[:4])
        request = ClearRequest(addr, None, "test", "mailbox fixed")
        verdict = await store.clear_suppressions(request, times[3] + timedelta(minutes=1))
        assert [e.level for e in verdict.cleared] == [Level.SOFT]
        entry = await transient_series(store, addr, times[4:])
        assert entry.level is Level.SOFT  # without the clear this fifth bounce escalates (test above)
        assert [a.action for a in await store.audit_log(addr)] == ["clear"]

    in_store(place, scenario)


@pytest.mark.parametrize("subtype", ["MessageTooLarge", "ContentRejected", "AttachmentRejected"])
def test_message_at_fault_transient_bounce_suppresses_nothing_but_tells_the_sender(
    place: Place, subtype
) -> None:
    addr = "picky@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr])
        await apply(store, bounce(mail_of(ses_id, [addr], sid), [addr], "Transient", subtype), now=T0)
        assert await store.suppressions_of(addr) == []
        assert await status_of(store, sid, addr) == "bounced"

    in_store(place, scenario)
    [notice] = place.rows("SELECT reason FROM notices")
    expected = "message_too_large" if subtype == "MessageTooLarge" else "message_rejected_content"
    assert notice["reason"] == expected
    assert place.rows("SELECT * FROM transient_bounces") == []


def test_undetermined_bounce_lands_in_review_and_counts_as_transient(place: Place) -> None:
    addr = "unsure@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr])
        result = await apply(
            store, bounce(mail_of(ses_id, [addr], sid), [addr], "Undetermined", "Undetermined"), now=T0
        )
        assert (result.events, result.suppressions, result.notices) == (1, 0, 0)
        assert await store.suppressions_of(addr) == []
        [item] = await store.review_items()
        assert (item.recipient, item.ses_message_id) == (addr, ses_id)
        assert item.reason.startswith("undetermined bounce")
        assert await status_of(store, sid, addr) == "bounced"

    in_store(place, scenario)
    assert len(place.rows("SELECT * FROM transient_bounces WHERE address = ?", addr)) == 1


# --------------------------------------------------------------------------- complaints and unsubscribes


def test_complaint_on_a_bulk_submission_suppresses_class_bulk_only(place: Place) -> None:
    addr = "annoyed@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr], klass="bulk")
        # The tag says "transactional": the submission on file wins.
        doc = complaint(mail_of(ses_id, [addr], sid, "transactional"), [addr])
        result = await apply(store, doc, now=T0)
        assert result.notices == 0
        entry = await only(store, addr)
        assert (entry.klass, entry.level, entry.cause, entry.expires_at) == (
            "bulk",
            Level.PERMANENT,
            Cause.COMPLAINT,
            None,
        )
        assert entry.reason == "abuse"
        assert await status_of(store, sid, addr) == "complained"

    in_store(place, scenario)


def test_complaint_for_a_foreign_message_without_class_tag_suppresses_all_classes(place: Place) -> None:
    addr = "angry@example.org"

    async def scenario(store: Store) -> None:
        doc = complaint(ses_mail("0102018eforeign-0001", [addr], tags=False), [addr])
        assert "notificationType" in doc  # an identity notification: no tags at all
        result = await apply(store, doc, now=T0)
        assert (result.events, result.suppressions) == (1, 1)
        entry = await only(store, addr)
        assert (entry.klass, entry.level, entry.expires_at) == (ALL, Level.PERMANENT, None)
        [logged] = await store.events(address=addr)
        assert (logged.record.submission_id, logged.record.klass) == (None, None)

    in_store(place, scenario)


def test_complaint_for_a_foreign_message_tagged_with_a_configured_class_suppresses_that_class(
    place: Place,
) -> None:
    addr = "angry@example.org"

    async def scenario(store: Store) -> None:
        doc = complaint(ses_mail("0102018eforeign-0002", [addr], klass="list"), [addr])
        await apply(store, doc, now=T0)
        entry = await only(store, addr)
        assert (entry.klass, entry.level) == ("list", Level.PERMANENT)

    in_store(place, scenario)


def test_complaint_tagged_with_an_unconfigured_class_suppresses_all_classes(place: Place) -> None:
    """A class name the relay does not know would block nothing; the class is unknown, so `*`."""
    addr = "angry@example.org"

    async def scenario(store: Store) -> None:
        doc = complaint(ses_mail("0102018eforeign-0003", [addr], klass="promo"), [addr])
        await apply(store, doc, now=T0)
        entry = await only(store, addr)
        assert (entry.klass, entry.level) == (ALL, Level.PERMANENT)

    in_store(place, scenario)


def test_unsubscribe_suppresses_permanently_in_the_message_class(place: Place) -> None:
    addr = "bye@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr], klass="list")
        detail = {
            "contactList": "news",
            "timestamp": "2025-03-03T09:10:00.000Z",
            "source": "UnsubscribeHeader",
            "newTopicPreferences": {"unsubscribeAll": True},
            "oldTopicPreferences": {"unsubscribeAll": False},
        }
        await apply(store, per_message("Subscription", mail_of(ses_id, [addr], sid, "list"), detail), now=T0)
        entry = await only(store, addr)
        assert (entry.klass, entry.level, entry.cause, entry.expires_at) == (
            "list",
            Level.PERMANENT,
            Cause.UNSUBSCRIBE,
            None,
        )

    in_store(place, scenario)


# --------------------------------------------------------------------------- merging, statuses, the log


def test_levels_never_downgrade_noemail_then_transient_stays_hard_forever(place: Place) -> None:
    addr = "gone@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr])
        first = bounce(mail_of(ses_id, [addr], sid), [addr], "Permanent", "NoEmail", at=T0)
        await apply(store, first, now=T0)
        sid2, ses_id2 = await seed(store, [addr], at=T0 + timedelta(hours=2))
        later = T0 + timedelta(hours=2, minutes=1)
        await apply(
            store, bounce(mail_of(ses_id2, [addr], sid2), [addr], "Transient", "General", at=later), now=later
        )
        entry = await only(store, addr)
        assert (entry.level, entry.expires_at, entry.cause) == (Level.HARD, None, Cause.BOUNCE)
        assert entry.reason.startswith("Permanent/NoEmail")
        assert entry.feedback_id == first["bounce"]["feedbackId"]
        assert entry.updated_at == later

    in_store(place, scenario)


def test_statuses_follow_send_delay_delivery_and_never_move_backwards(place: Place) -> None:
    a, b = "a@example.org", "b@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [a, b])
        mail = mail_of(ses_id, [a, b], sid, "transactional")
        await apply(store, per_message("Send", mail), now=T0)
        assert await status_of(store, sid, a) == "sent"
        await apply(store, delivery_delay(mail, [a], at=T0 + timedelta(minutes=1)), now=T0)
        assert await status_of(store, sid, a) == "delayed"
        await apply(store, delivery(mail, [a, b], at=T0 + timedelta(minutes=2)), now=T0)
        assert (await status_of(store, sid, a), await status_of(store, sid, b)) == ("delivered", "delivered")
        # Late, out-of-order events do not undo what is known.
        await apply(store, delivery_delay(mail, [b], at=T0 + timedelta(minutes=3)), now=T0)
        await apply(store, bounce(mail, [a], "Permanent", "General", at=T0 + timedelta(minutes=4)), now=T0)
        await apply(store, delivery(mail, [a], at=T0 + timedelta(minutes=5)), now=T0)
        assert (await status_of(store, sid, a), await status_of(store, sid, b)) == ("bounced", "delivered")
        kinds = [e.record.kind for e in await store.events(address=a)]
        assert kinds == ["send", "delivery_delay", "delivery", "bounce", "delivery"]

    in_store(place, scenario)


@pytest.mark.parametrize(
    ("type_name", "detail", "status", "notice"),
    [
        ("Reject", {"reason": "Bad content"}, "rejected", "reject"),
        (
            "Rendering Failure",
            {"errorMessage": "Attribute 'name' is not present", "templateName": "w"},
            "failed",
            "rendering_failure",
        ),
    ],
)
def test_reject_and_rendering_failure_set_status_and_owe_a_notice(
    place: Place, type_name, detail, status, notice
):
    addr = "x@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr])
        await apply(store, per_message(type_name, mail_of(ses_id, [addr], sid), detail), now=T0)
        assert await status_of(store, sid, addr) == status
        assert await store.suppressions_of(addr) == []

    in_store(place, scenario)
    assert [n["reason"] for n in place.rows("SELECT reason FROM notices")] == [notice]


def test_open_and_click_are_recorded_without_changing_status(place: Place) -> None:
    addr = "reader@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr])
        mail = mail_of(ses_id, [addr], sid)
        open_detail = {
            "timestamp": "2025-03-03T10:00:00.000Z",
            "userAgent": "Mozilla/5.0",
            "ipAddress": "203.0.113.9",
        }
        click_detail = {**open_detail, "link": "https://example.com/a", "linkTags": {}}
        result = await apply(
            store, per_message("Open", mail, open_detail), per_message("Click", mail, click_detail), now=T0
        )
        assert result.kinds == {"open": 1, "click": 1}
        assert await status_of(store, sid, addr) == "sent"
        assert await store.suppressions_of(addr) == []

    in_store(place, scenario)


def test_unknown_event_type_is_logged_as_unknown_and_the_batch_still_applies(place: Place) -> None:
    addr = "gone@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr])
        mail = mail_of(ses_id, [addr], sid)
        novel = {"eventType": "Teleport", "teleport": {"timestamp": "2025-03-03T09:05:00.000Z"}, "mail": mail}
        result = await apply(store, novel, bounce(mail, [addr], "Permanent", "NoEmail"), now=T0)
        assert (result.events, result.dead_letters, result.kinds) == (2, 0, {"unknown": 1, "bounce": 1})
        unknown = [e.record for e in await store.events() if e.record.kind == "unknown"]
        assert [(e.ses_type, e.recipient, e.ses_message_id) for e in unknown] == [("Teleport", None, ses_id)]
        assert json.loads(unknown[0].raw)["eventType"] == "Teleport"
        assert (await only(store, addr)).level is Level.HARD
        assert await store.dead_letters() == []

    in_store(place, scenario)


def test_notices_for_a_permanent_bounce_of_our_message_but_not_for_a_null_sender(place: Place) -> None:
    a, b = "gone@example.org", "gone-too@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [a])
        dsn_sid, dsn_ses_id = await seed(store, [b], mail_from="")  # a bounce we relayed: <>
        foreign = "0102018eforeign-0004"
        result = await apply(
            store,
            bounce(mail_of(ses_id, [a], sid), [a], "Permanent", "General"),
            bounce(mail_of(dsn_ses_id, [b], dsn_sid), [b], "Permanent", "General"),
            bounce(
                ses_mail(foreign, ["c@example.org"], tags=False), ["c@example.org"], "Permanent", "General"
            ),
            now=T0,
        )
        assert (result.events, result.suppressions, result.notices) == (3, 3, 1)
        for address in (a, b, "c@example.org"):
            assert (await only(store, address)).level is Level.HARD

    in_store(place, scenario)
    [notice] = place.rows("SELECT * FROM notices")
    assert (notice["recipient"], notice["sender"], notice["reason"], notice["state"]) == (
        a,
        "app@example.com",
        "permanent_bounce",
        "pending",
    )
    assert notice["status"] == "5.1.1" and "User unknown" in notice["diagnostic"]
    assert (notice["bounce_type"], notice["bounce_subtype"]) == ("Permanent", "General")


def test_a_redelivered_batch_changes_nothing(place: Place) -> None:
    addr = "gone@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr])
        doc = bounce(mail_of(ses_id, [addr], sid), [addr], "Permanent", "General")
        first = await apply(store, doc, now=T0)
        before = await only(store, addr)
        again = await apply(store, doc, json.dumps(doc), now=T0 + timedelta(hours=1))
        assert (first.events, again.events, again.duplicates, again.notices) == (1, 0, 2, 0)
        assert await only(store, addr) == before  # not even updated_at moved
        assert len(await store.events()) == 1

    in_store(place, scenario)
    assert len(place.rows("SELECT * FROM notices")) == 1


def test_a_bad_body_is_a_dead_letter_and_the_rest_of_the_batch_applies(place: Place) -> None:
    addr = "gone@example.org"

    async def scenario(store: Store) -> None:
        sid, ses_id = await seed(store, [addr])
        good = bounce(mail_of(ses_id, [addr], sid), [addr], "Permanent", "General")
        result = await apply(store, "not json at all", good, '{"Type": "Notification"}', now=T0)
        assert (result.events, result.dead_letters) == (1, 2)
        errors = [d.error for d in await store.dead_letters()]
        assert "not valid JSON" in errors[0] and "Message" in errors[1]
        assert await status_of(store, sid, addr) == "bounced"

    in_store(place, scenario)
