"""The intake's SMTP session in process: `start_listener` serving RelaySMTP around the handler on
127.0.0.1, a raw client on asyncio streams in the same event loop, and every reply compared
with the named replies of relay/intake/replies.py (aiosmtpd's own replies included, which
RelaySMTP gives enhanced status codes).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from relay.intake import replies
from relay.intake.limits import ClientLimits
from tests.support.intake import MESSAGE, Client, Intake, listener_on_any_port, run_intake, serving

ANY_PORT = {"listeners": [listener_on_any_port()]}
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"


def test_a_whole_session_from_greeting_to_quit(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        async with serving(intake) as port, Client.connected(port) as client:
            assert (await client.reply()).startswith("220 relay.example.com ")
            ehlo = (await client.cmd("EHLO client.example.com")).split("\n")
            assert ehlo[0] == "250-relay.example.com"
            assert "250-PIPELINING" in ehlo and "250-ENHANCEDSTATUSCODES" in ehlo
            assert not any("AUTH" in line for line in ehlo)  # no users, and no TLS
            assert await client.cmd("MAIL FROM:<app@example.com>") == replies.SENDER_OK
            assert await client.cmd("RCPT TO:<r@example.org>") == replies.RECIPIENT_OK
            assert await client.cmd("DATA") == GO_AHEAD
            assert await client.cmd(MESSAGE.decode() + ".") == replies.queued(intake.accepted[0])
            assert await client.cmd("NOOP") == replies.OK
            assert await client.cmd("QUIT") == "221 2.0.0 Bye"
        sub = await intake.store.submission(intake.accepted[0])
        assert sub is not None and [r.address for r in sub.recipients] == ["r@example.org"]

    run_intake(tmp_path, scenario, ANY_PORT)


def test_pipelined_commands_get_their_replies_in_order(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        async with serving(intake) as port, Client.connected(port) as client:
            await client.hello()
            client.writer.write(b"MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\n"
                                b"RCPT TO:<nobody>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")  # fmt: skip
            answers = [await client.reply() for _ in range(5)]
            assert answers == [
                replies.SENDER_OK,
                replies.RECIPIENT_OK,
                f"{replies.BAD_RECIPIENT}: address has no domain",
                replies.RECIPIENT_OK,
                GO_AHEAD,
            ]
            assert await client.cmd(MESSAGE.decode() + ".") == replies.queued(intake.accepted[0])

    run_intake(tmp_path, scenario, ANY_PORT)


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (["RCPT TO:<r@example.org>"], "503 5.5.1 Error: need MAIL command"),
        (["MAIL FROM:<app@example.com>", "DATA"], "503 5.5.1 Error: need RCPT command"),
        (["FROB"], '500 5.5.2 Error: command "FROB" not recognized'),
        (["MAIL FROM:<app@example.com> SMTPUTF8"], "555 5.6.7 SMTPUTF8 is not supported by this relay"),
        (["RSET"], replies.OK),
    ],
)
def test_aiosmtpd_replies_carry_enhanced_codes(tmp_path, commands: list[str], expected: str) -> None:
    async def scenario(intake: Intake) -> None:
        async with serving(intake) as port, Client.connected(port) as client:
            await client.hello()
            for command in commands[:-1]:
                await client.cmd(command)
            assert await client.cmd(commands[-1]) == expected

    run_intake(tmp_path, scenario, ANY_PORT)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" + (b"y" * 70 + b"\r\n") * 40, replies.too_big(2048)),
        (b"Subject: long\r\n\r\n" + b"z" * 1500 + b"\r\n", replies.line_too_long(1000)),
    ],
)
def test_data_over_the_size_or_line_limit_is_refused_and_nothing_kept(
    tmp_path, content: bytes, expected: str
) -> None:
    async def scenario(intake: Intake) -> None:
        async with serving(intake) as port, Client.connected(port) as client:
            await client.hello()
            await client.cmd("MAIL FROM:<app@example.com>")
            await client.cmd("RCPT TO:<r@example.org>")
            assert await client.cmd("DATA") == GO_AHEAD
            assert await client.cmd(content.decode() + ".") == expected
            assert await client.cmd("NOOP") == replies.OK  # the session goes on
        assert intake.accepted == []
        assert intake.rows("SELECT count(*) FROM submissions") == [(0,)]

    run_intake(tmp_path, scenario, {**ANY_PORT, "limits": {"message_size": 2048}})


def test_clients_outside_allow_networks_are_counted_and_need_auth(tmp_path) -> None:
    config = {"listeners": [listener_on_any_port(allow_networks=["192.0.2.0/24"])]}

    async def scenario(intake: Intake) -> None:
        async with serving(intake) as port:
            async with Client.connected(port) as first, Client.connected(port) as second:
                assert (await first.reply()).startswith("220 ")
                assert await second.reply() == replies.TOO_MANY_CONNECTIONS
                assert await second.reply() == ""  # and closed
                await first.cmd("EHLO client.example.com")
                assert await first.cmd("MAIL FROM:<app@example.com>") == replies.AUTH_REQUIRED
            connections = intake.handler.client_limits.connections
            for _ in range(100):  # the server sees each close a moment after the client makes it
                if connections.count("127.0.0.1") == 0:
                    break
                await asyncio.sleep(0.05)
            assert connections.count("127.0.0.1") == 0  # every slot released

    run_intake(tmp_path, scenario, config, limits=ClientLimits.from_limits(1, 0))


def event_loops() -> list[Any]:
    """asyncio's event loop, and uvloop's when it is installed (serve runs on it then)."""
    loops = [pytest.param(None, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        return loops
    return [*loops, pytest.param(uvloop.new_event_loop, id="uvloop")]


@pytest.mark.parametrize("loop_factory", event_loops())
def test_a_client_that_connects_and_closes_at_once_is_not_counted_after(tmp_path, loop_factory: Any) -> None:
    config = {"listeners": [listener_on_any_port(allow_networks=["192.0.2.0/24"])]}

    async def scenario(intake: Intake) -> None:
        async with serving(intake) as port:
            # Connected and closed before the server's loop runs again: it sees both at once.
            await asyncio.to_thread(lambda: socket.create_connection(("127.0.0.1", port)).close())
            # The one slot is free again within moments (stuck, it would stay taken until the
            # command timeout). Until the server has handled that close, a new client may
            # still be refused: ask again until it is greeted, for at most 5 s.
            greeting = ""
            for _ in range(100):
                async with Client.connected(port) as client:
                    greeting = await client.reply()
                if greeting.startswith("220 "):
                    break
                await asyncio.sleep(0.05)
            assert greeting.startswith("220 "), greeting
            assert intake.handler.client_limits.connections.count("127.0.0.1") <= 1

    run_intake(tmp_path, scenario, config, limits=ClientLimits.from_limits(1, 0), loop_factory=loop_factory)


def test_an_idle_client_is_told_and_disconnected(tmp_path) -> None:
    async def scenario(intake: Intake) -> None:
        async with serving(intake, idle_timeout=0.3) as port, Client.connected(port) as client:
            await client.reply()
            await asyncio.sleep(0.6)
            assert await client.reply() == replies.TIMEOUT
            assert await client.reply() == ""

    run_intake(tmp_path, scenario, ANY_PORT)


def test_a_tls_listener_needs_a_tls_context(tmp_path) -> None:
    config = {
        "listeners": [listener_on_any_port(tls="starttls")],
        "tls": {"cert_file": str(tmp_path / "cert.pem"), "key_file": str(tmp_path / "key.pem")},
    }

    async def scenario(intake: Intake) -> None:
        with pytest.raises(ValueError, match=r"has tls = 'starttls' but no TLS context"):
            async with serving(intake):
                pass

    run_intake(tmp_path, scenario, config)
