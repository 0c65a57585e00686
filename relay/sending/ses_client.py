"""The real SES client (boto3) and the classification of SES's failures.

`classify` is pure: it decides from SES's error code and HTTP status alone
whether a failed call is worth retrying. `BotoSes` is the thin shell: one boto3
client, created once, with botocore's own retries switched off because the
sender worker owns retrying (it must, to keep a message's attempts, backoff and
max age in the spool rather than hidden inside one blocking call).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    ParamValidationError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from relay.sending.ses_api import Disposition, SendRequest, SesError

if TYPE_CHECKING:
    import boto3  # imported when a client is built: the worker's sends need only botocore

# --- classification (pure) -------------------------------------------------

#: Codes that mean "not now" rather than "not this message". Grouped by the
#: `kind` hint put in SesError.extra, which lets the worker react to the cause
#: (slow the shared rate on "rate", hold everything on "quota"/"paused").
RETRY_CODES: Mapping[str, str] = {
    # sending rate: v1 says Throttling for both "Maximum sending rate exceeded."
    # and "Daily message quota exceeded." (the message tells them apart; see kind_of)
    "Throttling": "rate",
    "ThrottlingException": "rate",
    "MaxSendingRateExceeded": "rate",
    "TooManyRequestsException": "rate",  # v2, HTTP 429
    "RequestLimitExceeded": "rate",
    # v2 SendEmail lists LimitExceededException (400, "too many instances of the
    # specified resource type"); for a send the only limit it can mean is a
    # sending quota, so it waits like v1's daily quota does.
    "LimitExceededException": "quota",
    "DailyQuotaExceeded": "quota",
    # SES's side is unwell
    "ServiceUnavailable": "server",
    "ServiceUnavailableException": "server",
    "InternalFailure": "server",
    "InternalServerError": "server",
    "InternalError": "server",
    "RequestTimeout": "server",
    "RequestTimeoutException": "server",
    # Sending paused or suspended. These describe *our account or configuration
    # set*, not the message: SES pauses an account under review (or an admin
    # pauses it or a configuration set by hand), and it is resumed by people, in
    # hours or days. Failing permanently would bounce the whole spool for a state
    # that says nothing about any one message; retrying holds the mail until the
    # account is back, and the worker's max age still turns it into a notice if
    # it never is.
    "AccountSendingPausedException": "paused",
    "ConfigurationSetSendingPausedException": "paused",
    "SendingPausedException": "paused",  # v2 (account or configuration set)
    "AccountSuspendedException": "paused",  # v2; same reasoning, longer wait
    # Our credentials, permissions or clock. Same reasoning: every message would
    # fail alike until an operator fixes the relay, so hold them (max age applies).
    "ExpiredToken": "auth",
    "ExpiredTokenException": "auth",
    "RequestExpired": "auth",
    "RequestTimeTooSkewed": "auth",
    "InvalidClientTokenId": "auth",
    "UnrecognizedClientException": "auth",
    "SignatureDoesNotMatch": "auth",
    "InvalidSignatureException": "auth",
    "IncompleteSignature": "auth",
    "MissingAuthenticationToken": "auth",
    "AccessDenied": "auth",
    "AccessDeniedException": "auth",
    "NoCredentialsError": "auth",
    "PartialCredentialsError": "auth",
    "CredentialRetrievalError": "auth",
}

#: Codes that mean SES looked at this message (or our request for it) and said no.
PERMANENT_CODES: frozenset[str] = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerified",
        "MailFromDomainNotVerifiedException",
        "ConfigurationSetDoesNotExist",
        "ConfigurationSetDoesNotExistException",
        "NotFoundException",  # v2: the named configuration set does not exist
        "BadRequestException",
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "MissingParameter",
        "ValidationError",
        "ParamValidationError",  # botocore refused to build the request at all
    }
)

_QUOTA_WORDS = ("daily", "quota")


def classify(code: str | None, http_status: int | None) -> Disposition:
    """Decide whether a failed SES call should be retried.

    Known codes decide first (SES answers Throttling with HTTP 400, so the
    status alone would call it permanent). Unknown codes fall back on the
    status: 5xx and 429 retry, other 4xx are permanent. With no status at all we
    never heard SES's verdict (connection refused, reset, timed out, no
    credentials), so the message is retried.
    """
    if code is not None:
        if code in RETRY_CODES:
            return Disposition.RETRY
        if code in PERMANENT_CODES:
            return Disposition.PERMANENT
    if http_status is None:
        return Disposition.RETRY
    if http_status >= 500 or http_status == 429:
        return Disposition.RETRY
    if 400 <= http_status < 500:
        return Disposition.PERMANENT
    return Disposition.RETRY  # 1xx/2xx/3xx with an error body: SES misbehaving, try again


def kind_of(code: str | None, http_status: int | None, message: str = "") -> str:
    """A finer hint than the disposition: rate|quota|paused|auth|server|network|rejected.

    v1 reports the daily quota as code Throttling, told apart only by its message
    ("Daily message quota exceeded."); the worker should hold off for long on a
    quota and only slow down on a rate.
    """
    if code in RETRY_CODES:
        kind = RETRY_CODES[code]
        if kind == "rate" and all(word in message.lower() for word in _QUOTA_WORDS):
            return "quota"
        return kind
    if classify(code, http_status) is Disposition.PERMANENT:
        return "rejected"
    if http_status is None:
        return "network"
    return "rate" if http_status == 429 else "server"


def _error(code: str, message: str, http_status: int | None, **extra: str) -> SesError:
    disposition = classify(code, http_status)
    return SesError(
        code=code,
        message=message,
        disposition=disposition,
        http_status=http_status,
        extra={"kind": kind_of(code, http_status, message), **extra},
    )


def translate(exc: BaseException) -> SesError:
    """Turn a botocore exception into a classified SesError (pure: reads only the exception)."""
    if isinstance(exc, ClientError):
        err: Mapping[str, Any] = exc.response.get("Error", {}) or {}
        meta: Mapping[str, Any] = exc.response.get("ResponseMetadata", {}) or {}
        status = meta.get("HTTPStatusCode")
        code = str(err.get("Code") or (f"HTTP{status}" if status else "UnknownError"))
        extra = {"request_id": str(meta["RequestId"])} if meta.get("RequestId") else {}
        return _error(
            code, str(err.get("Message") or exc), status if isinstance(status, int) else None, **extra
        )
    if isinstance(exc, HTTPClientError | BotoConnectionError):
        # EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError,
        # ReadTimeoutError, ProxyConnectionError, SSLError: SES never answered.
        # A read timeout may mean SES did send it; a rare duplicate beats a loss.
        return _error(type(exc).__name__, str(exc), None)
    if isinstance(exc, ParamValidationError):
        return _error("ParamValidationError", str(exc), None)
    if isinstance(exc, BotoCoreError):
        return _error(type(exc).__name__, str(exc), None)
    raise TypeError(f"not a botocore exception: {exc!r}") from exc


# --- the client (IO) -----------------------------------------------------------


def configured_endpoint(endpoint_url: str | None) -> str | None:
    """`[ses] endpoint_url` when set ("" counts as unset), else None.

    None lets botocore resolve the endpoint as boto3 users expect:
    AWS_ENDPOINT_URL_SES (v1) or AWS_ENDPOINT_URL_SESV2 (v2), then AWS_ENDPOINT_URL,
    then the shared config file, then AWS's own endpoint for the region. Reading
    AWS_ENDPOINT_URL here and passing it on would override the service's variable.
    """
    return (endpoint_url or "").strip() or None


class BotoSes:
    """SesApi over boto3: one client for the process, shared by the worker threads.

    boto3 clients are thread-safe; the session that makes them is not, so the
    client is built here once. max_pool_connections matches the worker
    concurrency so every thread keeps its own warm HTTPS connection instead of
    queueing for one (or paying a TLS handshake per call).
    """

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None,
        api: Literal["v1", "v2"],
        concurrency: int,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        session: boto3.session.Session | None = None,
    ) -> None:
        if api not in ("v1", "v2"):
            raise ValueError(f"ses api must be 'v1' or 'v2', got {api!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.api = api
        config = Config(
            max_pool_connections=concurrency,
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            tcp_keepalive=True,
        )
        if session is None:
            import boto3

            session = boto3.session.Session()
        self._client: Any = session.client(
            "ses" if api == "v1" else "sesv2",
            region_name=region,
            endpoint_url=configured_endpoint(endpoint_url),
            config=config,
        )

    @property
    def endpoint_url(self) -> str:
        """Where the calls go, however botocore resolved it."""
        return str(self._client.meta.endpoint_url)

    def close(self) -> None:
        """Release pooled connections."""
        self._client.close()

    def __enter__(self) -> BotoSes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, request: SendRequest) -> str:
        """Send one raw message; return SES's MessageId or raise a classified SesError."""
        try:
            if self.api == "v1":
                response = self._client.send_raw_email(**v1_params(request))
            else:
                response = self._client.send_email(**v2_params(request))
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc) from exc
        return str(response["MessageId"])

    def max_send_rate(self) -> float:
        """Recipients per second SES allows this account (GetSendQuota / GetAccount)."""
        try:
            if self.api == "v1":
                return float(self._client.get_send_quota()["MaxSendRate"])
            return float(self._client.get_account()["SendQuota"]["MaxSendRate"])
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc) from exc


