"""End to end: smtplib -> `ses-relay serve` -> SES over HTTP (moto's server, or the fault-injecting fake)."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import boto3
import dkim
import pytest

from tests.conftest import Relay, run_cli, wait_until
from tests.support.fake_ses import FakeSes
from tests.support.moto_ses import recorded_sends, recording
from tests.support.relaydb import count_rows, suppress
from tests.support.smtp import message, send, smtp, submission_id


def ses_config(endpoint: str, extra: str = "") -> str:
    return f'[ses]\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\nmax_send_rate = 200.0\n{extra}'


def statuses(relay: Relay, sid: str) -> dict[str, str]:
    return {r["address"]: r["status"] for r in relay.json("submission", "show", sid)["recipients"]}


def settled(relay: Relay, sid: str, status: str = "sent") -> dict[str, str]:
    return wait_until(
        lambda: (s := statuses(relay, sid)) and all(v == status for v in s.values()) and s,
        timeout=20,
        what=f"all recipients of {sid} {status}",
    )


@pytest.fixture
def moto_ses(moto_server: str, tmp_path: Path):
    client = boto3.client("ses", endpoint_url=moto_server, region_name="us-east-1")
    client.verify_domain_identity(Domain="example.com")
    with recording(moto_server, tmp_path / "moto-recording"):
        yield moto_server


def test_three_recipients_one_suppressed_reach_moto_with_class_set_and_tags(relay_factory, moto_ses) -> None:
    relay = relay_factory(ses_config(moto_ses))
    suppress(relay.data_dir, "bounced@example.org")

    with smtp(relay) as client:
        client.mail("app@example.com")
        assert client.rcpt("one@example.org")[0] == 250
        code, text = client.rcpt("bounced@example.org")
        assert (code, text[:6]) == (550, b"5.1.1 ")
        assert client.rcpt("two@example.org")[0] == 250
        extra = (
            "X-Message-Class: transactional\r\nX-SES-MESSAGE-TAGS: campaign=welcome\r\n"
            "Bcc: secret@example.org\r\n"
        )
        code, reply = client.data(message("welcome", extra))
    assert code == 250
    sid = submission_id(reply)
    assert settled(relay, sid) == {"one@example.org": "sent", "two@example.org": "sent"}

    sends = [s for s in recorded_sends(moto_ses) if ("submission-id", sid) in s.tags]
    assert len(sends) == 1
    sent = sends[0]
    assert sent.source == "app@example.com"
    assert set(sent.destinations) == {"one@example.org", "two@example.org"}
    assert sent.configuration_set == "tx"
    assert dict(sent.tags) == {"message-class": "transactional", "submission-id": sid, "campaign": "welcome"}
    parsed = email.message_from_bytes(sent.raw, policy=email.policy.default)
    for name in ("X-Message-Class", "X-SES-MESSAGE-TAGS", "X-SES-CONFIGURATION-SET", "Bcc"):
        assert parsed[name] is None, name
    assert parsed["Subject"] == "welcome"

    shown = relay.json("submission", "show", sid)
    assert {r["ses_message_id"] for r in shown["recipients"]} == {
        next(r["ses_message_id"] for r in shown["recipients"])
    }


def test_configuration_set_header_selects_the_class(relay_factory, moto_ses) -> None:
    relay = relay_factory(ses_config(moto_ses))
    code, reply = send(relay, ["x@example.org"], message("news", "X-SES-CONFIGURATION-SET: bulk\r\n"))
    assert code == 250
    sid = submission_id(reply)
    settled(relay, sid)
    assert relay.json("submission", "show", sid)["class"] == "bulk"
    sent = next(s for s in recorded_sends(moto_ses) if ("submission-id", sid) in s.tags)
    assert sent.configuration_set == "bulk"
    assert b"X-SES-CONFIGURATION-SET" not in sent.raw


def test_dkim_signature_verifies_against_the_printed_key(relay_factory, moto_ses, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    keygen = run_cli("dkim", "keygen", "example.com", "--selector", "s1", data_dir=data_dir, check=True)
    record = re.search(r"IN TXT \( (.*) \)", keygen.stdout)
    assert record, keygen.stdout
    txt = "".join(re.findall(r'"([^"]*)"', record.group(1))).encode()
    assert txt.startswith(b"v=DKIM1; k=rsa; p=")

    relay = relay_factory(ses_config(moto_ses))
    _code, reply = send(relay, ["dk@example.org"], message("signed"))
    sid = submission_id(reply)
    settled(relay, sid)
    sent = next(s for s in recorded_sends(moto_ses) if ("submission-id", sid) in s.tags)
    assert sent.raw.startswith(b"DKIM-Signature:")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s1._domainkey.example.com."
        return txt

    assert dkim.verify(sent.raw, dnsfunc=dns)
    assert not dkim.verify(sent.raw.replace(b"Hi there.", b"Hi thar."), dnsfunc=dns)


@pytest.fixture
def fake_ses():
    with FakeSes() as fake:
        yield fake


def test_120_recipients_make_three_calls_of_at_most_50(relay_factory, fake_ses: FakeSes) -> None:
    relay = relay_factory(ses_config(fake_ses.url))
    rcpts = [f"r{i:03d}@example.org" for i in range(120)]
    code, reply = send(relay, rcpts, message("many"))
    assert code == 250
    sid = submission_id(reply)
    settled(relay, sid)
    calls = fake_ses.wait_for_calls(3)
    assert [len(c.destinations) for c in calls] == [50, 50, 20]
    assert sorted(d for c in calls for d in c.destinations) == rcpts
    assert len({c.message_id for c in calls}) == 3
    shown = relay.json("submission", "show", sid)
    assert len({r["ses_message_id"] for r in shown["recipients"]}) == 3


def test_throttling_is_retried_until_sent(relay_factory, fake_ses: FakeSes) -> None:
    fake_ses.fail_next(2, "Throttling", "Maximum sending rate exceeded.", 400)
    relay = relay_factory(ses_config(fake_ses.url))
    _code, reply = send(relay, ["t@example.org"], message("throttled"))
    sid = submission_id(reply)
    settled(relay, sid)
    assert fake_ses.attempts == 3
    assert len(fake_ses.calls) == 1


def test_message_rejected_fails_at_once_without_retrying(relay_factory, fake_ses: FakeSes) -> None:
    fake_ses.fail_next(1, "MessageRejected", "Email address is not verified.", 400)
    relay = relay_factory(ses_config(fake_ses.url))
    _code, reply = send(relay, ["m@example.org"], message("rejected"))
    sid = submission_id(reply)
    settled(relay, sid, "failed")
    detail = relay.json("submission", "show", sid)["recipients"][0]["detail"]
    assert "MessageRejected" in detail and "not verified" in detail
    assert count_rows(relay.data_dir, "spool") == 0
    assert fake_ses.attempts == 1


def test_spooled_mail_survives_a_restart_and_is_sent_once(relay_factory, fake_ses: FakeSes) -> None:
    fake_ses.stop_listening()
    relay = relay_factory(ses_config(fake_ses.url))
    sids = []
    for i in range(3):
        code, reply = send(relay, [f"s{i}@example.org"], message(f"spooled {i}"))
        assert code == 250
        sids.append(submission_id(reply))
    wait_until(lambda: "will retry" in relay.log(), what="a failed send attempt")
    assert relay.stop() == 0
    assert count_rows(relay.data_dir, "spool") == 3

    fake_ses.start_listening()
    again = relay_factory(ses_config(fake_ses.url), port=None)
    for sid in sids:
        settled(again, sid)
    calls = fake_ses.wait_for_calls(3)
    sent_ids = sorted(dict(c.tags)["submission-id"] for c in calls)
    assert sent_ids == sorted(sids)
    assert count_rows(again.data_dir, "spool") == 0


def test_dead_ses_endpoint_keeps_the_message_queued(relay_factory, tmp_path: Path) -> None:
    from tests.conftest import free_port

    relay = relay_factory(ses_config(f"http://127.0.0.1:{free_port()}"))
    code, reply = send(relay, ["d@example.org"], message("nowhere"))
    assert code == 250
    sid = submission_id(reply)
    wait_until(lambda: "will retry" in relay.log(), what="a failed send attempt")
    assert statuses(relay, sid) == {"d@example.org": "queued"}
    assert count_rows(relay.data_dir, "spool") == 1
