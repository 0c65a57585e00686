"""SendRawEmail as one signed HTTP request: the worker's hot call without boto3's client.

A boto3 `send_raw_email` spends most of its CPU in machinery a fixed call does not
need: parameter validation against the service model, the serializer, a dozen event
hooks, the endpoint ruleset, the response parser. Here the same Query-protocol POST
is built by hand (`send_raw_body`, pure), signed by botocore's own `SigV4Auth` with
the credentials of botocore's chain (the one boto3 uses; refreshable credentials
refresh themselves on `get_frozen_credentials`), and posted over a pool of keep-alive
connections (relay.sending.ses_http: the same timeouts, CA bundle and proxies as
boto3, and the same botocore exceptions for every way a connection fails). The
MessageId is read from the answer with one regex; an error answer goes through
botocore's Query parser and becomes the `ClientError` boto3 would raise, so
`translate` classifies both paths with one vocabulary.

Only SendRawEmail goes this way: GetSendQuota and everything else stay boto3's (a
client built on first need), and so does SESv2 (`[ses] api = "v2"`).
"""

from __future__ import annotations

import os
import re
from base64 import b64encode
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import botocore
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
)
from botocore.parsers import QueryParser, ResponseParserError

from relay.sending.ses_api import Disposition, SendRequest, SesError
from relay.sending.ses_client import BotoSes, configured_endpoint, translate
from relay.sending.ses_http import transport_for

API_VERSION = "2010-12-01"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
SIGNING_NAME = "ses"
_MESSAGE_ID = re.compile(rb"<MessageId>\s*([^<\s]+)\s*</MessageId>")


# --- the request and the answer (pure) -------------------------------------------


def _enc(value: str) -> str:
    """Percent-encoding as botocore's Query serializer does it (RFC 3986 unreserved kept)."""
    return quote(value, safe="-_.~")


def _check(request: SendRequest) -> None:
    """The type checks boto3's parameter validation would make, refused the same way."""
    strings = {"Source": request.source, "ConfigurationSetName": request.configuration_set,
               "SourceArn": request.source_arn, "FromArn": request.from_arn,
               "ReturnPathArn": request.return_path_arn}  # fmt: skip
    bad = [f"{name}, value: {value!r}" for name, value in strings.items()
           if value is not None and not isinstance(value, str)]  # fmt: skip
    bad += [f"Destinations, value: {d!r}" for d in request.destinations if not isinstance(d, str)]
    bad += [f"Tags, value: {t!r}" for t in request.tags
            if len(t) != 2 or not all(isinstance(part, str) for part in t)]  # fmt: skip
    if not isinstance(request.raw, bytes | bytearray):
        bad.append(f"RawMessage.Data, value: {type(request.raw).__name__}")
    if bad:
        raise ParamValidationError(report="Invalid type for parameter " + "; ".join(bad))


def send_raw_body(request: SendRequest) -> bytes:
    """SendRawEmail's form-encoded body; optional parameters left out when unset.

    Raises ParamValidationError (as boto3 would, before sending anything) for a
    parameter of the wrong type.
    """
    _check(request)
    parts = ["Action=SendRawEmail", "Version=" + API_VERSION]
    parts.append("Source=" + _enc(request.source))
    parts += [f"Destinations.member.{i}={_enc(d)}" for i, d in enumerate(request.destinations, 1)]
    data = b64encode(request.raw).replace(b"+", b"%2B").replace(b"/", b"%2F").replace(b"=", b"%3D")
    parts.append("RawMessage.Data=" + data.decode("ascii"))  # quote() walks it byte by byte
    for name, value in (("FromArn", request.from_arn), ("SourceArn", request.source_arn),
                        ("ReturnPathArn", request.return_path_arn)):  # fmt: skip
        if value:
            parts.append(f"{name}={_enc(value)}")
    for i, (name, value) in enumerate(request.tags, 1):
        parts.append(f"Tags.member.{i}.Name={_enc(name)}&Tags.member.{i}.Value={_enc(value)}")
    if request.configuration_set:
        parts.append("ConfigurationSetName=" + _enc(request.configuration_set))
    return "&".join(parts).encode("ascii")


def message_id(body: bytes) -> str | None:
    """SendRawEmailResult's MessageId, or None when the answer has none."""
    match = _MESSAGE_ID.search(body)
    return match.group(1).decode("ascii", "replace") if match else None


def client_error(status: int, headers: Any, body: bytes) -> ClientError:
    """The ClientError boto3 raises for this error answer (botocore's Query parser reads it).

    Raises ResponseParserError, as boto3 does, for an error body that is not XML.
    """
    parsed = QueryParser().parse({"status_code": status, "headers": headers, "body": body}, None)
    return ClientError(parsed, "SendRawEmail")


