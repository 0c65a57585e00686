"""A local stand-in for SES v1's query API, built for fault injection.

moto answers every call with success at full speed; retry, backoff and
backpressure tests need an SES that is slow, throttles, fails with 5xx, drops
connections and refuses them, on demand and while running. This server speaks
enough of the query protocol for boto3's `send_raw_email` and `get_send_quota`:
form-encoded POSTs in, the XML SES answers out (errors as
ErrorResponse/Error/Type/Code/Message with SES's HTTP status). It also answers
SESv2's `send_email` (Raw content only) and `get_account` in v2's REST-JSON
shape (errors: status + x-amzn-ErrorType header + {"message": ...}), so the v2
path can be tested against the same knobs.

    with FakeSes() as ses:
        ses.fail_next(2, "Throttling", "Maximum sending rate exceeded.", 400)
        client = BotoSes(region="us-east-1", endpoint_url=ses.url, api="v1", concurrency=4)
        ...
        ses.wait_for_calls(1, timeout=5)
        assert ses.calls[0].configuration_set == "tx"

It does not check signatures, so any fake credentials do (but botocore still
needs some in the environment to sign at all).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

XMLNS = "http://ses.amazonaws.com/doc/2010-12-01/"
MAX_RAW_SIZE = 10 * 1024 * 1024  # SES v1's limit on the whole raw message


@dataclass(frozen=True)
class Failure:
    """An error answer: SES's code, message and HTTP status (Throttling is a 400)."""

    code: str
    message: str
    status: int = 400


@dataclass(frozen=True)
class Drop:
    """Close the connection without answering (the client sees a reset/closed connection)."""


@dataclass(frozen=True)
class FakeRequest:
    """What a hook sees: the action and its parameters.

    v1: the flat form parameters (RawMessage.Data still base64). v2 SendEmail
    (action "SendEmail") and GetAccount: the JSON body's top-level keys, values
    re-encoded as JSON text.
    """

    action: str
    params: Mapping[str, str]
    received_at: float


@dataclass(frozen=True)
class ReceivedCall:
    """One send that succeeded, as SES would have understood it."""

    api: str  # "v1" SendRawEmail or "v2" SendEmail with Raw content
    message_id: str
    raw: bytes
    source: str | None
    destinations: tuple[str, ...]
    configuration_set: str | None
    tags: tuple[tuple[str, str], ...]
    source_arn: str | None
    from_arn: str | None
    return_path_arn: str | None
    timestamp: float  # time.time() when answered
    monotonic: float  # time.monotonic() when answered, for rate measurements


#: A hook may answer the request itself (Failure or Drop), or return None to let
#: the normal processing go on. It may also sleep, count, or flip other knobs.
Hook = Callable[[FakeRequest], "Failure | Drop | None"]


def _members(params: Mapping[str, str], prefix: str) -> list[str]:
    """Query-protocol lists: Prefix.member.1, Prefix.member.2, ... in index order."""
    found: list[tuple[int, str]] = []
    head = f"{prefix}.member."
    for key, value in params.items():
        if key.startswith(head) and key[len(head) :].isdigit():
            found.append((int(key[len(head) :]), value))
    return [value for _, value in sorted(found)]


