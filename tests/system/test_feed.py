"""The local feed: durable, ordered, SQS-like receive/delete, crash-safe."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from relay.sandbox.feed import Feed, FeedItem


@pytest.fixture
def feed(tmp_path: Path) -> Feed:
    return Feed(tmp_path / "feed")


def test_layout_is_created(tmp_path: Path) -> None:
    Feed(tmp_path / "a" / "feed")
    assert (tmp_path / "a" / "feed" / "tmp").is_dir()
    assert (tmp_path / "a" / "feed" / "new").is_dir()


def test_put_then_receive_returns_body_and_leaves_nothing_in_tmp(feed: Feed) -> None:
    item_id = feed.put('{"a": "ünïcode ✓"}')
    [item] = feed.receive()
    assert item.id == item_id
    assert item.body == '{"a": "ünïcode ✓"}'
    assert item.path == feed.path / "new" / f"{item_id}.json"
    assert list((feed.path / "tmp").iterdir()) == []


def test_ids_have_time_then_uuid_shape(feed: Feed) -> None:
    before = time.time_ns()
    item_id = feed.put("x")
    stamp, _, unique = item_id.partition("-")
    assert len(stamp) == 20 and stamp.isdigit()
    assert before <= int(stamp) <= time.time_ns()
    assert len(unique) == 32 and int(unique, 16) >= 0


def test_receive_is_oldest_first_and_bounded(feed: Feed) -> None:
    ids = [feed.put(f"body {i}") for i in range(25)]
    assert ids == sorted(ids)
    first = feed.receive(10)
    assert [i.id for i in first] == ids[:10]
    assert [i.body for i in first] == [f"body {i}" for i in range(10)]
    assert [i.id for i in feed.receive(100)] == ids
    assert len(feed.receive()) == 10  # the default is SQS's batch size


def test_receive_does_not_remove_and_delete_is_idempotent(feed: Feed) -> None:
    feed.put("one")
    feed.put("two")
    first = feed.receive()
    assert [i.body for i in feed.receive()] == ["one", "two"]  # still there: at-least-once
    feed.delete(first[0])
    feed.delete(first[0])  # twice is fine
    assert [i.body for i in feed.receive()] == ["two"]
    assert feed.pending() == 1
    feed.delete(first[1])
    assert feed.receive() == []
    assert feed.pending() == 0


def test_items_survive_reopening(tmp_path: Path) -> None:
    Feed(tmp_path / "feed").put("kept")
    assert [i.body for i in Feed(tmp_path / "feed").receive()] == ["kept"]


def test_delete_refuses_an_item_of_another_feed(tmp_path: Path) -> None:
    a, b = Feed(tmp_path / "a"), Feed(tmp_path / "b")
    a.put("x")
    [item] = a.receive()
    with pytest.raises(ValueError, match="not an item"):
        b.delete(item)
    forged = FeedItem(id="other", body="x", path=item.path)
    with pytest.raises(ValueError, match="not an item"):
        a.delete(forged)
    assert a.pending() == 1


@pytest.mark.parametrize(("body", "error"), [("", ValueError), (b"bytes", TypeError), (None, TypeError)])
def test_put_refuses_bad_bodies(feed: Feed, body: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        feed.put(body)  # type: ignore[arg-type]
    assert feed.pending() == 0
    assert list((feed.path / "tmp").iterdir()) == []


def test_receive_refuses_a_silly_batch_size(feed: Feed) -> None:
    with pytest.raises(ValueError):
        feed.receive(0)


def test_partial_write_in_tmp_is_never_received(feed: Feed) -> None:
    # What a crash in the middle of put() leaves behind.
    (feed.path / "tmp" / "deadbeef.part").write_text('{"Type": "Notif')
    (feed.path / "tmp" / "00000000000000000001-ab.json").write_text('{"Type": "Notif')
    assert feed.receive() == []
    feed.put("whole")
    assert [i.body for i in feed.receive()] == ["whole"]


def test_stale_tmp_files_are_cleaned_on_construction_young_ones_kept(tmp_path: Path) -> None:
    Feed(tmp_path / "feed")
    stale = tmp_path / "feed" / "tmp" / "stale.part"
    young = tmp_path / "feed" / "tmp" / "young.part"
    stale.write_text("half")
    young.write_text("half")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    feed = Feed(tmp_path / "feed")
    assert not stale.exists()
    assert young.exists()  # may belong to a put() still running in another process
    assert feed.receive() == []


def test_unreadable_items_are_skipped_with_one_warning(feed: Feed, caplog: pytest.LogCaptureFixture) -> None:
    new = feed.path / "new"
    (new / "00000000000000000001-bad.json").write_bytes(b"\xff\xfe not utf-8")
    (new / "00000000000000000002-dir.json").mkdir()
    (new / ".00000000000000000003-hidden.json").write_text("editor droppings")
    (new / "00000000000000000004-notes.txt").write_text("not an item")
    good = feed.put("good")
    with caplog.at_level(logging.WARNING, logger="relay.sandbox.feed"):
        assert [i.id for i in feed.receive()] == [good]
        assert [i.id for i in feed.receive()] == [good]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per bad item, not one per poll
    assert any("bad.json" in r.getMessage() for r in warnings)
    assert any("dir.json" in r.getMessage() for r in warnings)


def test_unreadable_items_do_not_shrink_the_batch(feed: Feed) -> None:
    (feed.path / "new" / "00000000000000000001-bad.json").write_bytes(b"\xff")
    ids = [feed.put(str(i)) for i in range(3)]
    assert [i.id for i in feed.receive(3)] == ids


def test_concurrent_puts_from_threads_and_feed_objects_stay_unique_and_ordered(tmp_path: Path) -> None:
    feeds = [Feed(tmp_path / "feed") for _ in range(4)]
    results: list[list[str]] = [[] for _ in feeds]

    def writer(n: int) -> None:
        for i in range(25):
            results[n].append(feeds[n].put(f"{n}:{i}"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(len(feeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    items = feeds[0].receive(1000)
    assert len(items) == 100 == len({i.id for i in items})
    for n, ids in enumerate(results):
        # Each writer's own puts come back in the order it made them.
        assert [i.id for i in items if i.body.startswith(f"{n}:")] == ids
