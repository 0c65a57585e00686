"""IntakeHandler hook by hook: the answer to each MAIL, RCPT and DATA, as the named replies of
relay/intake/replies.py, and what each answer leaves in a real Store.

aiosmtpd calls the handler's hooks with its Session and Envelope; here the same objects
are made by hand (RelaySession, RelayEnvelope), so each rule is one exchange with no
socket, and the store behind it is a real file in a tmp dir.
"""

from __future__ import annotations

import sqlite3

from relay.intake import replies
from relay.intake.limits import ClientLimits
from relay.ops.guard import ACTOR
from relay.suppression import Cause, Level, refusal
from relay.timeutil import utcnow
from tests.support.entries import suppression
from tests.support.intake import INSIDE, MESSAGE, OUTSIDE, Intake, run_intake
from tests.support.security import add_user

GONE = suppression("gone@example.org", reason="Permanent/NoEmail: smtp; 550 5.1.1 no such user")
ANGRY_BULK = suppression("angry@example.org", klass="bulk", level=Level.PERMANENT, cause=Cause.COMPLAINT,
                         reason="abuse")  # fmt: skip


def message(*headers: str, body: str = "Hi there.\r\n") -> bytes:
    head = "".join(h + "\r\n" for h in ("From: App <app@example.com>", "To: r@example.org", *headers))
    return (head + "\r\n" + body).encode()


# -- EHLO ------------------------------------------------------------------------------------------


def test_ehlo_adds_pipelining_and_enhanced_codes_and_hides_auth_without_users(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        session, envelope = intake.session()
        lines = await intake.ehlo(session, envelope)
        assert lines == [
            "250-relay.example.com", "250-SIZE 10485760", "250-8BITMIME",
            "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP",
        ]  # fmt: skip
        assert session.host_name == "client.example.com"

    run_intake(tmp_path, scenario)


def test_ehlo_keeps_auth_when_the_users_file_has_users(tmp_path) -> None:
    add_user(tmp_path / "data", "alice", "@example.com")

    async def scenario(intake: Intake) -> None:
        lines = await intake.ehlo(*intake.session())
        assert "250-AUTH PLAIN LOGIN" in lines
        assert lines[-3:] == ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]

    run_intake(tmp_path, scenario, users=True)


# -- MAIL ------------------------------------------------------------------------------------------


