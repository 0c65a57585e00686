"""moto's server plus the SESv2 operations moto 5.2 does not implement, behind one endpoint.

moto 5.2 answers 404 to SESv2's account-level suppression list
(ListSuppressedDestinations, PutSuppressedDestination, GetSuppressedDestination)
and to configuration-set event destinations (GetConfigurationSetEventDestinations,
CreateConfigurationSetEventDestination). Its SESv1 has event destinations, but v1
cannot subscribe the DeliveryDelay and Subscription events, so `setup-aws` uses v2
and sync-ses can only use v2.

This is a small HTTP server on 127.0.0.1 that answers those five operations itself,
in SESv2's REST-JSON shape (errors: status + x-amzn-ErrorType + {"message": ...}),
and forwards every other request to the moto server unchanged (moto tells the
services apart by the signature's credential scope, so one endpoint serves SES,
SNS, SQS and STS alike). boto3 talks to it over real HTTP with real signing.

    with SesV2Gaps(moto_url) as aws:
        aws.page_limit = 2          # force paging
        boto3.client("sesv2", endpoint_url=aws.url).put_suppressed_destination(...)
        aws.suppressed["a@example.com"]   # -> ("BOUNCE", datetime)
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

V2_EVENT_TYPES = {
    "SEND",
    "REJECT",
    "BOUNCE",
    "COMPLAINT",
    "DELIVERY",
    "OPEN",
    "CLICK",
    "RENDERING_FAILURE",
    "DELIVERY_DELAY",
    "SUBSCRIPTION",
}
SUPPRESSION = "/v2/email/suppression/addresses"
_DESTINATIONS = re.compile(r"^/v2/email/configuration-sets/([^/]+)/event-destinations$")
_ONE_SUPPRESSED = re.compile(r"^/v2/email/suppression/addresses/([^/]+)$")
MAX_PAGE_SIZE = 1000


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class SesV2Gaps:
    def __init__(self, moto_url: str) -> None:
        parts = urlsplit(moto_url)
        self.moto_host = parts.hostname or "127.0.0.1"
        self.moto_port = parts.port or 80
        self.suppressed: dict[str, tuple[str, datetime]] = {}
        self.event_destinations: dict[str, dict[str, dict[str, Any]]] = {}
        self.page_limit = MAX_PAGE_SIZE  # the server's own cap on a page, to force paging in tests
        self.calls: list[tuple[str, str]] = []  # (method, path) of the requests answered here
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> SesV2Gaps:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- the operations moto lacks ------------------------------------------------

    def _configuration_set_exists(self, name: str) -> bool:
        """Ask moto (SESv2 GetConfigurationSet, which it has), so both views agree."""
        status, _, _ = self._forward("GET", f"/v2/email/configuration-sets/{name}", self._v2_headers(), b"")
        return status == 200

    def _v2_headers(self) -> dict[str, str]:
        # moto picks the service from the credential scope of the signature.
        scope = "Credential=testing/20250101/us-east-1/ses/aws4_request"
        return {"Authorization": f"AWS4-HMAC-SHA256 {scope}, SignedHeaders=host, Signature=0"}

    def answer(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> dict[str, Any] | None:
        """The JSON answer for one of the missing operations, or None to forward to moto."""
        if not path.startswith(("/v2/email/suppression/", "/v2/email/configuration-sets/")):
            return None
        doc: dict[str, Any] = json.loads(body) if body and method in ("PUT", "POST") else {}
        if path == SUPPRESSION and method == "GET":
            return self._list_suppressed(query)
        if path == SUPPRESSION and method == "PUT":
            address, reason = doc.get("EmailAddress"), doc.get("Reason")
            if not isinstance(address, str) or "@" not in address:
                raise ApiError(400, "BadRequestException", f"Invalid email address {address!r}.")
            if reason not in ("BOUNCE", "COMPLAINT"):
                raise ApiError(400, "BadRequestException", f"Invalid reason {reason!r}.")
            with self.lock:
                self.suppressed[address] = (reason, datetime.now(UTC))
            return {}
        match = _ONE_SUPPRESSED.match(path)
        if match and method == "GET":
            address = unquote(match.group(1))
            with self.lock:
                found = self.suppressed.get(address)
            if found is None:
                raise ApiError(404, "NotFoundException", f"Email address {address} does not exist.")
            return {"SuppressedDestination": self._summary(address, *found)}
        match = _DESTINATIONS.match(path)
        if match:
            name = unquote(match.group(1))
            if not self._configuration_set_exists(name):
                raise ApiError(404, "NotFoundException", f"Configuration set <{name}> does not exist.")
            with self.lock:
                existing = self.event_destinations.setdefault(name, {})
                if method == "GET":
                    return {"EventDestinations": [dict(d) for d in existing.values()]}
                if method == "POST":
                    return self._create_destination(existing, name, doc)
        return None

    def _create_destination(
        self, existing: dict[str, dict[str, Any]], set_name: str, doc: dict[str, Any]
    ) -> dict[str, Any]:
        dest_name = doc.get("EventDestinationName")
        definition = doc.get("EventDestination") or {}
        if not dest_name:
            raise ApiError(400, "BadRequestException", "EventDestinationName is required.")
        if dest_name in existing:
            raise ApiError(400, "AlreadyExistsException", f"Event destination {dest_name} already exists.")
        types = definition.get("MatchingEventTypes") or []
        unknown = [t for t in types if t not in V2_EVENT_TYPES]
        if not types or unknown:
            raise ApiError(400, "BadRequestException", f"Invalid MatchingEventTypes {unknown or types}.")
        existing[dest_name] = {"Name": dest_name, **definition}
        return {}

    def _list_suppressed(self, query: dict[str, list[str]]) -> dict[str, Any]:
        size = int(query.get("PageSize", [str(MAX_PAGE_SIZE)])[0])
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise ApiError(400, "BadRequestException", f"PageSize must be 1..{MAX_PAGE_SIZE}.")
        size = min(size, self.page_limit)
        start = int(query.get("NextToken", ["0"])[0])
        reasons = set(query.get("Reason", [])) or {"BOUNCE", "COMPLAINT"}
        with self.lock:
            rows = sorted((a, r, t) for a, (r, t) in self.suppressed.items() if r in reasons)
        page = rows[start : start + size]
        out: dict[str, Any] = {"SuppressedDestinationSummaries": [self._summary(*row) for row in page]}
        if start + size < len(rows):
            out["NextToken"] = str(start + size)
        return out

    @staticmethod
    def _summary(address: str, reason: str, at: datetime) -> dict[str, Any]:
        return {"EmailAddress": address, "Reason": reason, "LastUpdateTime": at.timestamp()}

    # -- plumbing -------------------------------------------------------------------

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.moto_host, self.moto_port, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gaps = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                try:
                    result = gaps.answer(self.command, parts.path, parse_qs(parts.query), body)
                except (ValueError, KeyError) as exc:  # malformed request: SES answers 400
                    self._reply(
                        400,
                        [("x-amzn-ErrorType", "BadRequestException")],
                        json.dumps({"message": str(exc)}).encode(),
                    )
                    return
                except ApiError as exc:
                    with gaps.lock:
                        gaps.calls.append((self.command, parts.path))
                    payload = json.dumps({"message": exc.message}).encode()
                    self._reply(exc.status, [("x-amzn-ErrorType", exc.code)], payload)
                    return
                if result is None:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "content-length"}
                    status, reply_headers, payload = gaps._forward(self.command, self.path, headers, body)
                    keep = [(k, v) for k, v in reply_headers if k.lower() not in _HOP_BY_HOP]
                    self._reply(status, keep, payload)
                    return
                with gaps.lock:
                    gaps.calls.append((self.command, parts.path))
                self._reply(200, [("Content-Type", "application/json")], json.dumps(result).encode())

            def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        return Handler


_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive", "server", "date"}
