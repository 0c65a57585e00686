"""SNS over HTTP(S): SES events pushed by SNS, verified, then applied like SQS batches.

For deployments without SQS. Each POST is one SNS envelope; the answer tells SNS
what to do next, and SNS retries only 5xx:

* 403 - anything not provably from SNS for an allowed topic: no signature, a bad
  one, a certificate URL off `sns.<region>.amazonaws.com`, a topic not in
  `[feedback] sns_topic_arns` (an empty list refuses everything). The store is
  not touched and no certificate is fetched for an unknown topic.
* 413 - a body over MAX_BODY (SNS messages are at most 256 KB).
* 503 - the signing certificate could not be obtained (not in the cert dir,
  network down): the message may be genuine, so SNS should retry.
* 500 - the store failed; SNS retries and feedback.apply's dedupe keys make the
  retry harmless. 502 - visiting a SubscribeURL failed.
* 200 - applied (or a duplicate, which changes nothing), confirmed, or noted.

Any request path is accepted (a proxy may mount the endpoint anywhere); the
`x-amz-sns-*` headers are ignored, since only the signed body can be trusted.
Only the verified fields are applied (`SignedMessage.envelope()`), through
`feedback.apply.apply_batch`, the SQS consumer's own path, so dedupe, dead
letters and policy are identical. A SubscriptionConfirmation for an allowed topic
is confirmed by GETting its (checked) SubscribeURL; an UnsubscribeConfirmation is
only logged, since visiting its URL would subscribe us again.

Why `asyncio.start_server` with a small HTTP/1.1 reader rather than
`http.server` in a thread: the store is an asyncio object bound to this event loop, so a
handler on the loop calls `apply_batch` directly, where a threaded server would
have to hop back with `run_coroutine_threadsafe` and carry two concurrency
models. SNS needs very little HTTP: a POST with Content-Length, no chunking, one
request per connection. Every read has a size cap and a timeout and connections
are capped, so a slow or hostile client costs one bounded task. Blocking work
(a certificate fetch, a confirmation GET) runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from feedback.apply import Incoming, apply_batch
from feedback.ingest.sns_certs import CertificateUnavailable, Fetch, VerifyError, confirm_https, fetch_https
from feedback.ingest.sns_verify import (
    NOTIFICATION,
    SUBSCRIPTION_CONFIRMATION,
    SignedMessage,
    SnsVerifier,
    get_field,
)
from relay.config import Config
from relay.store import Store, StoreError
from relay.timeutil import utcnow

log = logging.getLogger("ses_relay.feedback.sns")

Confirm = Callable[[str], None]

DEFAULT_LISTEN = "127.0.0.1:8080"
MAX_BODY = 256 * 1024
MAX_LINE = 8 * 1024
MAX_HEADERS = 100
HEADER_TIMEOUT_SECONDS = 10.0
BODY_TIMEOUT_SECONDS = 30.0
MAX_CONNECTIONS = 64

_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Reply:
    status: int
    text: str


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Two `Message` keys would let the signed value and the applied value differ."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def parse_envelope(body: bytes) -> dict[str, Any]:
    """The JSON object of a POST body; VerifyError (so: 403) when there is none."""
    try:
        doc = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise VerifyError("body is not UTF-8") from None
    except _DuplicateKey as exc:
        raise VerifyError(f"body has a {exc}") from None
    except json.JSONDecodeError as exc:
        raise VerifyError(f"body is not JSON ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise VerifyError(f"body is a JSON {type(doc).__name__}, not an SNS envelope")
    return doc


class SnsEndpoint:
    """What to do with one POST body; knows nothing of HTTP beyond the status it returns."""

    def __init__(
        self,
        store: Store,
        config: Config,
        verifier: SnsVerifier,
        confirm: Confirm,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.config = config
        self.verifier = verifier
        self.confirm = confirm
        self.clock = clock
        self.allowed = frozenset(config.feedback.sns_topic_arns)

    async def deliver(self, body: bytes, peer: str) -> Reply:
        if not self.allowed:
            log.error(
                "refused SNS POST from %s: [feedback] sns_topic_arns is empty, so no topic is allowed", peer
            )
            return Reply(403, "no SNS topic is allowed here\n")
        try:
            envelope = parse_envelope(body)
            topic = get_field(envelope, "TopicArn")
            if not isinstance(topic, str) or topic not in self.allowed:
                raise VerifyError(f"topic {topic!r} is not in [feedback] sns_topic_arns")
            signed = await asyncio.to_thread(self.verifier.verify, envelope)
            if signed.topic_arn not in self.allowed:  # the same field, now signed; belt and braces
                raise VerifyError(f"topic {signed.topic_arn!r} is not in [feedback] sns_topic_arns")
        except CertificateUnavailable as exc:
            log.error("SNS POST from %s not checked, asking SNS to retry: %s", peer, exc)
            return Reply(503, "signing certificate unavailable; retry later\n")
        except VerifyError as exc:
            log.warning("refused SNS POST from %s: %s", peer, exc)
            return Reply(403, f"refused: {exc}\n")
        if signed.type == NOTIFICATION:
            return await self._apply(signed, peer)
        if signed.type == SUBSCRIPTION_CONFIRMATION:
            return await self._confirm(signed, peer)
        log.warning(
            "SNS UnsubscribeConfirmation for %s (message %s): %s", signed.topic_arn, signed.message_id,
            signed.message,
        )  # fmt: skip
        return Reply(200, "unsubscribe confirmation noted\n")

    async def _apply(self, signed: SignedMessage, peer: str) -> Reply:
        item = Incoming(json.dumps(signed.envelope()), f"sns-http:{signed.topic_arn}")
        try:
            result = await apply_batch(self.store, [item], self.config, self.clock())
        except StoreError as exc:
            log.error("SNS message %s from %s not applied, SNS will retry: %s", signed.message_id, peer, exc)
            return Reply(500, "store unavailable; retry later\n")
        log.info(
            "SNS %s: applied %d event(s), %d duplicate(s), %d dead letter(s)",
            signed.message_id, result.events, result.duplicates, result.dead_letters,
        )  # fmt: skip
        return Reply(200, f"applied {result.events} event(s), {result.duplicates} duplicate(s)\n")

    async def _confirm(self, signed: SignedMessage, peer: str) -> Reply:
        url = signed.subscribe_url
        assert url is not None  # a signed SubscriptionConfirmation always has one
        try:
            await asyncio.to_thread(self.confirm, url)
        except Exception as exc:
            log.error("could not confirm the SNS subscription to %s: %s", signed.topic_arn, exc)
            return Reply(502, "could not confirm the subscription\n")
        log.warning("confirmed the SNS subscription to %s (asked by %s)", signed.topic_arn, peer)
        return Reply(200, "subscription confirmed\n")


# --------------------------------------------------------------------------- HTTP/1.1


class _HttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """Request line and headers (names lower-cased); raise _HttpError on anything malformed."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _HttpError(431, "request line too long\n") from None
    parts = line.decode("latin-1").strip().split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _HttpError(400, "malformed request line\n")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _HttpError(431, "header line too long\n") from None
        text = raw.decode("latin-1").rstrip("\r\n")
        if not text:
            return parts[0], headers
        name, sep, value = text.partition(":")
        if not sep or not name or name != name.strip():
            raise _HttpError(400, "malformed header line\n")
        key = name.lower()
        value = value.strip()
        if key in headers and headers[key] != value:
            raise _HttpError(400, f"conflicting {name} headers\n")
        headers[key] = value
    raise _HttpError(431, "too many header lines\n")


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise _HttpError(411, "send a Content-Length, not Transfer-Encoding\n")
    value = headers.get("content-length")
    if value is None:
        raise _HttpError(411, "Content-Length required\n")
    if not value.isdigit():
        raise _HttpError(400, "bad Content-Length\n")
    length = int(value)
    if length > MAX_BODY:
        raise _HttpError(413, f"body over {MAX_BODY} bytes\n")
    return length