def _tags(params: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    tags: list[tuple[int, str, str]] = []
    for index in itertools.count(1):
        name = params.get(f"Tags.member.{index}.Name")
        if name is None:
            break
        tags.append((index, name, params.get(f"Tags.member.{index}.Value", "")))
    return tuple((name, value) for _, name, value in tags)


def _error_xml(failure: Failure, request_id: str) -> bytes:
    kind = "Receiver" if failure.status >= 500 else "Sender"
    return (
        f'<ErrorResponse xmlns="{XMLNS}">\n'
        f"  <Error>\n"
        f"    <Type>{kind}</Type>\n"
        f"    <Code>{escape(failure.code)}</Code>\n"
        f"    <Message>{escape(failure.message)}</Message>\n"
        f"  </Error>\n"
        f"  <RequestId>{request_id}</RequestId>\n"
        f"</ErrorResponse>\n"
    ).encode()


def _result_xml(action: str, body: str, request_id: str) -> bytes:
    return (
        f'<{action}Response xmlns="{XMLNS}">\n'
        f"  <{action}Result>\n{body}  </{action}Result>\n"
        f"  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n"
        f"</{action}Response>\n"
    ).encode()


class FakeSes:
    """The server and its knobs; every knob is safe to turn while requests are in flight."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        max_send_rate: float = 14.0,
        max_24_hour_send: float = 50000.0,
        max_raw_size: int = MAX_RAW_SIZE,
    ) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._latency = latency
        self.max_send_rate = max_send_rate
        self.max_24_hour_send = max_24_hour_send
        self.max_raw_size = max_raw_size
        self._failures: deque[Failure | Drop] = deque()
        self._hook: Hook | None = None
        self._calls: list[ReceivedCall] = []
        self._attempts = 0
        self._ids = itertools.count(1)
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # --- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> FakeSes:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Listen on 127.0.0.1 (a free port the first time, the same port after)."""
        with self._lock:
            if self._server is not None:
                return
            server = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler_class())
            server.daemon_threads = True
            # A handler still sleeping out its latency when the test stops the server
            # writes to a closed socket; that is expected, not worth a traceback.
            server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
            self._port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop listening and cut open connections: new calls get "connection refused"."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            connections = list(self._connections)
            self._connections.clear()
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for conn in connections:  # kept-alive connections would otherwise still be served
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if thread is not None:
            thread.join(timeout=5)

    # "refuse connections" knobs: the same as stop/start, named for what the test means
    stop_listening = stop
    start_listening = start

    @property
    def listening(self) -> bool:
        with self._lock:
            return self._server is not None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("FakeSes is not started")
        return f"http://127.0.0.1:{self._port}"

    # --- knobs -------------------------------------------------------------------

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency cannot be negative")
        with self._lock:
            self._latency = seconds

    def fail_next(
        self,
        n: int = 1,
        code: str = "Throttling",
        message: str = "Maximum sending rate exceeded.",
        status: int = 400,
    ) -> None:
        """Answer the next `n` SendRawEmail calls with this error (queued after earlier ones)."""
        with self._lock:
            self._failures.extend([Failure(code, message, status)] * n)

    def drop_next(self, n: int = 1) -> None:
        """Close the connection on the next `n` SendRawEmail calls without answering."""
        with self._lock:
            self._failures.extend([Drop()] * n)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def set_hook(self, hook: Hook | None) -> None:
        """Call `hook` on every request (any action) before the normal processing."""
        with self._lock:
            self._hook = hook

    # --- what was received ---------------------------------------------------------

    @property
    def calls(self) -> list[ReceivedCall]:
        """Successful SendRawEmail calls, in the order they were answered (a copy)."""
        with self._lock:
            return list(self._calls)

    @property
    def attempts(self) -> int:
        """Every SendRawEmail request seen, failed or not."""
        with self._lock:
            return self._attempts

    def reset(self) -> None:
        """Forget calls, attempts, failures and the hook; keep listening."""
        with self._lock:
            self._calls.clear()
            self._attempts = 0
            self._failures.clear()
            self._hook = None

    def wait_for_calls(self, n: int, timeout: float = 10.0) -> list[ReceivedCall]:
        """Block until at least `n` successful calls arrived; raise TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._calls) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"FakeSes got {len(self._calls)} of {n} calls in {timeout}s")
                self._changed.wait(left)
            return list(self._calls)

    # --- request processing (runs in the server's threads) ---------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as boto3 expects from SES

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def do_GET(self) -> None:
                self._body()
                path = self.path.split("?", 1)[0]
                if path == "/v2/email/account":
                    self._reply(fake._answer_v2("GetAccount", {}))
                else:
                    self._reply(_Reply(404, "application/json", b'{"message": "not found"}', {}))

            def do_POST(self) -> None:
                body = self._body()
                path = self.path.split("?", 1)[0]
                if path == "/v2/email/outbound-emails":
                    try:
                        doc = json.loads(body or b"{}")
                    except ValueError:
                        doc = None
                    if not isinstance(doc, dict):
                        self._reply(_v2_error(Failure("BadRequestException", "body is not a JSON object")))
                        return
                    self._reply(fake._answer_v2("SendEmail", doc))
                    return
                text = body.decode("utf-8", "replace")
                params = {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}
                self._reply(fake._answer_v1(params))

            def _reply(self, reply: _Reply | None) -> None:
                if reply is None:  # Drop: no answer at all
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        return Handler

    def _begin(self, action: str, params: Mapping[str, str], is_send: bool) -> Failure | Drop | None:
        """Common to every request: count, wait out the latency, consult the queue and the hook."""
        with self._lock:
            latency, hook = self._latency, self._hook
            queued: Failure | Drop | None = None
            if is_send:
                self._attempts += 1
                if self._failures:
                    queued = self._failures.popleft()
        if latency:
            time.sleep(latency)
        if queued is None and hook is not None:
            queued = hook(FakeRequest(action, dict(params), time.time()))
        return queued

    def _record(self, call: ReceivedCall) -> None:
        with self._changed:
            self._calls.append(call)
            self._changed.notify_all()

    def _sent_last_24h(self) -> int:
        with self._lock:
            return sum(len(call.destinations) for call in self._calls)

    def _new_message_id(self) -> str:
        return f"{next(self._ids):016x}-{uuid.uuid4()}-000000"

    def _answer_v1(self, params: dict[str, str]) -> _Reply | None:
        action = params.get("Action", "")
        outcome = self._begin(action, params, action == "SendRawEmail")
        if isinstance(outcome, Drop):
            return None
        if isinstance(outcome, Failure):
            return _v1_error(outcome)
        if action == "SendRawEmail":
            return self._send_raw_email(params)
        if action == "GetSendQuota":
            body = (
                f"    <SentLast24Hours>{float(self._sent_last_24h())}</SentLast24Hours>\n"
                f"    <Max24HourSend>{float(self.max_24_hour_send)}</Max24HourSend>\n"
                f"    <MaxSendRate>{float(self.max_send_rate)}</MaxSendRate>\n"
            )
            return _v1_result(action, body)
        unknown = f"The action {action or '(none)'} is not valid for this endpoint."
        return _v1_error(Failure("InvalidAction", unknown))

    def _check_raw(self, data: object) -> bytes | Failure:
        if not isinstance(data, str) or not data:
            return Failure("ValidationError", "1 validation error detected: RawMessage.Data is required")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return Failure("InvalidParameterValue", "RawMessage.Data is not valid base64")
        if len(raw) > self.max_raw_size:
            return Failure("MessageRejected", f"Message length is more than {self.max_raw_size} bytes long")
        return raw

    def _send_raw_email(self, params: dict[str, str]) -> _Reply:
        raw = self._check_raw(params.get("RawMessage.Data"))
        if isinstance(raw, Failure):
            return _v1_error(raw)
        message_id = self._new_message_id()
        self._record(
            ReceivedCall(
                api="v1",
                message_id=message_id,
                raw=raw,
                source=params.get("Source"),
                destinations=tuple(_members(params, "Destinations")),
                configuration_set=params.get("ConfigurationSetName"),
                tags=_tags(params),
                source_arn=params.get("SourceArn"),
                from_arn=params.get("FromArn"),
                return_path_arn=params.get("ReturnPathArn"),
                timestamp=time.time(),
                monotonic=time.monotonic(),
            )
        )
        return _v1_result("SendRawEmail", f"    <MessageId>{message_id}</MessageId>\n")

    def _answer_v2(self, action: str, doc: dict[str, object]) -> _Reply | None:
        flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in doc.items()}
        outcome = self._begin(action, flat, action == "SendEmail")
        if isinstance(outcome, Drop):
            return None
        if isinstance(outcome, Failure):
            return _v2_error(outcome)
        if action == "GetAccount":
            quota = {
                "Max24HourSend": float(self.max_24_hour_send),
                "MaxSendRate": float(self.max_send_rate),
                "SentLast24Hours": float(self._sent_last_24h()),
            }
            account = {"SendQuota": quota, "SendingEnabled": True, "ProductionAccessEnabled": True}
            return _Reply(200, "application/json", json.dumps(account).encode(), {})
        content = doc.get("Content")
        raw_doc = content.get("Raw") if isinstance(content, dict) else None
        if not isinstance(raw_doc, dict):
            return _v2_error(Failure("BadRequestException", "this fake only accepts Content.Raw"))
        raw = self._check_raw(raw_doc.get("Data"))
        if isinstance(raw, Failure):
            return _v2_error(raw)
        destination = doc.get("Destination")
        destination = destination if isinstance(destination, dict) else {}
        addresses = [
            str(address)
            for field in ("ToAddresses", "CcAddresses", "BccAddresses")
            for address in destination.get(field) or []
        ]
        tags = doc.get("EmailTags")
        message_id = self._new_message_id()
        self._record(
            ReceivedCall(
                api="v2",
                message_id=message_id,
                raw=raw,
                source=_opt_str(doc.get("FromEmailAddress")),
                destinations=tuple(addresses),
                configuration_set=_opt_str(doc.get("ConfigurationSetName")),
                tags=tuple(
                    (str(t.get("Name")), str(t.get("Value")))
                    for t in (tags if isinstance(tags, list) else [])
                    if isinstance(t, dict)
                ),
                source_arn=_opt_str(doc.get("FromEmailAddressIdentityArn")),
                from_arn=None,
                return_path_arn=None,
                timestamp=time.time(),
                monotonic=time.monotonic(),
            )
        )
        return _Reply(200, "application/json", json.dumps({"MessageId": message_id}).encode(), {})


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class _Reply:
    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str]


def _v1_error(failure: Failure) -> _Reply:
    return _Reply(failure.status, "text/xml", _error_xml(failure, str(uuid.uuid4())), {})


def _v1_result(action: str, body: str) -> _Reply:
    return _Reply(200, "text/xml", _result_xml(action, body, str(uuid.uuid4())), {})


def _v2_error(failure: Failure) -> _Reply:
    body = json.dumps({"message": failure.message}).encode()
    return _Reply(failure.status, "application/json", body, {"x-amzn-ErrorType": failure.code})
