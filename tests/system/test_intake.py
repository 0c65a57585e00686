"""SMTP intake against a real `ses-relay serve --sandbox` process and a real smtplib client."""

from __future__ import annotations

import mailbox
import smtplib
import socket
from pathlib import Path

import pytest

from relay.suppression import Cause
from tests.conftest import Relay, wait_until
from tests.support.relaydb import count_rows, suppress
from tests.support.smtp import message, send, smtp, submission_id


def sandbox_copies(relay: Relay, address: str) -> list[mailbox.MaildirMessage]:
    path = relay.data_dir / "sandbox" / address
    if not (path / "cur").exists():  # the stand-in may be making the Maildir right now
        return []
    return list(mailbox.Maildir(path, create=False))


def test_rcpt_refuses_all_class_suppression_with_reason_and_sends_the_rest(relay_factory) -> None:
    relay = relay_factory(sandbox=True)
    suppress(relay.data_dir, "gone@example.org", reason="Permanent/NoEmail: 550 5.1.1 no such user")
    suppress(relay.data_dir, "angry@example.org", cause=Cause.COMPLAINT, reason="abuse complaint")

    with smtp(relay) as client:
        client.mail("app@example.com")
        assert client.rcpt("a@example.org")[0] == 250
        code, text = client.rcpt("Gone@Example.ORG")
        assert code == 550
        assert text.startswith(b"5.1.1 ") and b"no such user" in text and b"indefinitely" in text
        code, text = client.rcpt("angry@example.org")
        assert (code, text[:6]) == (550, b"5.7.1 ")
        assert client.rcpt("b@example.org")[0] == 250
        code, reply = client.data(message("two of three"))
    assert code == 250
    sid = submission_id(reply)

    shown = wait_until(
        lambda: (s := relay.json("submission", "show", sid))
        and all(r["status"] == "delivered" for r in s["recipients"])
        and s,
        what="both recipients delivered (the sandbox's Delivery events applied)",
    )
    assert shown["id"] == sid and shown["class"] == "transactional"
    assert [r["address"] for r in shown["recipients"]] == ["a@example.org", "b@example.org"]
    assert all(r["ses_message_id"] for r in shown["recipients"])
    assert len(sandbox_copies(relay, "a@example.org")) == 1
    assert sandbox_copies(relay, "gone@example.org") == []

    show = relay.json("suppression", "show", "gone@example.org")
    assert show["suppressions"][0]["refused_count"] == 1


def test_class_specific_suppression_drops_recipient_at_data_only_for_that_class(relay_factory) -> None:
    relay = relay_factory(sandbox=True)
    suppress(relay.data_dir, "nobulk@example.org", klass="bulk", cause=Cause.COMPLAINT, reason="complaint")

    bulk = message("bulk one", "Precedence: bulk\r\n")
    code, reply = send(relay, ["nobulk@example.org", "fine@example.org"], bulk)
    assert code == 250
    sid = submission_id(reply)
    shown = relay.json("submission", "show", sid)
    assert shown["class"] == "bulk"
    statuses = {r["address"]: r["status"] for r in shown["recipients"]}
    assert statuses["nobulk@example.org"] == "suppressed"
    wait_until(lambda: sandbox_copies(relay, "fine@example.org"), what="bulk copy to fine@")

    code, reply = send(relay, ["nobulk@example.org"], message("tx one"))
    assert code == 250
    wait_until(lambda: sandbox_copies(relay, "nobulk@example.org"), what="transactional copy")

    # Every recipient suppressed for the class: refused, and nothing is stored.
    before = count_rows(relay.data_dir, "submissions")
    code, reply = send(relay, ["nobulk@example.org"], message("bulk two", "X-Message-Class: bulk\r\n"))
    assert code == 550 and reply.startswith(b"5.7.1 ")
    assert count_rows(relay.data_dir, "submissions") == before


def test_internal_headers_never_reach_the_recipient(relay_factory) -> None:
    relay = relay_factory(sandbox=True)
    extra = (
        "X-Message-Class: list\r\nX-SES-MESSAGE-TAGS: campaign=spring, team=growth\r\n"
        "Bcc: hidden@example.org\r\n"
    )
    code, reply = send(relay, ["r@example.org"], message("internal", extra))
    assert code == 250
    copies = wait_until(lambda: sandbox_copies(relay, "r@example.org"), what="sandbox copy")
    got = copies[0]
    for name in ("X-Message-Class", "X-SES-MESSAGE-TAGS", "X-SES-CONFIGURATION-SET", "Bcc"):
        assert got[name] is None, name
    assert got["Subject"] == "internal"
    shown = relay.json("submission", "show", submission_id(reply))
    assert shown["class"] == "list"


