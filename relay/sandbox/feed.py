"""A durable local event feed: the sandbox's stand-in for an SQS queue.

The sandbox writes SES events here as the same SNS-envelope bodies SQS would carry,
so the feedback consumer reads sandbox events through the very path it uses for
real queues (receive, apply, commit, delete) and the sandbox tests that path too.

On-disk layout (a Maildir-like pair of directories)::

    <data-dir>/sandbox/feed/tmp/<uuid>.part            being written; never received
    <data-dir>/sandbox/feed/new/<time>-<uuid>.json      committed; oldest first

`<time>` is the write time in nanoseconds since the epoch, 20 digits, zero-padded,
so that sorting the names sorts the events by when they were committed; within one
process the number is strictly increasing even if the clock stalls or steps back.
`<uuid>` keeps names unique across processes.

Semantics follow SQS closely enough for the consumer not to care: `receive` does not
remove anything (at-least-once delivery), `delete` is called only after the item's
effects are committed and is idempotent. A body is committed by writing it to
`tmp/`, fsyncing it, renaming it into `new/` and fsyncing `new/`, so a crash leaves
either nothing visible or the whole body, never a torn one. Deletes are not fsynced:
a delete lost in a crash means a redelivery, which the consumer must tolerate anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STALE_TMP_SECONDS = 3600.0
MAX_RECEIVE = 10  # SQS's own per-call limit; keeps consumer batches the same size

_SUFFIX = ".json"
_TMP_SUFFIX = ".part"

# Shared by every Feed in the process so that two Feed objects on the same directory
# (e.g. one per sender thread) still produce strictly increasing names.
_name_lock = threading.Lock()
_last_ns = 0


@dataclass(frozen=True)
class FeedItem:
    """One received body. `id` is the file name without its suffix."""

    id: str
    body: str
    path: Path


class Feed:
    """A directory of committed bodies, read oldest first."""

    def __init__(self, path: Path, *, stale_after: float = STALE_TMP_SECONDS) -> None:
        self.path = Path(path)
        self._tmp = self.path / "tmp"
        self._new = self.path / "new"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._new.mkdir(parents=True, exist_ok=True)
        # Names already reported as unreadable: warn once, not on every poll.
        self._warned: set[str] = set()
        self._clean_stale_tmp(stale_after)

    def put(self, body: str) -> str:
        """Commit one body durably and return its id."""
        if not isinstance(body, str):
            raise TypeError(f"feed bodies are str, not {type(body).__name__}")
        if not body:
            raise ValueError("empty body (SQS refuses empty messages too)")
        data = body.encode("utf-8")
        tmp = self._tmp / f"{uuid.uuid4().hex}{_TMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            # Name and rename under one lock: within this process, a later name is
            # never visible before an earlier one.
            with _name_lock:
                item_id = f"{_next_ns():020d}-{uuid.uuid4().hex}"
                os.rename(tmp, self._new / f"{item_id}{_SUFFIX}")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self._new)
        return item_id

    def receive(self, max_items: int = MAX_RECEIVE) -> list[FeedItem]:
        """The oldest committed items, left in place until `delete`."""
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        items: list[FeedItem] = []
        for name in self._names():
            if len(items) >= max_items:
                break
            path = self._new / name
            try:
                body = path.read_bytes().decode("utf-8")
            except FileNotFoundError:
                continue  # deleted by another consumer since we listed it
            except (OSError, UnicodeDecodeError) as exc:
                if name not in self._warned:
                    self._warned.add(name)
                    log.warning("feed item %s cannot be read, skipping it: %s", path, exc)
                continue
            items.append(FeedItem(id=name[: -len(_SUFFIX)], body=body, path=path))
        return items

    def delete(self, item: FeedItem) -> None:
        """Remove an item whose effects are committed; deleting twice is fine."""
        if item.path.parent != self._new or item.path.name != f"{item.id}{_SUFFIX}":
            raise ValueError(f"{item.path} is not an item of the feed at {self.path}")
        item.path.unlink(missing_ok=True)

    def pending(self) -> int:
        """How many committed items wait to be deleted (for status output and tests)."""
        return len(self._names())

    def _names(self) -> list[str]:
        return sorted(
            entry.name
            for entry in os.scandir(self._new)
            if entry.name.endswith(_SUFFIX) and not entry.name.startswith(".")
        )

    def _clean_stale_tmp(self, stale_after: float) -> None:
        """Remove bodies a crashed writer left half-written; young ones may still be
        in the middle of a `put` in another process, so they are left alone."""
        cutoff = time.time() - stale_after
        for entry in os.scandir(self._tmp):
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    log.info("removed stale partial feed file %s", entry.path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot remove stale feed file %s: %s", entry.path, exc)


def _next_ns() -> int:
    """Strictly increasing nanosecond stamp; caller holds `_name_lock`."""
    global _last_ns
    _last_ns = max(time.time_ns(), _last_ns + 1)
    return _last_ns


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
