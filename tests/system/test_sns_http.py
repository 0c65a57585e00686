"""The SNS HTTP endpoint (feedback.ingest.sns_http): a real server on 127.0.0.1, real HTTP
clients, a real store.

Envelopes are signed with a local certificate placed in a tmp cert dir, so nothing is
fetched; subscription confirmations go to an injected function that records the URL.
"Nothing changed" is checked by reading every feedback table back with sqlite3
before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ipaddress
import json
import logging
import socket
import sqlite3
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

import relay.store.sqlite
from feedback.ingest import sns_http
from feedback.ingest.sns_http import MAX_BODY, serve_sns, tls_context
from relay.config import Config, from_dict
from relay.store import Store
from tests.support.sns_signing import (
    CERT_NAME,
    OTHER_TOPIC,
    TOPIC,
    Signer,
    confirmation,
    make_signer,
    notification,
    rsa_key,
    ses_bounce,
)

CONFIG = from_dict({"feedback": {"sns_topic_arns": [TOPIC]}})
TABLES = ("events", "suppressions", "dead_letters", "review", "notices", "transient_bounces", "audit")


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer()


@dataclass
class Endpoint:
    port: int
    store: Store
    db: Path
    confirmed: list[str] = field(default_factory=list)
    ssl_client: ssl.SSLContext | None = None

    async def post(self, doc: Any, *, raw: bytes | None = None, path: str = "/") -> tuple[int, str]:
        body = raw if raw is not None else json.dumps(doc).encode("utf-8")
        headers = {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification"}
        return await asyncio.to_thread(self._request, "POST", path, body, headers)

    async def request(self, method: str, body: bytes | None = None) -> tuple[int, str]:
        return await asyncio.to_thread(self._request, method, "/", body, {})

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str]:
        if self.ssl_client is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=10, context=self.ssl_client
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers)
            reply = conn.getresponse()
            return reply.status, reply.read().decode("utf-8")
        finally:
            conn.close()

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every feedback table as it is on disk."""
        db = sqlite3.connect(self.db)
        try:
            return {t: db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}
        finally:
            db.close()


def run(
    tmp_path: Path,
    scenario: Callable[[Endpoint], Awaitable[None]],
    *,
    config: Config = CONFIG,
    cert_dir: Path | None = None,
    confirm: Callable[[str], None] | None = None,
    server_ssl: ssl.SSLContext | None = None,
    client_ssl: ssl.SSLContext | None = None,
) -> None:
    """Start a store and the endpoint on a free port, run `scenario`, stop both."""

    async def go() -> None:
        store = await Store.open(tmp_path / "relay.db")
        confirmed: list[str] = []

        def record(url: str) -> None:
            confirmed.append(url)

        server = await serve_sns(
            store, config, "127.0.0.1", 0, cert_dir=cert_dir if cert_dir is not None else tmp_path / "certs",
            fetch=None, confirm=confirm or record, ssl_context=server_ssl,
        )  # fmt: skip
        endpoint = Endpoint(
            server.sockets[0].getsockname()[1], store, tmp_path / "relay.db", confirmed, client_ssl
        )
        try:
            await asyncio.wait_for(scenario(endpoint), timeout=15)
        finally:
            server.close()
            await server.wait_closed()
            await store.close()

    asyncio.run(go())


@pytest.fixture
def certs(tmp_path: Path, signer: Signer) -> Path:
    return signer.install(tmp_path / "certs").parent


# --------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_bounce_is_applied_through_the_feedback_path(
    tmp_path: Path, certs: Path, signer: Signer, version: str
) -> None:
    async def scenario(ep: Endpoint) -> None:
        status, text = await ep.post(signer.sign(notification(), version))
        assert (status, text) == (200, "applied 1 event(s), 0 duplicate(s)\n")
        [suppression] = await ep.store.suppressions_of("nomailbox@example.com")
        assert (suppression.klass, str(suppression.level), str(suppression.cause)) == ("*", "hard", "bounce")
        assert suppression.reason.startswith("Permanent/NoEmail: smtp; 550 5.1.1")
        [event] = await ep.store.events()
        assert (event.record.kind, event.record.recipient) == ("bounce", "nomailbox@example.com")
        assert (event.record.bounce_type, event.record.bounce_subtype) == ("Permanent", "NoEmail")

    run(tmp_path, scenario)