async def _write(writer: asyncio.StreamWriter, reply: Reply, extra: str = "") -> None:
    body = reply.text.encode("utf-8")
    head = (
        f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    )
    writer.write(head.encode("latin-1") + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


class SnsHttpServer:
    """One listening socket in front of an SnsEndpoint; one request per connection."""

    def __init__(self, endpoint: SnsEndpoint) -> None:
        self.endpoint = endpoint
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def start(
        self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
    ) -> asyncio.Server:
        return await asyncio.start_server(self._connection, host, port, limit=MAX_LINE, ssl=ssl_context)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        try:
            if self._slots.locked():
                await _write(writer, Reply(503, "busy\n"))
                return
            async with self._slots:
                await self._request(reader, writer, peer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError) as exc:
            log.debug("SNS connection from %s ended: %r", peer, exc)
        except Exception:
            log.exception("SNS connection from %s failed", peer)
            with contextlib.suppress(Exception):
                await _write(writer, Reply(500, "internal error\n"))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        try:
            method, headers = await asyncio.wait_for(_read_head(reader), HEADER_TIMEOUT_SECONDS)
            if method != "POST":
                await _write(writer, Reply(405, "SNS delivers by POST\n"), "Allow: POST\r\n")
                return
            length = _content_length(headers)
        except _HttpError as exc:
            log.warning("SNS endpoint: %s from %s: %s", exc.status, peer, exc.text.strip())
            await _write(writer, Reply(exc.status, exc.text))
            return
        except TimeoutError:
            await _write(writer, Reply(408, "request head too slow\n"))
            return
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        body = await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT_SECONDS)
        reply = await self.endpoint.deliver(body, peer)
        await _write(writer, reply)


