"""serve's worker process: started, woken, restarted, and never run twice.

The intake (serve) and the sending side (the worker: sender, notices, guard,
feedback consumer) are separate processes sharing the data dir, so boto3's CPU and
the GIL never slow the SMTP intake. This module holds the small amount of process
plumbing that takes:

- serve starts the worker with a pipe; a byte on it means "new mail is spooled",
  so sending starts at once instead of at the next poll;
- if the worker dies, serve logs it and starts another (with backoff);
- a worker whose serve is gone (even by kill -9) stops by itself (PR_SET_PDEATHSIG
  where Linux offers it, and a parent-pid watch everywhere);
- an exclusive lock on <data-dir>/worker.lock means a new worker waits for an old
  one to finish its in-flight sends: two senders on one spool would duplicate mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import signal
from pathlib import Path
from typing import IO

from relay.loop import Loop
from relay.ops import services

log = logging.getLogger("ses_relay.supervisor")

STOP_GRACE_SECONDS = 35.0
RESTART_BACKOFF_FIRST = 1.0
RESTART_BACKOFF_MAX = 30.0
LOCK_WAIT_SECONDS = 120.0
PARENT_POLL_SECONDS = services.every("parent-watch")
_PR_SET_PDEATHSIG = 1


class WorkerSupervisor(Loop):
    """Each round starts a worker and waits for it to exit (or for the stop, which stops
    it); the rest after an exit is the restart backoff, doubling up to RESTART_BACKOFF_MAX
    and back to the first after a worker that ran for a minute."""

    def __init__(self, command: list[str]) -> None:
        super().__init__()
        self.command = command
        self._wake_fd: int | None = None
        self._backoff = RESTART_BACKOFF_FIRST
        self.restarts = 0

    def wake(self, _reason: object = None) -> None:
        """Tell the worker new mail is spooled; never blocks (a full pipe already says so).
        The supervisor's own rest (a restart backoff) is not cut short by mail."""
        if self._wake_fd is None:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self._wake_fd, b"!")

    async def tick(self) -> float | None:
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        command = [*self.command, "--wake-fd", str(read_fd), "--parent-pid", str(os.getpid())]
        try:
            proc = await asyncio.create_subprocess_exec(*command, pass_fds=(read_fd,))
        finally:
            os.close(read_fd)
        self._wake_fd = write_fd
        started = loop.time()
        exited = asyncio.create_task(proc.wait())
        stopping = asyncio.create_task(self.stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            await _stop(proc)
            exited.cancel()
            self._close_pipe()
            return None
        stopping.cancel()
        self._close_pipe()
        self.restarts += 1
        if loop.time() - started > 60:
            self._backoff = RESTART_BACKOFF_FIRST
        backoff = self._backoff
        log.error("worker exited with status %s; starting another in %.0fs", proc.returncode, backoff)
        self._backoff = min(backoff * 2, RESTART_BACKOFF_MAX)
        return backoff

    def _close_pipe(self) -> None:
        if self._wake_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._wake_fd)
            self._wake_fd = None


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout=STOP_GRACE_SECONDS)
    except TimeoutError:
        log.error("worker did not stop within %.0fs; killing it", STOP_GRACE_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def hold_worker_lock(path: Path) -> IO[bytes]:
    """Take the data dir's worker lock, waiting for a previous worker to let go."""
    handle = path.open("ab")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOCK_WAIT_SECONDS
    warned = False
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if loop.time() > deadline:
                handle.close()
                raise SystemExit(f"ses-relay: another worker still holds {path}; giving up") from None
            if not warned:
                log.warning("another worker holds %s; waiting for it to finish", path)
                warned = True
            await asyncio.sleep(0.2)


def die_with_parent() -> None:
    """Ask Linux to SIGTERM us when our parent dies (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ParentWatch(Loop):
    """Sets the worker's stop when serve is gone: our parent pid changes when it dies.
    Looks every PARENT_POLL_SECONDS, for systems without PR_SET_PDEATHSIG."""

    def __init__(self, parent_pid: int) -> None:
        super().__init__()
        self.parent_pid = parent_pid

    async def on_start(self) -> None:
        die_with_parent()

    async def tick(self) -> float | None:
        if os.getppid() != self.parent_pid:
            log.error("serve (pid %d) is gone; the worker stops", self.parent_pid)
            self.stop.set()
            return None
        return PARENT_POLL_SECONDS