def test_mail_from_allow_networks_is_taken_and_normalised(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        session, envelope = intake.session(INSIDE)
        assert await intake.mail(session, envelope, "<App@Example.COM>") == replies.SENDER_OK
        assert envelope.mail_from == "app@example.com"
        session, envelope = intake.session(INSIDE)
        assert await intake.mail(session, envelope, "<>") == replies.SENDER_OK
        assert envelope.mail_from == "<>"  # the null sender

    run_intake(tmp_path, scenario)


def test_mail_from_outside_allow_networks_needs_auth(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        session, envelope = intake.session(OUTSIDE)
        assert await intake.mail(session, envelope, "app@example.com") == replies.AUTH_REQUIRED
        assert envelope.mail_from is None

    run_intake(tmp_path, scenario)


def test_a_require_auth_listener_refuses_even_allow_networks(tmp_path) -> None:
    config = {
        "listeners": [{"listen": "127.0.0.1:2525", "require_auth": True}],
        "auth": {"allow_plaintext_loopback": True},
    }

    async def scenario(intake: Intake) -> None:
        assert await intake.mail(*intake.session(INSIDE), "app@example.com") == replies.AUTH_REQUIRED

    run_intake(tmp_path, scenario, config)


def test_bad_sender_syntax_names_the_problem(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        for address, why in [
            ("no-domain", "address has no domain"),
            ("a..b@example.com", "malformed local part"),
            ("user@[192.0.2.1]", "address literals are not accepted"),
        ]:
            assert await intake.mail(*intake.session(), address) == f"{replies.BAD_SENDER}: {why}"

    run_intake(tmp_path, scenario)


def test_an_authenticated_user_may_use_only_its_senders(tmp_path) -> None:
    add_user(tmp_path / "data", "alice", "@example.com")

    async def scenario(intake: Intake) -> None:
        session, envelope = intake.session(OUTSIDE, user="alice")
        assert await intake.mail(session, envelope, "billing@example.com") == replies.SENDER_OK
        session, envelope = intake.session(OUTSIDE, user="alice")
        assert await intake.mail(session, envelope, "ceo@example.net") == replies.sender_not_permitted(
            "alice", "ceo@example.net"
        )
        # the null sender is every user's: bounces and auto-replies have no other
        session, envelope = intake.session(OUTSIDE, user="alice")
        assert await intake.mail(session, envelope, "<>") == replies.SENDER_OK

    run_intake(tmp_path, scenario, users=True)


def test_messages_per_minute_per_client_and_per_user(tmp_path) -> None:
    add_user(tmp_path / "data", "bob", "*", rate=2)
    add_user(tmp_path / "data", "carol", "*")

    async def scenario(intake: Intake) -> None:
        async def mail(peer: str, user: str) -> str:
            return await intake.mail(*intake.session((peer, 1), user=user), "a@example.com")

        assert await mail("192.0.2.9", "bob") == replies.SENDER_OK
        assert await mail("192.0.2.9", "bob") == replies.SENDER_OK
        assert await mail("192.0.2.9", "bob") == replies.rate_limited("user bob", 2)
        assert await mail("192.0.2.9", "carol") == replies.rate_limited("client 192.0.2.9", 3)
        assert await mail("192.0.2.10", "carol") == replies.SENDER_OK
        assert await mail("192.0.2.10", "bob") == replies.rate_limited("user bob", 2)

    run_intake(tmp_path, scenario, users=True, limits=ClientLimits.from_limits(20, 3))


# -- RCPT ------------------------------------------------------------------------------------------


def test_rcpt_takes_each_address_once_normalised(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        session, envelope = intake.session()
        await intake.mail(session, envelope, "app@example.com")
        assert await intake.rcpt(session, envelope, "<R@Example.ORG>") == replies.RECIPIENT_OK
        assert await intake.rcpt(session, envelope, "r@example.org") == replies.RECIPIENT_OK
        assert envelope.rcpt_tos == ["r@example.org"]

    run_intake(tmp_path, scenario)


def test_rcpt_refuses_bad_syntax_and_too_many(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        session, envelope = intake.session()
        await intake.mail(session, envelope, "app@example.com")
        assert (
            await intake.rcpt(session, envelope, "nobody")
            == f"{replies.BAD_RECIPIENT}: address has no domain"
        )
        for i in range(3):
            assert await intake.rcpt(session, envelope, f"r{i}@example.org") == replies.RECIPIENT_OK
        assert await intake.rcpt(session, envelope, "r3@example.org") == (
            f"{replies.TOO_MANY_RECIPIENTS}: at most 3 per message"
        )
        assert envelope.rcpt_tos == ["r0@example.org", "r1@example.org", "r2@example.org"]

    run_intake(tmp_path, scenario, {"limits": {"recipients": 3}})


def test_rcpt_refuses_an_all_class_suppression_with_its_reason(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        await intake.store.merge_suppression(GONE)
        await intake.store.merge_suppression(ANGRY_BULK)
        session, envelope = intake.session()
        await intake.mail(session, envelope, "app@example.com")
        assert await intake.rcpt(session, envelope, "Gone@Example.org") == replies.suppressed(*refusal(GONE))
        assert replies.suppressed(*refusal(GONE)).startswith(
            "550 5.1.1 <gone@example.org> suppressed (bounce: "
        )
        # a class-only suppression is judged at DATA, once the class is known
        assert await intake.rcpt(session, envelope, "angry@example.org") == replies.RECIPIENT_OK
        assert envelope.rcpt_tos == ["angry@example.org"]

    run_intake(tmp_path, scenario)


def test_rcpt_answers_451_when_the_store_cannot_be_read(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        with sqlite3.connect(intake.data_dir / "relay.db") as db:
            db.execute("ALTER TABLE suppressions RENAME TO suppressions_elsewhere")
        session, envelope = intake.session()
        await intake.mail(session, envelope, "app@example.com")
        assert await intake.rcpt(session, envelope, "r@example.org") == replies.STORE_UNAVAILABLE
        assert envelope.rcpt_tos == []

    run_intake(tmp_path, scenario)


# -- DATA ------------------------------------------------------------------------------------------


def test_data_commits_then_answers_queued_with_the_submission_id(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        session, envelope = intake.session()
        content = message("Subject: hello", "X-SES-MESSAGE-TAGS: campaign=spring")
        answers = await intake.send(
            session, envelope, "app@example.com", ["a@example.org", "b@example.org"], content
        )
        [sid] = intake.accepted
        assert answers == [replies.SENDER_OK, replies.RECIPIENT_OK, replies.RECIPIENT_OK, replies.queued(sid)]
        sub = await intake.store.submission(sid)
        assert sub is not None
        assert (sub.mail_from, sub.klass, sub.class_source, sub.configuration_set) == (
            "app@example.com", "transactional", "default", "tx",
        )  # fmt: skip
        assert sub.tags == (("campaign", "spring"),) and sub.subject == "hello"
        assert sub.client_ip == "127.0.0.1" and sub.auth_user is None
        assert [(r.address, r.status) for r in sub.recipients] == [
            ("a@example.org", "queued"), ("b@example.org", "queued"),
        ]  # fmt: skip

    run_intake(tmp_path, scenario)


def test_data_drops_recipients_suppressed_for_the_class_and_owes_a_notice(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        await intake.store.merge_suppression(ANGRY_BULK)
        session, envelope = intake.session()
        rcpts = ["angry@example.org", "ok@example.org"]
        answers = await intake.send(
            session, envelope, "app@example.com", rcpts, message("X-Message-Class: bulk")
        )
        [sid] = intake.accepted
        assert answers[-1] == replies.queued(sid)
        sub = await intake.store.submission(sid)
        assert sub is not None and sub.klass == "bulk" and sub.class_source == "header"
        statuses = {r.address: (r.status, r.detail) for r in sub.recipients}
        assert statuses == {
            "angry@example.org": ("suppressed", refusal(ANGRY_BULK)[1]),
            "ok@example.org": ("queued", None),
        }
        [notice] = await intake.store.notices()
        assert (notice.record.reason, notice.record.recipient, notice.record.sender) == (
            "suppressed", "angry@example.org", "app@example.com",
        )  # fmt: skip
        # the same recipient in another class is not suppressed
        session, envelope = intake.session()
        answers = await intake.send(session, envelope, "app@example.com", ["angry@example.org"], message())
        assert answers[-1] == replies.queued(intake.accepted[-1])

    run_intake(tmp_path, scenario)


def test_data_with_every_recipient_suppressed_for_the_class_is_refused_and_writes_nothing(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        await intake.store.merge_suppression(ANGRY_BULK)
        session, envelope = intake.session()
        answers = await intake.send(session, envelope, "app@example.com", ["angry@example.org"],
                                    message("Precedence: bulk"))  # fmt: skip
        assert answers[-1] == replies.ALL_SUPPRESSED.format(klass="bulk")
        assert intake.accepted == []
        assert intake.rows("SELECT count(*) FROM submissions") == [(0,)]

    run_intake(tmp_path, scenario)


def test_data_refuses_an_unknown_class_or_bad_tags_with_the_reason(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        for header, detail in [
            (
                "X-Message-Class: promo",
                "unknown X-Message-Class 'promo'; configured classes: bulk, list, transactional",
            ),
            (
                "X-SES-MESSAGE-TAGS: message-class=b",
                "X-SES-MESSAGE-TAGS may not set the reserved tag 'message-class'",
            ),
        ]:
            session, envelope = intake.session()
            answers = await intake.send(
                session, envelope, "app@example.com", ["r@example.org"], message(header)
            )
            assert answers[-1] == replies.BAD_CONTENT.format(detail=detail)
        assert intake.accepted == []
        assert intake.rows("SELECT count(*) FROM submissions") == [(0,)]

    run_intake(tmp_path, scenario)


def test_data_refuses_header_injection_and_bare_line_endings_when_configured(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        session, envelope = intake.session()
        injected = b"From: app@example.com\r\nSubject: hi\rBcc: victim@example.org\r\n\r\nx\r\n"
        answers = await intake.send(session, envelope, "app@example.com", ["r@example.org"], injected)
        why = "the header section contains a bare CR or LF (header lines must end with CRLF)"
        assert answers[-1] == replies.BAD_CONTENT.format(detail=f"Message refused: {why}")
        session, envelope = intake.session()
        answers = await intake.send(session, envelope, "app@example.com", ["r@example.org"],
                                    message(body="one\nbare LF\r\n"))  # fmt: skip
        assert answers[-1] == replies.BARE_LINE_ENDINGS
        assert intake.accepted == []

    run_intake(tmp_path, scenario, {"limits": {"bare_line_endings": "reject"}})


def test_data_normalises_bare_line_endings_by_default(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        session, envelope = intake.session()
        answers = await intake.send(session, envelope, "app@example.com", ["r@example.org"],
                                    message(body="one\nbare LF\r\n"))  # fmt: skip
        [sid] = intake.accepted
        assert answers[-1] == replies.queued(sid)
        sub = await intake.store.submission(sid)
        assert sub is not None and sub.size == len(message(body="one\r\nbare LF\r\n"))

    run_intake(tmp_path, scenario)


def test_arn_headers_are_dropped_unless_the_user_may_set_them(tmp_path) -> None:
    add_user(tmp_path / "data", "plain", "*")
    add_user(tmp_path / "data", "trusted", "*", may_set_arns=True)
    arn = "X-SES-SOURCE-ARN: arn:aws:ses:us-east-1:111111111111:identity/example.com"

    async def scenario(intake: Intake) -> None:
        kept = {}
        for who in (None, "plain", "trusted"):
            session, envelope = intake.session(INSIDE, user=who)
            answers = await intake.send(session, envelope, "app@example.com", ["r@example.org"], message(arn))
            assert answers[-1] == replies.queued(intake.accepted[-1])
            sub = await intake.store.submission(intake.accepted[-1])
            assert sub is not None
            kept[who] = "X-SES-SOURCE-ARN" in sub.headers
        assert kept == {None: False, "plain": False, "trusted": True}

    run_intake(tmp_path, scenario, users=True)


def test_an_authenticated_users_from_header_must_be_its_own(tmp_path) -> None:
    add_user(tmp_path / "data", "alice", "@example.com", default_class="list")

    async def scenario(intake: Intake) -> None:
        cases = [
            (b"To: r@example.org\r\n\r\nno From\r\n", replies.NO_FROM.format(user="alice")),
            (b"From: Boss <boss@example.net>\r\n\r\nx\r\n",
             replies.FROM_NOT_PERMITTED.format(user="alice", address="boss@example.net")),
        ]  # fmt: skip
        for content, expected in cases:
            session, envelope = intake.session(OUTSIDE, user="alice")
            answers = await intake.send(session, envelope, "app@example.com", ["r@example.org"], content)
            assert answers[-1] == expected
        assert intake.accepted == []
        session, envelope = intake.session(OUTSIDE, user="alice")
        answers = await intake.send(session, envelope, "app@example.com", ["r@example.org"], MESSAGE)
        [sid] = intake.accepted
        assert answers[-1] == replies.queued(sid)
        sub = await intake.store.submission(sid)
        assert sub is not None and (sub.auth_user, sub.klass, sub.class_source) == ("alice", "list", "user")

    run_intake(tmp_path, scenario, users=True)


def test_a_paused_class_gets_451_naming_who_paused_it(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        now = utcnow()
        await intake.store.set_class_paused("bulk", True, reason="bounce rate 9 %", actor=ACTOR, now=now)
        await intake.store.set_class_paused("list", True, reason="", actor="cli:ops", now=now)
        await intake.guard.refresh()
        for klass, expected in [
            ("bulk", replies.class_paused("bulk", "the reputation guard", "bounce rate 9 %")),
            ("list", replies.class_paused("list", "cli:ops", "")),
        ]:
            session, envelope = intake.session()
            answers = await intake.send(session, envelope, "app@example.com", ["r@example.org"],
                                        message(f"X-Message-Class: {klass}"))  # fmt: skip
            assert answers[-1] == expected
        assert (
            replies.class_paused("list", "cli:ops", "")
            == "451 4.7.1 Class list is paused by cli:ops; try again later"
        )
        assert intake.accepted == []
        session, envelope = intake.session()
        answers = await intake.send(session, envelope, "app@example.com", ["r@example.org"], message())
        assert answers[-1] == replies.queued(intake.accepted[-1])  # other classes flow

    run_intake(tmp_path, scenario)


def test_a_paused_class_is_held_instead_when_the_guard_holds(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        await intake.store.set_class_paused("bulk", True, reason="r", actor=ACTOR, now=utcnow())
        await intake.guard.refresh()
        session, envelope = intake.session()
        answers = await intake.send(session, envelope, "app@example.com", ["r@example.org"],
                                    message("X-Message-Class: bulk"))  # fmt: skip
        assert answers[-1] == replies.queued(intake.accepted[-1])

    run_intake(tmp_path, scenario, {"guard": {"action": "hold"}})


def test_data_answers_451_and_writes_nothing_when_the_store_cannot_be_read(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        session, envelope = intake.session()
        await intake.mail(session, envelope, "app@example.com")
        assert await intake.rcpt(session, envelope, "r@example.org") == replies.RECIPIENT_OK
        with sqlite3.connect(intake.data_dir / "relay.db") as db:
            db.execute("ALTER TABLE suppressions RENAME TO suppressions_elsewhere")
        assert await intake.data(session, envelope) == replies.STORE_UNAVAILABLE
        assert intake.accepted == []
        assert intake.rows("SELECT count(*) FROM submissions") == [(0,)]

    run_intake(tmp_path, scenario)


def test_an_unexpected_error_is_a_temporary_failure(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        assert await intake.handler.handle_exception(RuntimeError("boom")) == replies.INTERNAL_ERROR

    run_intake(tmp_path, scenario)