def _peer(writer: asyncio.StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    if isinstance(info, tuple) and len(info) >= 2:
        return f"{info[0]}:{info[1]}"
    return str(info)


async def serve_sns(
    store: Store,
    config: Config,
    host: str,
    port: int,
    *,
    cert_dir: Path | None,
    fetch: Fetch | None,
    confirm: Confirm,
    ssl_context: ssl.SSLContext | None = None,
) -> asyncio.Server:
    """Start the endpoint on host:port (port 0 picks one); the caller closes the server."""
    if not config.feedback.sns_topic_arns:
        log.error("[feedback] sns_topic_arns is empty: every SNS message will be refused with 403")
    endpoint = SnsEndpoint(store, config, SnsVerifier(cert_dir=cert_dir, fetch=fetch), confirm)
    return await SnsHttpServer(endpoint).start(host, port, ssl_context=ssl_context)


def configured_cert_dir(config: Config) -> Path | None:
    return Path(config.feedback.sns_cert_dir) if config.feedback.sns_cert_dir else None


async def run_sns_http(
    store: Store,
    config: Config,
    host: str,
    port: int,
    *,
    stop: asyncio.Event,
    ssl_context: ssl.SSLContext | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """`ses-relay feedback http`: the production endpoint (fetches certificates, confirms
    subscriptions over the network) until `stop` is set."""
    cert_dir = configured_cert_dir(config)
    server = await serve_sns(
        store, config, host, port, cert_dir=cert_dir, fetch=fetch_https, confirm=confirm_https,
        ssl_context=ssl_context,
    )  # fmt: skip
    sockets = ", ".join(_address(s.getsockname()) for s in server.sockets)
    scheme = "https" if ssl_context else "http"
    topics = ", ".join(config.feedback.sns_topic_arns) or "NONE (every message is refused)"
    announce(f"ses-relay SNS endpoint listening on {scheme}://{sockets}/ for topics: {topics}")
    if cert_dir is not None:
        announce(f"certificates from {cert_dir} first, then fetched from sns.<region>.amazonaws.com")
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def _address(sockname: Any) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for `--tls` from [tls] cert_file/key_file (SNS needs a CA-signed cert)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context