def test_a_duplicate_message_id_changes_nothing(tmp_path: Path, certs: Path, signer: Signer) -> None:
    async def scenario(ep: Endpoint) -> None:
        doc = signer.sign(notification(message_id="5a2c7c1e-0000-4000-8000-000000000001"), "2")
        assert (await ep.post(doc))[0] == 200
        before = ep.rows()
        assert await ep.post(doc) == (200, "applied 0 event(s), 1 duplicate(s)\n")
        # SNS re-signing the same SES event (another MessageId) is a duplicate too.
        assert await ep.post(signer.sign(notification(), "1")) == (
            200,
            "applied 0 event(s), 1 duplicate(s)\n",
        )
        assert ep.rows() == before

    run(tmp_path, scenario)


def test_an_archived_message_is_judged_by_its_own_timestamp(tmp_path: Path) -> None:
    old = make_signer(not_before=datetime(2019, 1, 1, tzinfo=UTC), not_after=datetime(2021, 1, 1, tzinfo=UTC))
    old.install(tmp_path / "certs")

    async def scenario(ep: Endpoint) -> None:
        inside = old.sign(notification(at=datetime(2020, 6, 1, tzinfo=UTC)))
        assert (await ep.post(inside))[0] == 200
        before = ep.rows()
        late = notification(ses_bounce("other@example.com"), at=datetime(2024, 3, 12, tzinfo=UTC))
        status, text = await ep.post(old.sign(late, "2"))
        assert status == 403
        assert "was not valid at the message's Timestamp 2024-03-12" in text
        assert ep.rows() == before

    run(tmp_path, scenario)


def test_a_setup_notification_without_events_is_accepted(tmp_path: Path, certs: Path, signer: Signer) -> None:
    async def scenario(ep: Endpoint) -> None:
        setup = "Successfully validated SNS topic for Amazon SES event publishing."
        assert await ep.post(signer.sign(notification(setup))) == (
            200,
            "applied 0 event(s), 0 duplicate(s)\n",
        )
        assert all(rows == [] for rows in ep.rows().values())

    run(tmp_path, scenario)


def test_a_signed_but_unparseable_message_is_kept_as_a_dead_letter(
    tmp_path: Path, certs: Path, signer: Signer
) -> None:
    """Authentic but not SES JSON: like SQS, kept with the error, and SNS need not retry."""

    async def scenario(ep: Endpoint) -> None:
        assert (await ep.post(signer.sign(notification('{"hello": "world"}'))))[0] == 200
        [letter] = await ep.store.dead_letters()
        assert letter.source == f"sns-http:{TOPIC}"
        assert "not an SES event" in letter.error

    run(tmp_path, scenario)


# --------------------------------------------------------------------------- refused, store untouched


def _tamper(doc: dict[str, Any]) -> dict[str, Any]:
    message = doc["Message"]
    i = message.index("nomailbox")
    return dict(doc, Message=message[:i] + "N" + message[i + 1 :])