def test_unknown_class_header_is_refused_with_the_reason(relay_factory) -> None:
    relay = relay_factory(sandbox=True)
    code, reply = send(relay, ["r@example.org"], message("x", "X-Message-Class: newsletter\r\n"))
    assert code == 550 and b"newsletter" in reply and b"transactional" in reply
    code, reply = send(relay, ["r@example.org"], message("y", "X-SES-MESSAGE-TAGS: bad tag=x\r\n"))
    assert code == 550 and b"X-SES-MESSAGE-TAGS" in reply
    assert count_rows(relay.data_dir, "submissions") == 0


def test_bad_input_is_refused_and_leaves_no_rows(relay_factory) -> None:
    relay = relay_factory("[limits]\nrecipients = 5\nmessage_size = 1048576\n", sandbox=True)

    with smtp(relay) as client:
        assert b"SIZE 1048576" in client.ehlo_resp
        client.mail("app@example.com")
        for i in range(5):
            assert client.rcpt(f"r{i}@example.org")[0] == 250
        code, text = client.rcpt("r6@example.org")
        assert (code, text[:6]) == (452, b"4.5.3 ")
        client.rset()

        for bad in ("no-domain", "two@@example.org", "a b@example.org", "x@-bad-.example", "x@example"):
            client.mail("app@example.com")
            code, _ = client.rcpt(bad)
            assert code in (501, 553), bad
            client.rset()

        code, text = client.mail("not an address")
        assert code in (501, 553)

        # Too big: SIZE declared up front, and too much data sent without SIZE.
        code, text = client.docmd("MAIL FROM:<app@example.com> SIZE=2000000")
        assert (code, text[:6]) == (552, b"5.3.4 ")
        client.rset()
        client.mail("app@example.com")
        client.rcpt("r@example.org")
        big = message("big", body=("x" * 998 + "\r\n") * 1100)
        code, text = client.data(big)
        assert (code, text[:6]) == (552, b"5.3.4 ")

    assert count_rows(relay.data_dir, "submissions") == 0
    assert count_rows(relay.data_dir, "recipients") == 0
    assert count_rows(relay.data_dir, "spool") == 0


def test_eleven_megabyte_message_gets_552_at_the_default_limit(relay_factory) -> None:
    relay = relay_factory(sandbox=True)
    with smtp(relay) as client:
        assert b"SIZE 10485760" in client.ehlo_resp
        client.mail("app@example.com")
        client.rcpt("r@example.org")
        code, text = client.data(message("huge", body=("y" * 998 + "\r\n") * 11_000))
    assert (code, text[:6]) == (552, b"5.3.4 ")
    assert count_rows(relay.data_dir, "submissions") == 0


def test_client_outside_allow_networks_cannot_relay(relay_factory) -> None:
    relay = relay_factory('[[listeners]]\nallow_networks = ["127.0.0.1/32"]\n', sandbox=True)
    with socket.create_connection(("127.0.0.1", relay.port)):
        pass
    client = smtplib.SMTP(timeout=10, source_address=("127.0.0.2", 0))
    try:
        client.connect("127.0.0.1", relay.port)
    except OSError:
        pytest.skip("127.0.0.2 is not usable as a source address here")
    with client:
        client.ehlo("outsider.example")
        code, text = client.mail("app@example.com")
    assert (code, text[:6]) == (530, b"5.7.0 ")


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ("[ses]\napi = 'v3'\n", "ses.api"),
        ("[ses]\nregoin = 'x'\n", "ses.regoin"),
        ("default_class = 'nope'\n", "default_class"),
        ("[classes.tx]\nconfiguration_sett = 'a'\n", "classes.tx.configuration_sett"),
        ("[[listeners]]\nlisten = 'localhost'\n", "listeners[0].listen"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_broken_config_exits_2_naming_the_key(tmp_path: Path, config: str, key: str) -> None:
    from tests.conftest import run_cli

    path = tmp_path / "bad.toml"
    path.write_text(config)
    data_dir = tmp_path / "data"
    result = run_cli("serve", "--sandbox", data_dir=data_dir, config=path)
    assert result.returncode == 2
    assert key in result.stderr
    assert not (data_dir / "relay.db").exists()
