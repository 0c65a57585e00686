"""First deliveries to a new Maildir from many threads at once: no FileExistsError, no copy lost.

A burst to a new `+label` address makes the sandbox's sender threads create the same
Maildir together; the notices' Maildir route does the same for a sender's first
notices. Each test starts its threads on a barrier so that they really collide.
"""

from __future__ import annotations

import mailbox
import threading
from collections.abc import Callable
from pathlib import Path

from feedback.notices.mailboxes import deliver_maildir
from relay import maildir
from relay.sandbox.feed import Feed
from relay.sandbox.stand_in import SandboxSes, mailbox_dir, read_events
from relay.sending.ses_api import SendRequest
from tests.conftest import wait_until
from tests.support.load import Load, Stage

THREADS = 16
ROUNDS = 5  # a fresh address each round: one race is caught most of the time, five nearly always


def together(n: int, work: Callable[[int], None]) -> list[BaseException]:
    """Run work(0..n-1) in n threads released at the same moment; the errors raised."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return errors


def test_concurrent_adds_to_a_new_maildir_all_land(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        box = tmp_path / "deep" / f"user+r{round_}@example.org"
        errors = together(
            THREADS, lambda i, box=box: maildir.add(box, f"Subject: {i}\n\nbody {i}\n".encode())
        )
        assert errors == []
        subjects = sorted(int(m["Subject"]) for m in mailbox.Maildir(box, create=False))
        assert subjects == list(range(THREADS))
        assert not list((box / "tmp").iterdir())  # nothing left half-written
        assert (box.stat().st_mode & 0o777) == 0o700


def test_add_into_an_existing_maildir_and_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    box = tmp_path / "box"
    mailbox.Maildir(box, create=True).add(b"Subject: old\n\nold\n")
    written = maildir.add(box, b"Subject: new\n\nnew\n")
    assert written.parent == box / "new" and written.read_bytes() == b"Subject: new\n\nnew\n"
    assert sorted(m["Subject"] for m in mailbox.Maildir(box, create=False)) == ["new", "old"]
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    try:
        maildir.add(blocked, b"x")
    except OSError:
        pass
    else:
        raise AssertionError("a file where the Maildir should be must raise")
    assert blocked.read_text() == "not a directory"


def test_sandbox_first_deliveries_to_a_new_label_from_many_threads(tmp_path: Path) -> None:
    sandbox = SandboxSes(tmp_path / "sandbox", Feed(tmp_path / "feed"))
    raw = b"From: App <app@example.com>\r\nTo: x@example.org\r\nSubject: burst\r\n\r\nhi\r\n"
    for round_ in range(ROUNDS):
        address = f"success+new{round_}@simulator.amazonses.com"
        request = SendRequest(raw=raw, source="app@example.com", destinations=(address,))
        errors = together(THREADS, lambda _i, request=request: sandbox.send_raw(request))
        assert errors == []
        assert len(list(mailbox.Maildir(mailbox_dir(sandbox.root, address), create=False))) == THREADS
    deliveries = [e for e in read_events(sandbox.feed, 10_000) if e["eventType"] == "Delivery"]
    assert len(deliveries) == THREADS * ROUNDS


def test_notice_maildir_route_first_deliveries_from_many_threads(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        box = tmp_path / "mailboxes" / f"sender{round_}@example.com"
        errors = together(
            THREADS, lambda i, box=box: deliver_maildir(box, f"Subject: n{i}\r\n\r\nx\r\n".encode())
        )
        assert errors == []
        assert len(list(mailbox.Maildir(box, create=False))) == THREADS


def test_serve_sandbox_burst_to_new_labels_has_no_tracebacks(relay_factory) -> None:
    """Through the real relay: the sender's threads deliver bursts to new addresses.

    Messages i*10 .. i*10+9 go to the new label `burst{i}`, so the messages the sender
    takes up together mostly share an address that has no Maildir yet.
    """
    relay = relay_factory(sandbox=True)
    labels, per_label = 20, 10
    address = "success+burst{}@simulator.amazonses.com".format
    load = Load(
        "127.0.0.1", relay.port, n=labels * per_label, connections=10,
        recipients=lambda i: [address(i // per_label)],
    ).start()  # fmt: skip
    refused = [o for o in load.join() if o.stage is not Stage.ACCEPTED]
    assert refused == []
    relay.wait_log("sandbox accepted", count=labels * per_label, timeout=60)

    def copies(label: int) -> int:
        box = mailbox_dir(relay.data_dir / "sandbox", address(label))
        return len(list(mailbox.Maildir(box, create=False))) if box.exists() else 0

    wait_until(
        lambda: all(copies(i) >= per_label for i in range(labels)), timeout=30, what="every copy delivered"
    )
    log = relay.log()
    assert "FileExistsError" not in log
    assert "unexpected error" not in log
    assert [copies(i) for i in range(labels)] == [per_label] * labels
