"""A small, bounded concurrent SMTP load for fault tests: N messages over C connections.

Fault tests need to know, per message, what the client was told, because the
promise under test is about exactly that: a 250 means the message will be sent,
a 4xx/5xx means it will not, and a connection lost while the message was being
transferred leaves it in doubt (the server may have committed it just before it
died). Each worker thread keeps one SMTP connection and reuses it for message
after message, as an application's mail library would; after a lost connection
it reconnects for the next message. Every loop is bounded by the message count
and every socket operation by a timeout.

    load = Load("127.0.0.1", relay.port, n=2000, connections=10, make_message=msg).start()
    wait_until(lambda: load.finished >= 800)
    ...
    outcomes = load.join()
"""

from __future__ import annotations

import enum
import re
import smtplib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

QUEUED = re.compile(r"queued as (\S+)")


class Stage(enum.Enum):
    """What the client can conclude about one message."""

    ACCEPTED = "accepted"  # 250 to DATA: the server owes a send (or a notice)
    REJECTED = "rejected"  # a 4xx/5xx reply: the server must not send it
    IN_DOUBT = "in_doubt"  # connection lost during DATA: either is allowed
    NOT_SENT = "not_sent"  # never reached DATA (refused, lost before, or stopped)


@dataclass(frozen=True)
class Outcome:
    index: int
    stage: Stage
    code: int | None  # the SMTP reply code that decided it, if any
    reply: str  # the reply text, or the exception that ended the attempt
    sid: str | None  # the submission id from "queued as <id>"
    elapsed: float  # seconds from MAIL to the final reply (or failure)


def default_message(index: int) -> bytes:
    """About 1 KB, with the index in the Message-ID so that what SES received maps back."""
    line = "line {n} of message {index}: the quick brown fox jumps over the lazy dog\r\n"
    body = "".join(line.format(n=n, index=index) for n in range(12))
    return (
        f"From: Load <load@example.com>\r\nTo: r{index}@example.org\r\nSubject: load {index}\r\n"
        f"Message-ID: <load-{index}@example.com>\r\n\r\n{body}"
    ).encode()


def default_recipients(index: int) -> Sequence[str]:
    return (f"r{index}@example.org",)


MESSAGE_ID = re.compile(rb"Message-ID: <load-(\d+)@example\.com>", re.IGNORECASE)


def load_index(raw: bytes) -> int | None:
    """The message index in a raw message built by `default_message` (as SES received it)."""
    match = MESSAGE_ID.search(raw)
    return int(match.group(1)) if match else None


class Load:
    """Send `n` messages over `connections` concurrent SMTP connections, in threads."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        n: int,
        connections: int,
        make_message: Callable[[int], bytes] = default_message,
        recipients: Callable[[int], Sequence[str]] = default_recipients,
        sender: str = "app@example.com",
        timeout: float = 30.0,
    ) -> None:
        if n < 0 or connections < 1:
            raise ValueError("need n >= 0 and connections >= 1")
        self.host, self.port = host, port
        self.n, self.connections = n, connections
        self.make_message, self.recipients, self.sender = make_message, recipients, sender
        self.timeout = timeout
        self._lock = threading.Lock()
        self._next = 0
        self._outcomes: dict[int, Outcome] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0
        self.ended_at = 0.0

    # -- control --------------------------------------------------------------

    def start(self) -> Load:
        self.started_at = time.monotonic()
        self._threads = [
            threading.Thread(target=self._worker, name=f"smtp-load-{i}", daemon=True)
            for i in range(self.connections)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Send no new messages; those not started are recorded as NOT_SENT."""
        self._stop.set()

    def join(self, timeout: float = 90.0) -> list[Outcome]:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            self.stop()
            raise TimeoutError(f"SMTP load did not finish in {timeout}s ({self.finished} of {self.n} done)")
        self.ended_at = time.monotonic()
        with self._lock:
            return [self._outcomes[i] for i in sorted(self._outcomes)]

    @property
    def finished(self) -> int:
        with self._lock:
            return len(self._outcomes)

    @property
    def accepted(self) -> int:
        return self.count(Stage.ACCEPTED)

    def count(self, stage: Stage) -> int:
        """Messages finished so far with this outcome."""
        with self._lock:
            return sum(o.stage is stage for o in self._outcomes.values())

    @property
    def seconds(self) -> float:
        return (self.ended_at or time.monotonic()) - self.started_at

    # -- the workers ----------------------------------------------------------

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self.n:
                return None
            index, self._next = self._next, self._next + 1
            return index

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self._outcomes[outcome.index] = outcome

    def _connect(self) -> smtplib.SMTP:
        client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        client.ehlo("load.example.com")
        return client

    def _worker(self) -> None:
        client: smtplib.SMTP | None = None
        try:
            while (index := self._take()) is not None:
                if self._stop.is_set():
                    self._record(Outcome(index, Stage.NOT_SENT, None, "stopped", None, 0.0))
                    continue
                if client is None:
                    try:
                        client = self._connect()
                    except (OSError, smtplib.SMTPException) as exc:
                        self._record(Outcome(index, Stage.NOT_SENT, None, f"connect: {exc!r}", None, 0.0))
                        continue
                outcome, usable = self._send_one(client, index)
                self._record(outcome)
                if not usable:
                    _close(client)
                    client = None
        finally:
            if client is not None:
                try:
                    client.quit()
                except (OSError, smtplib.SMTPException):
                    _close(client)

    def _send_one(self, client: smtplib.SMTP, index: int) -> tuple[Outcome, bool]:
        """One transaction on an open connection; the bool says whether it may be reused."""
        began = time.monotonic()

        def done(stage: Stage, code: int | None, reply: str, sid: str | None = None) -> Outcome:
            return Outcome(index, stage, code, reply, sid, time.monotonic() - began)

        in_data = False
        try:
            code, text = client.mail(self.sender)
            if code != 250:
                client.rset()
                return done(Stage.REJECTED, code, text.decode(errors="replace")), True
            for rcpt in self.recipients(index):
                code, text = client.rcpt(rcpt)
                if code != 250:
                    client.rset()
                    return done(Stage.REJECTED, code, text.decode(errors="replace")), True
            in_data = True
            code, text = client.data(self.make_message(index))
        except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
            return done(Stage.REJECTED, exc.smtp_code, repr(exc)), True
        except (OSError, smtplib.SMTPException) as exc:
            return done(Stage.IN_DOUBT if in_data else Stage.NOT_SENT, None, repr(exc)), False
        reply = text.decode(errors="replace")
        if code == 250:
            match = QUEUED.search(reply)
            return done(Stage.ACCEPTED, code, reply, match.group(1) if match else None), True
        return done(Stage.REJECTED, code, reply), True


def _close(client: smtplib.SMTP) -> None:
    try:
        client.close()
    except OSError:
        pass


def run_load(
    host: str, port: int, *, n: int, connections: int, timeout: float = 90.0, **kw: object
) -> list[Outcome]:
    """Start a load, wait for it, return one Outcome per message in index order."""
    return Load(host, port, n=n, connections=connections, **kw).start().join(timeout)  # type: ignore[arg-type]


def by_stage(outcomes: Sequence[Outcome]) -> dict[Stage, list[Outcome]]:
    out: dict[Stage, list[Outcome]] = {stage: [] for stage in Stage}
    for outcome in outcomes:
        out[outcome.stage].append(outcome)
    return out