def _tags(request: SendRequest) -> list[dict[str, str]]:
    return [{"Name": name, "Value": value} for name, value in request.tags]


def v1_params(request: SendRequest) -> dict[str, Any]:
    """SendRawEmail's parameters; optional ones left out when unset (pure)."""
    params: dict[str, Any] = {
        "Source": request.source,
        "Destinations": list(request.destinations),
        "RawMessage": {"Data": request.raw},
    }
    if request.configuration_set:
        params["ConfigurationSetName"] = request.configuration_set
    if request.tags:
        params["Tags"] = _tags(request)
    if request.source_arn:
        params["SourceArn"] = request.source_arn
    if request.from_arn:
        params["FromArn"] = request.from_arn
    if request.return_path_arn:
        params["ReturnPathArn"] = request.return_path_arn
    return params


def v2_params(request: SendRequest) -> dict[str, Any]:
    """SESv2 SendEmail's parameters for Raw content (pure).

    v2 has one ARN, FromEmailAddressIdentityArn, which for Raw content overrides
    both the X-SES-SOURCE-ARN and X-SES-FROM-ARN headers, so source_arn (or else
    from_arn) goes there. v2 has no ReturnPathArn parameter; the
    X-SES-RETURN-PATH-ARN header does the same job in raw content (SES removes
    X-SES-* headers before delivery), so it is prepended when asked for.
    """
    raw = request.raw
    if request.return_path_arn:
        eol = b"\r\n" if b"\r\n" in raw[:2048] else b"\n"
        raw = b"X-SES-RETURN-PATH-ARN: " + request.return_path_arn.encode("ascii") + eol + raw
    params: dict[str, Any] = {
        "FromEmailAddress": request.source,
        "Destination": {"ToAddresses": list(request.destinations)},
        "Content": {"Raw": {"Data": raw}},
    }
    if request.configuration_set:
        params["ConfigurationSetName"] = request.configuration_set
    if request.tags:
        params["EmailTags"] = _tags(request)
    identity_arn = request.source_arn or request.from_arn
    if identity_arn:
        params["FromEmailAddressIdentityArn"] = identity_arn
    return params
