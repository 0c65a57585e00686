"""The intake in process: an IntakeHandler on a real Store in a tmp dir, and SMTP sessions
that drive it either hook by hook (aiosmtpd's own Session and Envelope objects, as the
protocol would pass them) or through RelaySMTP on 127.0.0.1 (`start_listener`).

    def test_something(tmp_path):
        async def scenario(intake: Intake) -> None:
            session, envelope = intake.session()
            assert await intake.mail(session, envelope, "app@example.com") == replies.SENDER_OK

        run_intake(tmp_path, scenario)
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.config import Config, from_dict
from relay.intake.auth import Authenticator, UserSource
from relay.intake.handler import IntakeHandler
from relay.intake.limits import ClientLimits
from relay.intake.smtp import RelayEnvelope, RelaySession, RelaySMTP, start_listener
from relay.intake.users import User
from relay.ops.guard import ClassGuard
from relay.store import Store

INSIDE = ("127.0.0.1", 40001)  # in the default allow_networks
OUTSIDE = ("192.0.2.7", 40002)  # TEST-NET-1: in no allow_networks
MESSAGE = (
    b"From: App <app@example.com>\r\nTo: r@example.org\r\nSubject: hello\r\n"
    b"Message-ID: <m1@example.com>\r\n\r\nHi there.\r\n"
)


@dataclass
class Intake:
    """One listener's handler, the store it commits to, and what it announced as accepted."""

    store: Store
    config: Config
    handler: IntakeHandler
    guard: ClassGuard
    data_dir: Path
    accepted: list[str] = field(default_factory=list)

    def session(
        self, peer: tuple[str, int] = INSIDE, *, user: str | None = None
    ) -> tuple[RelaySession, RelayEnvelope]:
        """A fresh session from `peer`, authenticated as `user` when given (as AUTH leaves it)."""
        session = RelaySession(asyncio.get_running_loop())
        session.peer = peer
        session.host_name = "client.example.com"
        if user is not None:
            found = self.handler.authenticator.source.get(user) if self.handler.authenticator else None
            assert isinstance(found, User), f"no user {user} in the users file"
            session.authenticated = True
            session.auth_data = found
        return session, RelayEnvelope()

    def server(self) -> RelaySMTP:
        return RelaySMTP(self.handler, hostname="relay.example.com")

    async def ehlo(self, session: RelaySession, envelope: RelayEnvelope) -> list[str]:
        """The EHLO lines aiosmtpd would send (with AUTH, as over TLS), after the handler's say."""
        offered = ["250-relay.example.com", "250-SIZE 10485760", "250-8BITMIME", "250-AUTH PLAIN LOGIN"]
        return await self.handler.handle_EHLO(
            self.server(), session, envelope, "client.example.com", [*offered, "250 HELP"]
        )

    async def mail(self, session: RelaySession, envelope: RelayEnvelope, address: str) -> str:
        return await self.handler.handle_MAIL(self.server(), session, envelope, address, [])

    async def rcpt(self, session: RelaySession, envelope: RelayEnvelope, address: str) -> str:
        return await self.handler.handle_RCPT(self.server(), session, envelope, address, [])

    async def data(self, session: RelaySession, envelope: RelayEnvelope, content: bytes = MESSAGE) -> str:
        envelope.original_content = envelope.content = content
        return await self.handler.handle_DATA(self.server(), session, envelope)

    async def send(
        self, session: RelaySession, envelope: RelayEnvelope, sender: str, rcpts: list[str], content: bytes
    ) -> list[str]:
        """MAIL, each RCPT, then DATA when a recipient was taken: every reply, in order."""
        answers = [await self.mail(session, envelope, sender)]
        answers += [await self.rcpt(session, envelope, rcpt) for rcpt in rcpts]
        if envelope.rcpt_tos:
            answers.append(await self.data(session, envelope, content))
        return answers

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the store's file directly, as an operator with sqlite3 would."""
        db = sqlite3.connect(self.data_dir / "relay.db")
        try:
            return list(db.execute(sql, params))
        finally:
            db.close()


def run_intake(
    tmp_path: Path,
    scenario: Callable[[Intake], Awaitable[None]],
    config: dict[str, Any] | None = None,
    *,
    listener: int = 0,
    users: bool = False,
    limits: ClientLimits | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> None:
    """Run `scenario` against the handler of `config`'s listener number `listener`.

    With `users`, AUTH checks <tmp_path>/data/users.json (write it first with
    tests.support.security.add_user). The store is closed whatever happens. `loop_factory`:
    the event loop to run on (asyncio's by default; serve uses uvloop's when installed).
    """
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    settings = from_dict(config or {})

    async def go() -> None:
        store = await Store.open(data_dir / "relay.db")
        try:
            guard = ClassGuard(store, settings, alert_sender="")
            await guard.refresh()
            source = UserSource(data_dir / "users.json", settings.classes) if users else None
            accepted: list[str] = []
            handler = IntakeHandler(
                store,
                settings,
                settings.listeners[listener],
                on_accepted=accepted.append,
                paused=guard.paused,
                client_limits=limits or ClientLimits(),
                authenticator=Authenticator(source) if source is not None else None,
            )
            await scenario(Intake(store, settings, handler, guard, data_dir, accepted))
        finally:
            await store.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(asyncio.wait_for(go(), timeout=60))


class Client:
    """A raw SMTP client on asyncio streams: one command, one (possibly multi-line) reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    @asynccontextmanager
    async def connected(cls, port: int) -> AsyncIterator[Client]:
        client = cls(*await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout=10))
        try:
            yield client
        finally:
            client.writer.close()
            with contextlib.suppress(ConnectionError):
                await client.writer.wait_closed()

    async def reply(self) -> str:
        """The reply's lines joined by newlines, without CRLF; "" when the server closed."""
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), timeout=10)).decode().rstrip("\r\n")
            if not line:
                return "\n".join(lines)
            lines.append(line)
            if line[3:4] != "-":
                return "\n".join(lines)

    async def cmd(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def hello(self) -> str:
        """Read the greeting and say EHLO; the EHLO reply."""
        await self.reply()
        return await self.cmd("EHLO client.example.com")


@asynccontextmanager
async def serving(intake: Intake, **kwargs: Any) -> AsyncIterator[int]:
    """The intake's handler served by RelaySMTP on 127.0.0.1 (`start_listener`); yields the port."""
    server = await start_listener(intake.handler, hostname="relay.example.com", **kwargs)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def listener_on_any_port(**extra: Any) -> dict[str, Any]:
    """A [[listeners]] table on 127.0.0.1 port 0, so start_listener binds a free port."""
    return {"listen": "127.0.0.1:0", **extra}