# --- where calls go ----------------------------------------------------------------


def resolve_endpoint(setting: str | None, session: Any, fallback: Callable[[], str]) -> str:
    """`[ses] endpoint_url`, else botocore's configured endpoint, else `fallback()`.

    botocore's order for a configured endpoint: AWS_ENDPOINT_URL_SES, AWS_ENDPOINT_URL,
    then the shared config file's `services` section and `endpoint_url`, unless
    AWS_IGNORE_CONFIGURED_ENDPOINT_URLS. With none, AWS's own endpoint for the region
    (partition, FIPS, dual-stack) is what a boto3 client resolves: `fallback` asks one.
    """
    chosen = configured_endpoint(setting)
    if chosen:
        return chosen
    if not session.get_config_variable("ignore_configured_endpoint_urls"):
        from botocore.configprovider import ConfiguredEndpointProvider

        found = ConfiguredEndpointProvider(
            full_config=session.full_config, scoped_config=session.get_scoped_config(), client_name="ses"
        ).provide()
        if found:
            return str(found)
    return fallback()


def _verify(session: Any) -> bool | str:
    """What a boto3 client verifies TLS with: ca_bundle (AWS_CA_BUNDLE), REQUESTS_CA_BUNDLE, certifi."""
    bundle = session.get_config_variable("ca_bundle")
    return bundle if bundle is not None else os.environ.get("REQUESTS_CA_BUNDLE", True)


# --- the client (IO) -----------------------------------------------------------------


class LeanSes:
    """SesApi (API v1): SendRawEmail signed and sent by hand, GetSendQuota by boto3.

    Thread-safe: the worker's threads share the connection pool (`concurrency`
    connections, as BotoSes's max_pool_connections), the credentials (botocore
    locks their refresh) and nothing else. No retries here: the worker owns them.
    """

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None,
        concurrency: int,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        session: botocore.session.Session | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._session = session or botocore.session.get_session()
        self._region = region
        self._boto_args: dict[str, Any] = dict(
            region=region, endpoint_url=endpoint_url, api="v1", concurrency=1,
            connect_timeout=connect_timeout, read_timeout=read_timeout,
        )  # fmt: skip
        self._boto: BotoSes | None = None
        self._credentials = self._session.get_credentials()  # None: every call fails as boto3's would
        endpoint = resolve_endpoint(endpoint_url, self._session, lambda: self.boto.endpoint_url)
        parts = urlsplit(endpoint)
        self._url = endpoint if parts.path else endpoint.rstrip("/") + "/"
        self._http = transport_for(
            self._url, size=concurrency, connect_timeout=connect_timeout, read_timeout=read_timeout,
            verify=_verify(self._session),
        )  # fmt: skip
        self._headers = {
            "Content-Type": CONTENT_TYPE,
            "User-Agent": f"ses-relay Botocore/{botocore.__version__}",
        }

    @property
    def boto(self) -> BotoSes:
        """The boto3 client for every call but SendRawEmail, built on first need."""
        if self._boto is None:
            import boto3

            session = boto3.session.Session(botocore_session=self._session)
            self._boto = BotoSes(session=session, **self._boto_args)
        return self._boto

    @property
    def endpoint_url(self) -> str:
        """Where SendRawEmail goes."""
        return self._url.rstrip("/") if urlsplit(self._url).path == "/" else self._url

    def close(self) -> None:
        """Release pooled connections (and boto3's, when it was built)."""
        self._http.close()
        if self._boto is not None:
            self._boto.close()

    def __enter__(self) -> LeanSes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, request: SendRequest) -> str:
        """Send one raw message; return SES's MessageId or raise a classified SesError."""
        try:
            body = send_raw_body(request)
            if self._credentials is None:
                raise NoCredentialsError()
            aws = AWSRequest(method="POST", url=self._url, data=body, headers=dict(self._headers))
            SigV4Auth(self._credentials.get_frozen_credentials(), SIGNING_NAME, self._region).add_auth(aws)
            status, headers, content = self._http.post(body, aws.headers)
        except BotoCoreError as exc:
            raise translate(exc) from exc
        try:
            if status < 300:
                found = message_id(content)
                if found is None:
                    raise ResponseParserError("SendRawEmail answered without a MessageId")
                return found
            error = client_error(status, headers, content)
        except ResponseParserError as exc:
            # boto3 lets this one out unclassified; SES answered, but not in words we
            # can read: an answer worth trying again rather than failing the message.
            raise SesError(
                "ResponseParserError", str(exc), Disposition.RETRY, status, {"kind": "server"}
            ) from exc
        raise translate(error) from error

    def max_send_rate(self) -> float:
        """Recipients per second SES allows this account (GetSendQuota, through boto3)."""
        return self.boto.max_send_rate()
