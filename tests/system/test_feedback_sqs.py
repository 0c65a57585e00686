"""The feedback path over real HTTP: SES JSON -> SNS topic -> two SQS queues (envelope and raw
delivery) on moto's server -> `ses-relay feedback consume --once` -> the store, read back with the CLI.

Mail is really sent through `ses-relay serve` (smtplib -> relay -> moto's SES), so the
events carry the SES message id moto handed out and the tags our sender attached;
the events themselves are published by the test, since moto's SES emits none that
are usable. Both queues hang off one topic, so every event arrives twice: once
wrapped in an SNS envelope and once raw, and the second copy must change nothing.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from relay.timeutil import from_text, utcnow
from tests.conftest import FIXTURES, Relay, cli_json, run_cli, wait_until
from tests.support.relaydb import count_rows
from tests.support.smtp import message, send, submission_id
from tests.support.sns_sqs import FeedbackQueues, bounce, delivery, feedback_queues, ses_mail

SENDER = "app@example.com"


def ses_config(endpoint: str) -> str:
    """SES goes to moto by [ses] endpoint_url; SQS by AWS_ENDPOINT_URL_SQS (sqs_env)."""
    return f'[ses]\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\nmax_send_rate = 200.0\n'


def sqs_env(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL_SQS": endpoint}


@pytest.fixture
def queues(moto_server: str) -> FeedbackQueues:
    boto3.client("ses", endpoint_url=moto_server, region_name="us-east-1").verify_domain_identity(
        Domain="example.com"
    )
    return feedback_queues(moto_server)


def consume(relay_or_dir: Relay | tuple[Path, Path, str], *urls: str) -> tuple[str, str]:
    """Run `feedback consume --once` for `urls`; it must exit 0. Returns (stdout, stderr)."""
    args = ["feedback", "consume", "--once"]
    for url in urls:
        args += ["--queue-url", url]
    if isinstance(relay_or_dir, Relay):
        result = relay_or_dir.cli(*args)
    else:
        data_dir, config, endpoint = relay_or_dir
        result = run_cli(*args, data_dir=data_dir, config=config, env=sqs_env(endpoint))
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def statuses(relay: Relay, sid: str) -> dict[str, str]:
    return {r["address"]: r["status"] for r in relay.json("submission", "show", sid)["recipients"]}


def sent_through_moto(relay: Relay, rcpts: list[str], subject: str) -> tuple[str, str]:
    """Send by SMTP, wait until SES (moto) took it; returns (submission id, SES message id)."""
    code, reply = send(relay, rcpts, message(subject), sender=SENDER)
    assert code == 250
    sid = submission_id(reply)
    shown = wait_until(
        lambda: (
            (s := relay.json("submission", "show", sid))
            and all(r["status"] == "sent" for r in s["recipients"])
            and s
        ),
        timeout=20,
        what=f"{sid} sent to moto",
    )
    [ses_id] = {r["ses_message_id"] for r in shown["recipients"]}
    assert ses_id
    return sid, ses_id


def events_of(relay: Relay, address: str | None = None) -> list[dict[str, Any]]:
    args = ["events", "list"] + (["--address", address] if address else [])
    return relay.json(*args)


def test_bounce_and_delivery_published_to_sns_are_applied_once_from_both_queues(
    relay_factory, queues: FeedbackQueues
) -> None:
    relay = relay_factory(ses_config(queues.endpoint), env=sqs_env(queues.endpoint))
    gone, fine = "gone@example.org", "fine@example.org"
    sid, ses_id = sent_through_moto(relay, [gone, fine], "two recipients")

    mail = ses_mail(ses_id, [gone, fine], submission_id=sid, klass="transactional", configuration_set="tx")
    hard = bounce(mail, [gone], "Permanent", "General")
    delivered = delivery(mail, [fine])
    queues.publish(hard)
    queues.publish(delivered)

    # What SNS put in each queue: an envelope around the SES JSON, and the SES JSON itself.
    envelopes = [json.loads(b) for b in queues.peek(queues.envelope_url)]
    assert {e["Type"] for e in envelopes} == {"Notification"}
    assert {e["TopicArn"] for e in envelopes} == {queues.topic_arn}
    assert sorted(json.loads(e["Message"])["eventType"] for e in envelopes) == ["Bounce", "Delivery"]
    assert sorted(json.loads(b)["eventType"] for b in queues.peek(queues.raw_url)) == ["Bounce", "Delivery"]

    stdout, _ = consume(relay, *queues.urls)
    assert "applied 2 event(s)" in stdout and "2 duplicate(s)" in stdout and "0 dead letter(s)" in stdout
    assert queues.empty(queues.envelope_url) and queues.empty(queues.raw_url)

    assert statuses(relay, sid) == {gone: "bounced", fine: "delivered"}
    shown = {r["address"]: r for r in relay.json("submission", "show", sid)["recipients"]}
    assert "Permanent/General" in shown[gone]["detail"] and "5.1.1" in shown[gone]["detail"]

    logged = events_of(relay)
    mine = [e for e in logged if e["ses_message_id"] == ses_id]
    assert sorted((e["kind"], e["recipient"]) for e in mine) == [("bounce", gone), ("delivery", fine)]
    for event in mine:
        assert (event["submission_id"], event["class"]) == (sid, "transactional")
        assert (event["source_ip"], event["from_address"]) == ("192.0.2.10", SENDER)
    [bounced] = [e for e in mine if e["kind"] == "bounce"]
    assert (bounced["bounce_type"], bounced["bounce_subtype"], bounced["status"]) == (
        "Permanent",
        "General",
        "5.1.1",
    )
    assert "User unknown" in bounced["diagnostic"]

    shown = relay.json("suppression", "show", gone)
    [entry] = shown["suppressions"]
    assert (entry["class"], entry["level"], entry["cause"], entry["active"]) == ("*", "hard", "bounce", True)
    assert (entry["ses_message_id"], entry["feedback_id"]) == (ses_id, hard["bounce"]["feedbackId"])
    expected_expiry = utcnow() + timedelta(days=30)
    assert abs(from_text(entry["expires_at"]) - expected_expiry) < timedelta(minutes=2)
    assert relay.json("suppression", "show", fine)["suppressions"] == []
    assert count_rows(relay.data_dir, "notices") == 1  # the sender hears of the hard bounce once
    assert relay.json("feedback", "dead-letters") == []

    # SQS redelivers, SNS re-publishes: nothing changes.
    queues.publish(hard)
    queues.publish(delivered)
    stdout, _ = consume(relay, *queues.urls)
    assert "applied 0 event(s)" in stdout and "4 duplicate(s)" in stdout
    assert queues.empty(queues.envelope_url) and queues.empty(queues.raw_url)
    assert events_of(relay) == logged
    assert count_rows(relay.data_dir, "notices") == 1
    assert statuses(relay, sid) == {gone: "bounced", fine: "delivered"}
    assert relay.json("suppression", "show", gone)["suppressions"] == shown["suppressions"]

    # A Delivery for the bounced recipient arriving late is logged but does not undo the bounce.
    queues.publish(delivery(mail, [gone], at=utcnow()))
    stdout, _ = consume(relay, *queues.urls)
    assert "applied 1 event(s)" in stdout
    assert statuses(relay, sid) == {gone: "bounced", fine: "delivered"}
    assert sorted(e["kind"] for e in events_of(relay, gone)) == ["bounce", "delivery"]
    assert count_rows(relay.data_dir, "notices") == 1


def test_one_bounce_naming_three_recipients_is_three_events_suppressions_and_notices(
    relay_factory, queues: FeedbackQueues
) -> None:
    relay = relay_factory(ses_config(queues.endpoint), env=sqs_env(queues.endpoint))
    rcpts = ["one@example.org", "two@example.org", "three@example.org"]
    sid, ses_id = sent_through_moto(relay, rcpts, "three recipients")
    mail = ses_mail(ses_id, rcpts, submission_id=sid, klass="transactional")
    queues.publish(bounce(mail, rcpts, "Permanent", "NoEmail"))

    # The raw-delivery queue alone applies it; the envelope queue then only has duplicates.
    stdout, _ = consume(relay, queues.raw_url)
    assert "applied 3 event(s) (bounce 3)" in stdout and "3 notice(s) queued" in stdout
    stdout, _ = consume(relay, queues.envelope_url)
    assert "applied 0 event(s)" in stdout and "3 duplicate(s)" in stdout
    assert queues.empty(queues.envelope_url) and queues.empty(queues.raw_url)

    assert statuses(relay, sid) == dict.fromkeys(rcpts, "bounced")
    logged = [e for e in events_of(relay) if e["ses_message_id"] == ses_id]
    assert sorted(e["recipient"] for e in logged) == sorted(rcpts)
    assert all(e["kind"] == "bounce" and e["bounce_subtype"] == "NoEmail" for e in logged)
    for rcpt in rcpts:
        [entry] = relay.json("suppression", "show", rcpt)["suppressions"]
        assert (entry["class"], entry["level"], entry["expires_at"]) == ("*", "hard", None)
        assert rcpt in entry["reason"]  # each keeps its own diagnostic
    assert count_rows(relay.data_dir, "notices") == 3


def bad_bodies(queues: FeedbackQueues) -> dict[str, str]:
    """Bodies that must each become a dead letter, keyed by a word of the expected error."""
    queues.publish(bounce(ses_mail("0102018eprobe-0000", ["probe@example.org"]), ["probe@example.org"]))
    [envelope] = queues.take(queues.envelope_url)
    queues.take(queues.raw_url)
    assert json.loads(envelope)["Type"] == "Notification"
    return {
        "not valid JSON": "<html><body>502 Bad Gateway</body></html>",  # garbage
        "neither an SNS envelope": json.dumps({"hello": "world", "items": [1, 2, 3]}),  # wrong shape
        "expected an object": json.dumps([{"eventType": "Bounce"}]),  # wrong shape: an array
        "Unterminated string": envelope[: len(envelope) // 2],  # truncated SNS envelope
        "SNS Message is not JSON": json.dumps({"Type": "Notification", "Message": "hello"}),
        "no mail.messageId": json.dumps(
            {"eventType": "Delivery", "mail": {"timestamp": "2025-01-01T00:00:00Z"}}
        ),
        "no bouncedRecipients": json.dumps(
            {
                "eventType": "Bounce",
                "bounce": {"bounceType": "Permanent", "timestamp": "2025-01-01T00:00:00Z"},
                "mail": {"messageId": "x"},
            }
        ),
    }


def test_bad_bodies_become_dead_letters_and_good_messages_around_them_still_apply(
    queues: FeedbackQueues, tmp_path: Path
) -> None:
    data_dir, config = tmp_path / "data", tmp_path / "ses-relay.toml"
    config.write_text(ses_config(queues.endpoint))
    bad = bad_bodies(queues)

    # A message this relay never sent: still logged, still suppresses (the reputation is shared).
    foreign = "0102018eforeign-0001"
    before, after = "before@example.org", "after@example.org"
    queues.publish(bounce(ses_mail(foreign, [before], tags=False), [before], "Permanent", "General"))
    for body in bad.values():
        queues.send_body(queues.envelope_url, body)
        queues.send_body(queues.raw_url, body)
    queues.publish(bounce(ses_mail(foreign, [after], tags=False), [after], "Permanent", "General"))
    # 9 bodies per queue: with batches of 10 the good ones share a batch with the bad ones.

    stdout, stderr = consume((data_dir, config, queues.endpoint), *queues.urls)
    assert "applied 2 event(s)" in stdout and f"{2 * len(bad)} dead letter(s)" in stdout, stdout
    assert "dead letter from sqs:" in stderr
    assert queues.empty(queues.envelope_url) and queues.empty(queues.raw_url)

    letters = cli_json("feedback", "dead-letters", data_dir=data_dir, config=config)
    assert len(letters) == 2 * len(bad)
    assert {d["source"] for d in letters} == {f"sqs:{url}" for url in queues.urls}
    by_body: dict[str, list[str]] = {}
    for d in letters:
        by_body.setdefault(d["body"], []).append(d["error"])
    assert set(by_body) == set(bad.values())  # kept verbatim, for an operator to re-drive
    for word, body in bad.items():
        assert len(by_body[body]) == 2
        assert all(word in error for error in by_body[body]), (word, by_body[body])

    for address in (before, after):
        [entry] = cli_json("suppression", "show", address, data_dir=data_dir, config=config)["suppressions"]
        assert (entry["class"], entry["level"], entry["ses_message_id"]) == ("*", "hard", foreign)
    logged = cli_json("events", "list", data_dir=data_dir, config=config)
    assert sorted((e["recipient"], e["submission_id"]) for e in logged) == [(after, None), (before, None)]

    # A later run goes on applying good messages; the dead letters are not retried.
    late = "late@example.org"
    queues.publish(bounce(ses_mail(foreign, [late], tags=False), [late], "Transient", "MailboxFull"))
    stdout, _ = consume((data_dir, config, queues.endpoint), *queues.urls)
    assert "applied 1 event(s)" in stdout and "0 dead letter(s)" in stdout
    [entry] = cli_json("suppression", "show", late, data_dir=data_dir, config=config)["suppressions"]
    assert entry["level"] == "soft"
    assert len(cli_json("feedback", "dead-letters", data_dir=data_dir, config=config)) == 2 * len(bad)


def test_subscription_confirmation_in_the_queue_is_logged_and_deleted_not_dead_lettered(
    queues: FeedbackQueues, tmp_path: Path
) -> None:
    data_dir, config = tmp_path / "data", tmp_path / "ses-relay.toml"
    config.write_text(ses_config(queues.endpoint))
    confirmation = json.loads((FIXTURES / "sns_subscription_confirmation.json").read_text())
    confirmation["TopicArn"] = queues.topic_arn
    queues.send_body(queues.envelope_url, json.dumps(confirmation))

    stdout, stderr = consume((data_dir, config, queues.endpoint), queues.envelope_url)
    assert "applied 0 event(s)" in stdout and "0 dead letter(s)" in stdout
    assert "subscription_confirmation" in stderr and queues.topic_arn in stderr
    assert confirmation["SubscribeURL"] in stderr  # what the operator needs to confirm it
    assert queues.empty(queues.envelope_url)
    assert cli_json("feedback", "dead-letters", data_dir=data_dir, config=config) == []
    assert cli_json("events", "list", data_dir=data_dir, config=config) == []


def test_consume_without_a_queue_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("feedback", "consume", "--once", data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "--queue-url" in result.stderr


def test_serve_consumes_the_configured_queues_itself(relay_factory, queues: FeedbackQueues) -> None:
    """[feedback] queue_urls: the running relay applies SES events without a separate consumer."""
    urls = ", ".join(f'"{u}"' for u in queues.urls)
    relay = relay_factory(
        ses_config(queues.endpoint) + f"[feedback]\nqueue_urls = [{urls}]\n", env=sqs_env(queues.endpoint)
    )
    gone = "served-gone@example.org"
    queues.publish(bounce(ses_mail("0102018eserve-0001", [gone], tags=False), [gone], "Permanent", "NoEmail"))
    shown = wait_until(
        lambda: (s := relay.json("suppression", "show", gone))["suppressions"] and s,
        timeout=40,
        what="the serving relay to apply the bounce from SQS",
    )
    assert shown["suppressions"][0]["expires_at"] is None
    wait_until(lambda: all(queues.empty(u) for u in queues.urls), timeout=30, what="both queues drained")
