"""SMTP AUTH: checking a login against the users file, with backoff and lockout.

Failures are counted per client address and per user name. A client address that
fails too often is locked out of AUTH for a while (so guessing is slow from one
place); a user name that fails too often is locked too (so guessing is slow from
many places). Each failure is answered a little later than the one before, and
attempts from one address are checked one at a time, so parallel connections do
not multiply the guesses an attacker gets before the lockout.

The scrypt check is CPU-heavy and runs in a thread: a flood of AUTH attempts must
not stall the event loop that carries everyone's mail.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from relay.intake.users import User, UsersFileError, dummy_hash, load_users, verify_password

log = logging.getLogger("ses_relay.auth")

Clock = Callable[[], float]
MAX_DELAY_FACTOR = 8
MAX_CONCURRENT_CHECKS = 4  # scrypt needs ~16 MB each
PRUNE_ABOVE = 10_000


class FailureTracker:
    """Failures per key within a sliding window; `max_failures` of them lock the key (pure)."""

    def __init__(
        self, max_failures: int, window: float, lockout: float, clock: Clock = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.clock = clock
        self._failures: dict[Hashable, list[float]] = {}
        self._locked: dict[Hashable, float] = {}

    def locked_until(self, key: Hashable) -> float | None:
        until = self._locked.get(key)
        if until is None:
            return None
        if until <= self.clock():
            del self._locked[key]
            return None
        return until

    def record_failure(self, key: Hashable) -> int:
        """Count a failure; returns the failures now in the window (locking at the limit)."""
        now = self.clock()
        if len(self._failures) > PRUNE_ABOVE:
            self._prune(now)
        recent = [t for t in self._failures.get(key, []) if now - t < self.window]
        recent.append(now)
        self._failures[key] = recent
        if len(recent) >= self.max_failures:
            self._locked[key] = now + self.lockout
            self._failures.pop(key, None)
        return len(recent)

    def reset(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def _prune(self, now: float) -> None:
        for key in [k for k, ts in self._failures.items() if not ts or now - ts[-1] >= self.window]:
            del self._failures[key]
        for key in [k for k, until in self._locked.items() if until <= now]:
            del self._locked[key]


class Verdict(Enum):
    OK = "ok"
    INVALID = "invalid"
    LOCKED = "locked"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    user: User | None = None
    delay: float = 0.0  # seconds to wait before answering a failure


class UserSource:
    """The users file, re-read when it changes so `ses-relay user add` needs no restart.

    A file that turns bad while the relay runs keeps the last good users (and says
    so in the log) rather than locking everyone out.
    """

    def __init__(self, path: Path, classes: Mapping[str, Any] | None = None) -> None:
        self.path = path
        self.classes = classes
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, User] = {}
        self.reload(strict=True)

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self, *, strict: bool = False) -> None:
        stamp = self._current_stamp()
        if stamp == self._stamp and self._stamp is not None:
            return
        try:
            users = load_users(self.path, self.classes).users
        except UsersFileError as exc:
            if strict:
                raise
            log.error("keeping the previous users: %s", exc)
            self._stamp = stamp
            return
        if self._stamp is not None or users:
            log.info("loaded %d SMTP user(s) from %s", len(users), self.path)
        self._users = users
        self._stamp = stamp

    def users(self) -> dict[str, User]:
        self.reload()
        return self._users

    def get(self, name: str) -> User | None:
        return self.users().get(name)


class Authenticator:
    """Checks logins for every listener of a relay (shared, so lockouts are too)."""

    def __init__(
        self,
        source: UserSource,
        *,
        max_failures: int = 5,
        max_failures_per_user: int = 10,
        window: float = 600.0,
        lockout: float = 900.0,
        failure_delay: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.source = source
        self.by_ip = FailureTracker(max_failures, window, lockout, clock)
        self.by_user = FailureTracker(max_failures_per_user, window, lockout, clock)
        self.failure_delay = failure_delay
        self._checks = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        self._per_ip: dict[str, tuple[asyncio.Lock, int]] = {}

    def has_users(self) -> bool:
        return bool(self.source.users())

    async def login(self, ip: str, login: bytes, password: bytes) -> Outcome:
        """Check one AUTH exchange from client `ip`. Never logs the password."""
        lock, users = self._per_ip.get(ip, (asyncio.Lock(), 0))
        self._per_ip[ip] = (lock, users + 1)
        try:
            async with lock:
                outcome = await self._login(ip, login, password)
                if outcome.delay > 0:
                    await asyncio.sleep(outcome.delay)  # under the lock: parallel guesses wait too
                return outcome
        finally:
            lock, users = self._per_ip[ip]
            if users <= 1:
                del self._per_ip[ip]
            else:
                self._per_ip[ip] = (lock, users - 1)

    async def _login(self, ip: str, login: bytes, password: bytes) -> Outcome:
        try:
            name = login.decode("utf-8")
        except UnicodeDecodeError:
            name = login.decode("utf-8", "replace")
        shown = ascii(name[:64])
        if self.by_ip.locked_until(ip) is not None or self.by_user.locked_until(name) is not None:
            log.warning("login for %s from %s refused: locked out after repeated failures", shown, ip)
            return Outcome(Verdict.LOCKED)
        user = self.source.get(name)
        stored = user.password_hash if user is not None else dummy_hash()
        async with self._checks:
            ok = await asyncio.to_thread(verify_password, password, stored)
        if ok and user is not None:
            self.by_user.reset(name)
            log.info("login ok: user %s from %s", shown, ip)
            return Outcome(Verdict.OK, user)
        failures = self.by_ip.record_failure(ip)
        self.by_user.record_failure(name)
        why = "unknown user" if user is None else "wrong password"
        log.warning("login failed for %s from %s (%s; %d recent failure(s))", shown, ip, why, failures)
        if self.by_ip.locked_until(ip) is not None:
            log.warning("locking %s out of AUTH for %.0f s", ip, self.by_ip.lockout)
        if self.by_user.locked_until(name) is not None:
            log.warning("locking user %s out of AUTH for %.0f s", shown, self.by_user.lockout)
        factor = min(2 ** (failures - 1), MAX_DELAY_FACTOR)
        return Outcome(Verdict.INVALID, delay=self.failure_delay * factor)
