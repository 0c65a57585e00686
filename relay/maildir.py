"""Adding a message to a Maildir that other threads and processes write at the same time.

The sandbox's delivered copies and the notices' default route both write Maildirs
from several threads at once, and the first messages to a new address arrive
together (a burst to a new `+label`). Python's `mailbox.Maildir(create=True)`
checks for the directory and then makes it, so two first deliveries race and one
fails with FileExistsError. Here the directories are made with `exist_ok`, and each
message is written under a name no other writer can pick (time, pid and a random
UUID), then renamed into `new/`: the Maildir protocol, with no check-then-act step.
Any Maildir reader (`mailbox.Maildir`, mail clients) reads the result.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

SUBDIRS = ("tmp", "new", "cur")


def ensure(path: Path) -> None:
    """Make the Maildir at `path` (and its parents) unless it exists; safe under races."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)
    for sub in SUBDIRS:
        (path / sub).mkdir(mode=0o700, exist_ok=True)


def add(path: Path, message: bytes) -> Path:
    """Store `message` in the Maildir at `path` (created if need be), durably.

    The file is fsync'd before it is renamed into `new/`, and `new/` after, because
    callers report the message delivered as soon as this returns. Returns the path
    of the new file.
    """
    ensure(path)
    name = f"{time.time_ns()}.P{os.getpid()}Q{uuid.uuid4().hex}.{_host()}"
    tmp = path / "tmp" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(message)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    final = path / "new" / name
    os.rename(tmp, final)
    _fsync_dir(path / "new")
    return final


def _host() -> str:
    """The host part of a Maildir name: no "/" or ":" (they would change its meaning)."""
    return (socket.gethostname() or "localhost").replace("/", "\\057").replace(":", "\\072")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # platforms without directory fds
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
