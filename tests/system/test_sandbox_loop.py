"""The whole loop on a laptop: serve --sandbox, SES stand-in events, consumer, suppression, RCPT refusal."""

from __future__ import annotations

from tests.conftest import wait_until
from tests.support.smtp import message, send, smtp, submission_id

BOUNCE = "bounce@simulator.amazonses.com"


def test_bounce_simulator_address_ends_suppressed_and_refused_at_rcpt(relay_factory) -> None:
    relay = relay_factory(sandbox=True)
    code, reply = send(relay, [BOUNCE, "success@simulator.amazonses.com"], message("to the simulator"))
    assert code == 250
    sid = submission_id(reply)

    def bounced() -> dict | None:
        shown = relay.json("suppression", "show", BOUNCE)
        return shown if shown["suppressions"] else None

    shown = wait_until(bounced, timeout=10, what="a suppression for the bounce simulator")
    entry = shown["suppressions"][0]
    assert (entry["class"], entry["level"], entry["cause"]) == ("*", "hard", "bounce")
    assert entry["ses_message_id"]

    statuses = {r["address"]: r["status"] for r in relay.json("submission", "show", sid)["recipients"]}
    assert statuses == {BOUNCE: "bounced", "success@simulator.amazonses.com": "delivered"}
    kinds = sorted(e["kind"] for e in relay.json("events", "list", "--address", BOUNCE))
    assert kinds == ["bounce", "send"]

    with smtp(relay) as client:
        client.mail("app@example.com")
        code, text = client.rcpt(BOUNCE)
    assert (code, text[:6]) == (550, b"5.1.1 ")


def test_complaint_simulator_suppresses_only_the_message_class(relay_factory) -> None:
    relay = relay_factory(sandbox=True)
    complaint = "complaint@simulator.amazonses.com"
    code, _ = send(relay, [complaint], message("list mail", "List-Id: <news.example.com>\r\n"))
    assert code == 250
    shown = wait_until(
        lambda: (s := relay.json("suppression", "show", complaint))["suppressions"] and s,
        what="a complaint suppression",
    )
    entry = shown["suppressions"][0]
    assert (entry["class"], entry["level"], entry["cause"], entry["expires_at"]) == (
        "list", "permanent", "complaint", None,
    )  # fmt: skip
    # Refused for list mail at DATA, still accepted for transactional mail.
    code, reply = send(relay, [complaint], message("list again", "List-Id: <news.example.com>\r\n"))
    assert (code, reply[:6]) == (550, b"5.7.1 ")
    code, _ = send(relay, [complaint], message("receipt"))
    assert code == 250