FORGERIES: dict[str, Callable[[Signer], bytes]] = {
    "one byte changed": lambda s: json.dumps(
        _tamper(s.sign(notification(ses_bounce("x@example.com"))))
    ).encode(),
    "unknown topic": lambda s: json.dumps(s.sign(notification(topic=OTHER_TOPIC))).encode(),
    "cert host with a suffix": lambda s: json.dumps(
        s.sign(notification(), cert_url=f"https://sns.eu-west-1.amazonaws.com.evil.com/{CERT_NAME}")
    ).encode(),
    "cert over http": lambda s: json.dumps(
        s.sign(notification(), cert_url=f"http://sns.eu-west-1.amazonaws.com/{CERT_NAME}")
    ).encode(),
    "cert at another path": lambda s: json.dumps(
        s.sign(notification(), cert_url=f"https://sns.eu-west-1.amazonaws.com/uploads/{CERT_NAME}")
    ).encode(),
    "cert in an s3 bucket": lambda s: json.dumps(
        s.sign(notification(), cert_url=f"https://bucket.s3.amazonaws.com/{CERT_NAME}")
    ).encode(),
    "unsigned": lambda s: json.dumps(notification()).encode(),
    "signed by another key": lambda s: json.dumps(make_signer(key=1).sign(notification())).encode(),
    "not json": lambda s: b"Type=Notification&Message=hi",
    "not utf-8": lambda s: b"\xff\xfe\x00{",
    "a json list": lambda s: json.dumps([s.sign(notification())]).encode(),
    "duplicate Message keys": lambda s: (
        json.dumps(s.sign(notification()))[:-1].encode() + b', "Message": "{}"}'
    ),
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_unsigned_or_foreign_messages_get_403_and_change_no_row(
    tmp_path: Path, certs: Path, signer: Signer, name: str
) -> None:
    async def scenario(ep: Endpoint) -> None:
        assert (await ep.post(signer.sign(notification(ses_bounce("seed@example.com")))))[0] == 200
        before = ep.rows()
        assert before["events"] and before["suppressions"]
        status, text = await ep.post(None, raw=FORGERIES[name](signer))
        assert status == 403, text
        assert text.startswith("refused: ")
        assert ep.rows() == before
        assert ep.confirmed == []

    run(tmp_path, scenario)


def test_an_empty_allow_list_refuses_everything_and_says_so(
    tmp_path: Path, certs: Path, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(ep: Endpoint) -> None:
        status, _ = await ep.post(signer.sign(notification()))
        assert status == 403
        status, _ = await ep.post(signer.sign(confirmation()))
        assert status == 403
        assert all(rows == [] for rows in ep.rows().values())
        assert ep.confirmed == []

    with caplog.at_level(logging.ERROR, logger="ses_relay.feedback.sns"):
        run(tmp_path, scenario, config=Config())
    assert "[feedback] sns_topic_arns is empty: every SNS message will be refused with 403" in caplog.text
    assert "[feedback] sns_topic_arns is empty, so no topic is allowed" in caplog.text


def test_a_missing_certificate_asks_sns_to_retry_without_touching_the_store(
    tmp_path: Path, signer: Signer
) -> None:
    async def scenario(ep: Endpoint) -> None:
        status, text = await ep.post(signer.sign(notification()))
        assert (status, text) == (503, "signing certificate unavailable; retry later\n")
        assert all(rows == [] for rows in ep.rows().values())

    run(tmp_path, scenario, cert_dir=tmp_path / "no-certs-here")


def test_a_store_failure_answers_500_so_sns_retries(
    tmp_path: Path, certs: Path, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay.store.sqlite, "BUSY_TIMEOUT_MS", 100)
    doc = signer.sign(notification())

    async def scenario(ep: Endpoint) -> None:
        blocker = sqlite3.connect(ep.db, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
            assert await ep.post(doc) == (500, "store unavailable; retry later\n")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert all(rows == [] for rows in ep.rows().values())
        assert await ep.post(doc) == (200, "applied 1 event(s), 0 duplicate(s)\n")  # SNS's retry

    run(tmp_path, scenario)


# --------------------------------------------------------------------------- subscriptions


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_subscription_confirmation_for_an_allowed_topic_is_confirmed(
    tmp_path: Path, certs: Path, signer: Signer, version: str
) -> None:
    doc = signer.sign(confirmation(), version)

    async def scenario(ep: Endpoint) -> None:
        assert await ep.post(doc) == (200, "subscription confirmed\n")
        assert ep.confirmed == [doc["SubscribeURL"]]
        assert all(rows == [] for rows in ep.rows().values())

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    "doc_for",
    [
        lambda s: s.sign(confirmation(topic=OTHER_TOPIC)),
        lambda s: s.sign(confirmation(subscribe_url="https://127.0.0.1:9/?Action=ConfirmSubscription")),
        lambda s: _tamper_token(s.sign(confirmation())),
        lambda s: confirmation(),
    ],
    ids=["disallowed topic", "subscribe url off sns", "tampered token", "unsigned"],
)
def test_a_confirmation_that_is_not_for_us_is_refused_and_not_visited(
    tmp_path: Path, certs: Path, signer: Signer, doc_for: Callable[[Signer], dict[str, Any]]
) -> None:
    async def scenario(ep: Endpoint) -> None:
        status, _ = await ep.post(doc_for(signer))
        assert status == 403
        assert ep.confirmed == []

    run(tmp_path, scenario)


def _tamper_token(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc, Token="0" + doc["Token"][1:])


def test_an_unsubscribe_confirmation_is_noted_not_visited(
    tmp_path: Path, certs: Path, signer: Signer
) -> None:
    async def scenario(ep: Endpoint) -> None:
        assert await ep.post(signer.sign(confirmation("UnsubscribeConfirmation"))) == (
            200, "unsubscribe confirmation noted\n",
        )  # fmt: skip
        assert ep.confirmed == []

    run(tmp_path, scenario)


def test_a_failed_confirmation_answers_502(tmp_path: Path, certs: Path, signer: Signer) -> None:
    def unreachable(url: str) -> None:
        raise OSError("connection refused")

    async def scenario(ep: Endpoint) -> None:
        assert await ep.post(signer.sign(confirmation())) == (502, "could not confirm the subscription\n")

    run(tmp_path, scenario, confirm=unreachable)


# --------------------------------------------------------------------------- HTTP


async def raw_exchange(port: int, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send bytes as they are and read the whole answer (the server closes the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), wait)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):  # a server that answers unread input may reset
            await writer.wait_closed()


def test_a_body_over_the_limit_gets_413_unread(tmp_path: Path, certs: Path) -> None:
    async def scenario(ep: Endpoint) -> None:
        head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode()
        answer = await raw_exchange(ep.port, head + b"{")
        assert answer.startswith(b"HTTP/1.1 413 ")
        status, _ = await ep.post(None, raw=b" " * (MAX_BODY + 1))
        assert status == 413
        assert all(rows == [] for rows in ep.rows().values())

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", b"411"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"411"),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", b"400"),
        (b"POST /\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"POST / HTTP/1.1\r\nX: " + b"a" * 10_000 + b"\r\n\r\n", b"431"),
        (b"POST / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", b"431"),
    ],
    ids=["get", "no length", "chunked", "negative length", "two lengths", "http/0.9", "bad header",
         "long header", "many headers"],
)  # fmt: skip
def test_malformed_http_is_answered_cleanly(tmp_path: Path, certs: Path, data: bytes, status: bytes) -> None:
    async def scenario(ep: Endpoint) -> None:
        answer = await raw_exchange(ep.port, data)
        assert answer.split(b" ", 2)[1] == status, answer
        assert b"Connection: close" in answer

    run(tmp_path, scenario)


