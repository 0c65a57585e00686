"""LeanSes beside BotoSes: both clients for one endpoint, and what each makes of a failure.

Shared by the lean client's system tests (tests/system/test_ses_lean*.py).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

from relay.sending.ses_api import SesError
from relay.sending.ses_client import BotoSes
from relay.sending.ses_lean import LeanSes
from tests.conftest import free_port
from tests.support.samples import request
from tests.support.security import Cert

REGION = "eu-west-2"
CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
}
Client = BotoSes | LeanSes


def clean_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials; no endpoint or proxy from the environment unless a test sets one."""
    for name, value in CREDS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SES", "AWS_ENDPOINT_URL_SESV2"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def lean(url: str | None, **kw: object) -> LeanSes:
    return LeanSes(region=REGION, endpoint_url=url, concurrency=4, **kw)  # type: ignore[arg-type]


def boto(url: str | None, **kw: object) -> BotoSes:
    return BotoSes(region=REGION, endpoint_url=url, api="v1", concurrency=4, **kw)  # type: ignore[arg-type]


def failure(client: Client, **overrides: object) -> SesError:
    with pytest.raises(SesError) as info:
        client.send_raw(request(**overrides))
    return info.value


def seen(err: SesError) -> tuple[object, ...]:
    """What the worker and the sender's notice get from an error, request id aside."""
    return (err.code, err.http_status, err.disposition, err.extra["kind"], err.message)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@contextmanager
def answering(status: int, body: bytes, tls: Cert | None = None) -> Iterator[str]:
    """A server that answers every POST with `status` and `body` (a proxy's or balancer's
    page, or an answer of our own), over TLS with `tls`'s certificate."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def verified_moto(moto_server: str) -> str:
    """moto's SES with example.com verified and configuration set "tx" in REGION: its URL."""
    admin = boto3.client("ses", region_name=REGION, endpoint_url=moto_server)
    admin.verify_domain_identity(Domain="example.com")
    if "tx" not in [c["Name"] for c in admin.list_configuration_sets()["ConfigurationSets"]]:
        admin.create_configuration_set(ConfigurationSet={"Name": "tx"})
    return moto_server


def send_concurrently(ses: Client, threads: int = 8, each: int = 2) -> tuple[list[BaseException], float]:
    """`threads` threads sending `each` calls at once through one client: their errors, and the seconds."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(each):
                ses.send_raw(request())
        except BaseException as exc:  # pragma: no cover - reported by the caller
            errors.append(exc)

    running = [threading.Thread(target=work) for _ in range(threads)]
    started = time.monotonic()
    for t in running:
        t.start()
    for t in running:
        t.join(timeout=10)
    return errors, time.monotonic() - started
