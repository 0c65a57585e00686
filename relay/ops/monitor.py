"""/metrics, /healthz and /readyz: a tiny HTTP/1.0 responder on serve's own event loop.

Why not prometheus_client's `start_http_server`: it runs in a thread, and the
gauges worth scraping (spool depth and age, suppressions, paused classes) and the
health checks all read the store, which is an asyncio object bound to serve's loop.
On the loop itself a scrape simply awaits the store, so every gauge is read fresh
at scrape time with no refresh task and no cross-thread calls. The protocol needed
is small (GET of three paths, answer, close), so a bounded hand-written parser is
less code than bridging threads.

/healthz is "should this process be restarted or alerted on": the store answers a
read, the spool is not stuck (its oldest message is older than
`[metrics] stuck_after` while nothing has gone out to SES for that long), and, with
a shared state, this host's mirror of it is not older than `[state] mirror_max_age`.
The gauges of suppressions and paused classes are read from that mirror: they are
what this host's intake enforces, and a scrape never waits on PostgreSQL.
/readyz is "may traffic be sent here": the SMTP listeners are up and the store is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from relay.config import Config, parse_hostport
from relay.ops.metrics import CONTENT_TYPE, METRICS, Metrics, SpoolSnapshot, spool_snapshot
from relay.store import Store
from relay.timeutil import utcnow

if TYPE_CHECKING:
    from relay.ops.state_mirror import StateMirror

log = logging.getLogger("ses_relay.monitor")

READ_TIMEOUT = 5.0  # seconds for a client to send its request head
MAX_HEAD_BYTES = 8192
REFRESH_TIMEOUT = 5.0  # a scrape never waits longer than this for the store

REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable",
}  # fmt: skip


@dataclass(frozen=True)
class Check:
    """The outcome of /healthz or /readyz: ok, or the reasons it is not."""

    problems: tuple[str, ...] = ()
    details: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def body(self) -> bytes:
        doc = {"status": "ok" if self.ok else "fail", "problems": list(self.problems), **self.details}
        return (json.dumps(doc) + "\n").encode()


def spool_problem(
    spool: SpoolSnapshot, *, stuck_after: float, last_sent: float | None, now: float
) -> str | None:
    """Why the spool counts as stuck, or None (pure).

    An old message alone is not a fault (one recipient's retries may run for hours
    while everything else flows); an old message while nothing has been sent to SES
    for as long is: SES is failing, or the sender is not running.
    """
    if spool.depth == 0 or spool.oldest_age <= stuck_after:
        return None
    if last_sent is not None and now - last_sent <= stuck_after:
        return None
    since = "since this process started" if last_sent is None else f"for {now - last_sent:.0f} s"
    return (
        f"spool stuck: the oldest of {spool.depth} spooled message(s) is {spool.oldest_age:.0f} s old "
        f"(stuck_after {stuck_after:.0f} s) and nothing was sent to SES {since}"
    )


@dataclass(frozen=True)
class Request:
    method: str
    path: str


def parse_head(head: bytes) -> Request | None:
    """The request line of an HTTP/1.x request head; None when it is not one (pure)."""
    try:
        line = head.split(b"\r\n", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        return None
    return Request(parts[0], parts[1].split("?", 1)[0])


def response(status: int, body: bytes, content_type: str, *, head_only: bool = False) -> bytes:
    lines = [
        f"HTTP/1.0 {status} {REASONS.get(status, 'Error')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body)


class Monitor:
    """The monitoring endpoints of one serve process."""

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        metrics: Metrics = METRICS,
        clock: Callable[[], float] = time.time,
        mirror: StateMirror | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.mirror = mirror
        self.metrics = metrics
        self.clock = clock
        self.ready = False  # set by serve once the SMTP listeners are up, cleared at shutdown

    async def refresh(self) -> SpoolSnapshot:
        """Read the store-backed gauges now; raises whatever the store raises."""
        depth, oldest = await self.store.spool_stats()
        snapshot = spool_snapshot(depth, oldest, self.clock())
        self.metrics.set_spool(snapshot)
        if self.mirror is not None:
            self.metrics.set_mirror_age(self.mirror.age(self.clock()))
        if self.store.shared:  # local, so set even while the shared state is away
            rows, oldest_row = await self.store.outbox_backlog()
            self.metrics.set_outbox(spool_snapshot(rows, oldest_row, self.clock()))
        self.metrics.set_suppressions(await self.store.suppression_counts(utcnow(), mirror=True))
        states = await self.store.class_states(mirror=True)
        self.metrics.set_paused(self.config.classes, [k for k, s in states.items() if s.paused])
        return snapshot

    async def _refreshed(self) -> tuple[SpoolSnapshot | None, str | None]:
        try:
            return await asyncio.wait_for(self.refresh(), REFRESH_TIMEOUT), None
        except Exception as exc:  # any store trouble is the answer, not a crash of the endpoint
            return None, f"store unreachable: {exc or type(exc).__name__}"

    async def health(self) -> Check:
        spool, problem = await self._refreshed()
        if spool is None:
            return Check((problem or "store unreachable",))
        now = self.clock()
        # The worker process sends; the store is where its last success is visible here.
        last = self.metrics.last_ses_success
        with contextlib.suppress(Exception):
            stored = await asyncio.wait_for(self.store.last_sent_at(), REFRESH_TIMEOUT)
            if stored is not None:
                last = max(last or 0.0, stored.timestamp())
        stuck = spool_problem(
            spool,
            stuck_after=self.config.metrics.stuck_after.total_seconds(),
            last_sent=last,
            now=now,
        )
        details: dict[str, object] = {
            "spool_depth": spool.depth, "spool_oldest_age_seconds": round(spool.oldest_age, 3),
        }  # fmt: skip
        problems = [] if stuck is None else [stuck]
        if self.mirror is not None:
            age = self.mirror.age(now)
            details["mirror_age_seconds"] = None if age is None else round(age, 3)
            stale = self.mirror.problem(now)
            if stale is not None:
                problems.append(stale)
        return Check(tuple(problems), details)

    async def readiness(self) -> Check:
        problems = [] if self.ready else ["SMTP listeners are not up"]
        try:
            await asyncio.wait_for(self.store.schema_version(), REFRESH_TIMEOUT)
        except Exception as exc:
            problems.append(f"store not open: {exc or type(exc).__name__}")
        return Check(tuple(problems))

    async def answer(self, request: Request) -> bytes:
        head_only = request.method == "HEAD"
        if request.method not in ("GET", "HEAD"):
            return response(405, b"GET or HEAD only\n", "text/plain; charset=utf-8")
        if request.path == "/metrics":
            _spool, problem = await self._refreshed()
            if problem:
                log.warning("metrics scrape: %s; store-backed gauges keep their last values", problem)
            return response(200, self.metrics.render(), CONTENT_TYPE, head_only=head_only)
        if request.path in ("/healthz", "/readyz"):
            check = await (self.health() if request.path == "/healthz" else self.readiness())
            if not check.ok:
                log.warning("%s: %s", request.path, "; ".join(check.problems))
            status = 200 if check.ok else 503
            return response(status, check.body(), "application/json", head_only=head_only)
        return response(404, b"try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            request = parse_head(head)
            if request is None:
                writer.write(response(400, b"not an HTTP/1.x request\n", "text/plain; charset=utf-8"))
            else:
                writer.write(await self.answer(request))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def start(self, listen: str) -> asyncio.Server:
        host, port = parse_hostport(listen)
        return await asyncio.start_server(self.handle, host=host, port=port, limit=MAX_HEAD_BYTES)