def test_a_slow_client_is_cut_off(tmp_path: Path, certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sns_http, "HEADER_TIMEOUT_SECONDS", 0.2)

    async def scenario(ep: Endpoint) -> None:
        answer = await raw_exchange(ep.port, b"POST / HTTP/1.1\r\nHost: x\r\n", wait=5)
        assert answer.startswith(b"HTTP/1.1 408 ")

    run(tmp_path, scenario)


def test_expect_100_continue_is_honoured(tmp_path: Path, certs: Path, signer: Signer) -> None:
    body = json.dumps(signer.sign(notification())).encode()

    async def scenario(ep: Endpoint) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", ep.port)
        try:
            writer.write(
                f"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            )
            await writer.drain()
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(body)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(65536), 5)
        finally:
            writer.close()
            await writer.wait_closed()
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")

    run(tmp_path, scenario)


def _self_signed_tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = rsa_key(2)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    client = ssl.create_default_context(cafile=str(cert_file))
    return tls_context(str(cert_file), str(key_file)), client


def test_the_endpoint_serves_https_with_the_configured_certificate(
    tmp_path: Path, certs: Path, signer: Signer
) -> None:
    server_ssl, client_ssl = _self_signed_tls(tmp_path)

    async def scenario(ep: Endpoint) -> None:
        assert (await ep.post(signer.sign(notification(), "2")))[0] == 200
        assert len(ep.rows()["events"]) == 1

    run(tmp_path, scenario, server_ssl=server_ssl, client_ssl=client_ssl)


def test_plain_connections_are_closed_at_once_when_all_slots_are_busy(
    tmp_path: Path, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sns_http, "MAX_CONNECTIONS", 1)

    async def scenario(ep: Endpoint) -> None:
        idle = socket.create_connection(("127.0.0.1", ep.port), timeout=5)
        try:
            await asyncio.sleep(0.1)  # the idle connection holds the only slot
            answer = await raw_exchange(ep.port, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 503 ")
        finally:
            idle.close()

    run(tmp_path, scenario)
