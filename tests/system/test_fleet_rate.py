"""One send-rate ceiling for the account: two relays on one PostgreSQL state, both sending
flat out, send at `[ses] max_send_rate` together, not each.

Both hosts spool their mail while the class is paused (`[guard] action = "hold"`), then
one resume lets both go at once. The rate is measured where the mail arrives: a
stand-in SES server (tests/support/fake_ses.py) that both relays call and that notes
when it accepted each call and for how many recipients, over the steady middle of the
run, while both hosts are sending. (The stand-in answers at once and feeds no events
back, so the hosts' CPU goes to sending, and a loaded machine does not slow the senders
below their share.)
"""

from __future__ import annotations

import pytest

from tests.conftest import Relay, wait_until
from tests.support.fake_ses import FakeSes
from tests.support.smtp import message, smtp

pytestmark = pytest.mark.solo  # times a rate: runs alone (see Makefile)

RATE = 100.0  # recipients a second, for the account
MESSAGES = 200  # per host
RECIPIENTS = 5  # per message: 1,000 recipients a host, ~20 s at half the rate
SETTLE = 3.0  # seconds after both started: every heartbeat has seen the other host
TAIL = 2.0  # seconds before the first host ran dry: before the other takes the whole rate


def config(pg_url: str, endpoint: str) -> str:
    return (
        f'[state]\nurl = "{pg_url}"\n\n'
        f'[ses]\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\nmax_send_rate = {RATE}\n\n'
        '[guard]\naction = "hold"\n'  # a paused class's mail waits in the spool
    )


def spool(relay: Relay, name: str) -> None:
    """MESSAGES messages to RECIPIENTS recipients each (`<name>N@example.net`), on one connection."""
    rcpts = [f"{name}{i}@example.net" for i in range(RECIPIENTS)]
    with smtp(relay) as client:
        for n in range(MESSAGES):
            assert client.mail("app@example.com")[0] == 250
            for rcpt in rcpts:
                assert client.rcpt(rcpt)[0] == 250
            code, reply = client.data(message(f"{name} {n}"))
            assert code == 250, reply


def accepted_at(ses: FakeSes, name: str) -> list[tuple[float, int]]:
    """When the stand-in accepted each of one host's calls, and for how many recipients."""
    return [(c.monotonic, len(c.destinations)) for c in ses.calls if c.destinations[0].startswith(name)]


def test_two_relays_sending_flat_out_share_one_ceiling(relay_factory, pg_url: str) -> None:
    with FakeSes() as ses:
        a = relay_factory(config(pg_url, ses.url), name="a")
        b = relay_factory(config(pg_url, ses.url), name="b")
        a.cli("class", "pause", "transactional", "--reason", "until both hosts have their mail", check=True)
        wait_until(lambda: "paused" in b.cli("class", "status").stdout, timeout=10, what="the pause")
        spool(a, "a")
        spool(b, "b")
        assert ses.calls == []  # held
        b.cli("class", "resume", "transactional", check=True)

        total = MESSAGES * RECIPIENTS

        def all_sent() -> bool:
            return sum(len(c.destinations) for c in ses.calls) == 2 * total

        wait_until(all_sent, timeout=2 * total / RATE + 40, interval=0.5, what="every recipient sent")
        calls = {"a": accepted_at(ses, "a"), "b": accepted_at(ses, "b")}
    start = max(c[0][0] for c in calls.values()) + SETTLE
    end = min(c[-1][0] for c in calls.values()) - TAIL
    assert end - start >= 8, f"too short a steady middle: {end - start:.1f} s"
    counts = {host: sum(n for t, n in c if start <= t < end) for host, c in calls.items()}
    combined = sum(counts.values()) / (end - start)
    each = {host: round(n / (end - start), 1) for host, n in counts.items()}
    print(f"combined {combined:.1f}/s over {end - start:.1f} s; each {each}")
    assert abs(combined - RATE) <= 0.05 * RATE, (combined, each)
    for relay in (a, b):
        assert "SES send rate: 50 of 100 recipients/s (2 relays sending)" in relay.log()
