"""The SMTP session: aiosmtpd's protocol plus what a relay exposed to a network needs.

The policy (who may send what, to whom) is the handler's (relay/intake/handler.py); this
module is the protocol around it: enhanced status codes on every reply, connection
limits, timeouts, AUTH with an awaitable password check, and DATA read the way
Postfix reads it from clients it trusts (relay/intake/dataread.py); and
`start_listener`, which binds a listener serving RelaySMTP around a handler.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import contextlib
import logging
import ssl
from base64 import b64decode
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from relay.hostname import relay_hostname
from relay.intake import replies
from relay.intake.auth import Verdict
from relay.intake.dataread import DataAssembler, Outcome, read_data
from relay.intake.handler import IntakeHandler, client_of
from relay.intake.paths import plain_path

log = logging.getLogger("ses_relay.smtp")


class RelaySession(Session):
    """aiosmtpd's Session without the deprecation warning it logs on every successful AUTH."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class RelayEnvelope(Envelope):
    """aiosmtpd's Envelope plus how many lines of DATA ended in a bare LF."""

    def __init__(self) -> None:
        super().__init__()
        self.bare_line_ends = 0


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP plus what a relay exposed to a network needs.

    Enhanced status codes on the replies aiosmtpd composes itself; AUTH PLAIN/LOGIN
    checked off the event loop with lockout (relay/intake/auth.py); a connection limit per
    client address outside allow_networks; a separate, longer timeout for the DATA
    transfer; a configurable line length, judged on the lines as stored. Implicit TLS
    (port 465 style) counts as TLS for AUTH.
    """

    def __init__(
        self,
        handler: IntakeHandler,
        *,
        implicit_tls: bool = False,
        data_timeout: float = 600.0,
        line_length: int = 1000,
        **kwargs: Any,
    ) -> None:
        # Per-connection copies of aiosmtpd class attributes: its class-level dict is
        # shared by every connection (and grows with each EHLO).
        self.line_length_limit = line_length + 1  # + the transparency dot
        self._hello_reply = False  # set while answering EHLO/HELO (the greeting is plain too)
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(handler, **kwargs)
        self.event_handler: IntakeHandler = handler
        self.implicit_tls = implicit_tls
        self.data_timeout = data_timeout
        self.line_length = line_length
        self._slot: str | None = None  # the connection-counter key while this connection is counted
        self._admitted = True
        self._session_started = False  # whether _handle_client has begun (see eof_received)
        self._in_data = False
        if implicit_tls:
            self._auth_require_tls = False  # the whole connection is already encrypted

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's path parser, with `<local@domain>` and `<>` taken apart by a regular
        expression first (relay/intake/paths.py): the same results, at 1/50 of the CPU."""
        if arg:
            plain = plain_path(arg)
            if plain is not None:
                address, rest = plain
                if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
                    return None, None
                return address, rest
        return super()._getaddr(arg)

    def _create_session(self) -> Session:
        return RelaySession(self.loop)

    def _create_envelope(self) -> Envelope:
        return RelayEnvelope()

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str) and not self._hello_reply:
            enhanced = replies.enhance(status, self.data_size_limit, self.line_length)
            if enhanced != status and log.isEnabledFor(logging.DEBUG):
                log.debug("%s: replied %s", client_of(self.session), enhanced)
            await super().push(enhanced)
        else:
            await super().push(status)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._hello_reply = True  # RFC 2034: the reply to EHLO/HELO carries no enhanced codes
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._hello_reply = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._hello_reply = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._hello_reply = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        after_starttls = self._original_transport is not None
        super().connection_made(transport)
        if after_starttls:
            return
        client = client_of(self.session)
        if self.event_handler.may_relay(self.session):
            pass  # allow_networks: an application's connection pool, not counted (Postfix's mynetworks)
        elif self.event_handler.client_limits.connections.acquire(client):
            self._slot = client
        else:
            self._admitted = False
        if self.event_handler.plaintext_auth_allowed(self.session):
            self._auth_require_tls = False

    def connection_lost(self, error: Exception | None) -> None:
        if self._slot is not None:
            self.event_handler.client_limits.connections.release(self._slot)
            self._slot = None
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        keep_open = super().eof_received()
        # aiosmtpd cancels the session's task here and leaves closing the connection to
        # it. A task cancelled before its first step never does: uvloop can report a
        # client's EOF in the same loop pass as its connection (a probe that connects and
        # closes at once), which then stayed open, and counted against its address, until
        # the command timeout.
        if not self._session_started and self.transport is not None:
            self.transport.close()
        return keep_open

    async def _handle_client(self) -> None:
        self._session_started = True
        if not self._admitted:
            limit = self.event_handler.client_limits.connections.per_key
            log.warning(
                "refused connection from %s: %d connections already open (limits.connections_per_ip)",
                client_of(self.session),
                limit,
            )
            await self.push(replies.TOO_MANY_CONNECTIONS)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    def _timeout_cb(self) -> None:
        if self.transport is None:
            return
        reply = replies.DATA_TIMEOUT if self._in_data else replies.TIMEOUT
        which = "limits.data_timeout" if self._in_data else "limits.command_timeout"
        log.warning("closing connection from %s: %s (%s)", client_of(self.session), reply, which)
        with contextlib.suppress(Exception):
            self._writer.write(reply.encode("ascii") + b"\r\n")
        super()._timeout_cb()

    async def smtp_DATA(self, arg: str) -> None:
        self._in_data = True
        self._reset_timeout(self.data_timeout)
        try:
            if self.event_handler.trusted(self.session):
                await self._data_from_trusted(arg)
            else:
                await super().smtp_DATA(arg)
        finally:
            self._in_data = False
            if self.transport is not None:
                self._reset_timeout()

    async def _data_from_trusted(self, arg: str) -> None:
        """aiosmtpd's DATA with relay/intake/dataread.py reading the lines: bare LF line ends
        are accepted (normalised, or kept for the handler to refuse), dots un-stuffed
        after either line end, and the message still ends only at <CRLF>.<CRLF>."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limits = self.event_handler.config.limits
        normalise = limits.bare_line_endings == "normalize"
        assembler = DataAssembler(normalise, self.line_length, self.data_size_limit)
        try:
            await read_data(self._reader, assembler)
        except (asyncio.CancelledError, ConnectionResetError):
            log.info("lost connection during DATA from %s", client_of(self.session))
            self._writer.close()
            raise
        if assembler.outcome is not Outcome.COMPLETE:
            self._set_post_data_state()
            if assembler.outcome is Outcome.TOO_LONG:
                reply = replies.line_too_long(self.line_length)
            else:
                reply = replies.too_big(self.data_size_limit or 0)
            log.warning("refused DATA from %s: %s", client_of(self.session), reply)
            await self.push(reply)
            return
        envelope = self.envelope
        assert isinstance(envelope, RelayEnvelope)
        envelope.original_content = envelope.content = assembler.message()
        envelope.bare_line_ends = assembler.bare_line_ends
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(replies.OK if status is MISSING else status)

    # AUTH: our own PLAIN and LOGIN so that the password check can be awaited (it runs
    # scrypt in a thread); aiosmtpd's built-ins call a synchronous authenticator.

    async def _b64(self, text: str) -> bytes | None:
        try:
            return b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            await self.push("501 5.5.2 Cannot decode base64")
            return None

    async def _first_response(self, args: list[str], challenge: str) -> bytes | None:
        """The mechanism's first client response, given on the AUTH line or asked for with
        `challenge`; None when the client aborted or sent no base64 (it has been answered)."""
        if len(args) == 1:
            blob = await self.challenge_auth(challenge)
            return blob if isinstance(blob, bytes) else None
        return await self._b64(args[1])

    async def auth_PLAIN(self, _: SMTP, args: list[str]) -> AuthResult:
        blob = await self._first_response(args, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await self.push("501 5.5.2 Cannot split the PLAIN response into authzid, login and password")
            return AuthResult(success=False, handled=True)
        authzid, login, password = parts
        if authzid and authzid != login:
            return AuthResult(success=False, handled=False, message=replies.AUTH_BAD_AUTHZID)
        return await self._check(login, password)

    async def auth_LOGIN(self, _: SMTP, args: list[str]) -> AuthResult:
        login = await self._first_response(args, "Username:")
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self.challenge_auth("Password:")
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(password, bytes)
        return await self._check(login, password)

    async def _check(self, login: bytes, password: bytes) -> AuthResult:
        authenticator = self.event_handler.authenticator
        if authenticator is None:
            return AuthResult(success=False, handled=False, message=replies.AUTH_INVALID)
        outcome = await authenticator.login(client_of(self.session), login, password)
        if outcome.verdict is Verdict.OK:
            return AuthResult(success=True, auth_data=outcome.user)
        if outcome.verdict is Verdict.LOCKED:
            return AuthResult(success=False, handled=False, message=replies.AUTH_LOCKED)
        return AuthResult(success=False, handled=False, message=replies.AUTH_INVALID)


async def start_listener(
    handler: IntakeHandler,
    *,
    hostname: str | None = None,
    idle_timeout: float | None = None,
    tls_context: ssl.SSLContext | None = None,
) -> asyncio.Server:
    """Bind one listener on the running loop (the same loop as the rest of serve).

    `tls_context` is needed by a listener with tls = "starttls" (offered after EHLO)
    or "implicit" (TLS from the first byte, as on port 465).
    """
    listener = handler.listener
    limits = handler.config.limits
    if listener.tls != "none" and tls_context is None:
        raise ValueError(f"listener {listener.listen} has tls = {listener.tls!r} but no TLS context")
    name = hostname or relay_hostname(handler.config)
    loop = asyncio.get_running_loop()
    implicit = listener.tls == "implicit"

    def factory() -> RelaySMTP:
        return RelaySMTP(
            handler,
            implicit_tls=implicit,
            data_timeout=limits.data_timeout.total_seconds(),
            line_length=limits.line_length,
            data_size_limit=limits.message_size,
            enable_SMTPUTF8=False,
            decode_data=False,
            hostname=name,
            ident="ses-relay",
            timeout=idle_timeout or limits.command_timeout.total_seconds(),
            tls_context=tls_context if listener.tls == "starttls" else None,
            auth_require_tls=True,
        )

    return await loop.create_server(
        factory, host=listener.host, port=listener.port, ssl=tls_context if implicit else None
    )
