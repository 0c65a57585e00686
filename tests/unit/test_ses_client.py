"""BotoSes's pure parts: error classification and translation, and the API parameters it sends."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from relay.sending.ses_api import Disposition
from relay.sending.ses_client import (
    PERMANENT_CODES,
    RETRY_CODES,
    classify,
    configured_endpoint,
    kind_of,
    translate,
    v1_params,
    v2_params,
)
from tests.support.samples import RAW, request


def test_configured_endpoint_is_the_ses_setting_or_none() -> None:
    assert configured_endpoint("http://a:1") == "http://a:1"
    assert configured_endpoint(" http://a:1 ") == "http://a:1"
    assert configured_endpoint("") is None
    assert configured_endpoint("  ") is None
    assert configured_endpoint(None) is None


# --- classification (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("Throttling", 400, Disposition.RETRY),
        ("ThrottlingException", 400, Disposition.RETRY),
        ("MaxSendingRateExceeded", 400, Disposition.RETRY),
        ("TooManyRequestsException", 429, Disposition.RETRY),
        ("LimitExceededException", 400, Disposition.RETRY),
        ("ServiceUnavailable", 503, Disposition.RETRY),
        ("InternalFailure", 500, Disposition.RETRY),
        ("RequestTimeout", 408, Disposition.RETRY),
        ("AccountSendingPausedException", 400, Disposition.RETRY),
        ("ConfigurationSetSendingPausedException", 400, Disposition.RETRY),
        ("SendingPausedException", 400, Disposition.RETRY),
        ("AccountSuspendedException", 400, Disposition.RETRY),
        ("ExpiredToken", 403, Disposition.RETRY),
        ("SignatureDoesNotMatch", 403, Disposition.RETRY),
        ("AccessDenied", 403, Disposition.RETRY),
        ("MessageRejected", 400, Disposition.PERMANENT),
        ("MailFromDomainNotVerified", 400, Disposition.PERMANENT),
        ("MailFromDomainNotVerifiedException", 400, Disposition.PERMANENT),
        ("ConfigurationSetDoesNotExist", 400, Disposition.PERMANENT),
        ("ConfigurationSetDoesNotExistException", 400, Disposition.PERMANENT),
        ("NotFoundException", 404, Disposition.PERMANENT),
        ("BadRequestException", 400, Disposition.PERMANENT),
        ("InvalidParameterValue", 400, Disposition.PERMANENT),
        ("ValidationError", 400, Disposition.PERMANENT),
        ("ParamValidationError", None, Disposition.PERMANENT),
        ("SomeNewError", 400, Disposition.PERMANENT),
        ("SomeNewError", 413, Disposition.PERMANENT),
        ("SomeNewError", 429, Disposition.RETRY),
        ("SomeNewError", 500, Disposition.RETRY),
        ("SomeNewError", 504, Disposition.RETRY),
        ("SomeNewError", None, Disposition.RETRY),
        ("SomeNewError", 302, Disposition.RETRY),
        (None, 503, Disposition.RETRY),
        (None, 400, Disposition.PERMANENT),
        (None, None, Disposition.RETRY),
        ("EndpointConnectionError", None, Disposition.RETRY),
        ("ReadTimeoutError", None, Disposition.RETRY),
        ("NoCredentialsError", None, Disposition.RETRY),
    ],
)
def test_classify(code: str | None, status: int | None, expected: Disposition) -> None:
    assert classify(code, status) is expected


def test_no_code_is_both_retryable_and_permanent() -> None:
    assert not set(RETRY_CODES) & PERMANENT_CODES


@pytest.mark.parametrize(
    ("code", "status", "message", "kind"),
    [
        ("Throttling", 400, "Maximum sending rate exceeded.", "rate"),
        ("Throttling", 400, "Daily message quota exceeded.", "quota"),
        ("TooManyRequestsException", 429, "", "rate"),
        ("AccountSendingPausedException", 400, "", "paused"),
        ("InternalFailure", 500, "", "server"),
        ("Whatever", 502, "", "server"),
        ("Whatever", 429, "", "rate"),
        ("MessageRejected", 400, "", "rejected"),
        ("ConnectionClosedError", None, "", "network"),
        ("ExpiredToken", 403, "", "auth"),
    ],
)
def test_kind_of(code: str, status: int | None, message: str, kind: str) -> None:
    assert kind_of(code, status, message) == kind


def test_translate_reads_code_message_status_and_request_id() -> None:
    exc = ClientError(
        {
            "Error": {"Code": "Throttling", "Message": "Daily message quota exceeded."},
            "ResponseMetadata": {"HTTPStatusCode": 400, "RequestId": "r-1"},
        },
        "SendRawEmail",
    )
    err = translate(exc)
    assert (err.code, err.message, err.http_status) == ("Throttling", "Daily message quota exceeded.", 400)
    assert err.extra == {"kind": "quota", "request_id": "r-1"}
    bare = translate(ClientError({"Error": {}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "SendRawEmail"))
    assert (bare.code, bare.disposition) == ("HTTP503", Disposition.RETRY)
    with pytest.raises(TypeError):
        translate(RuntimeError("not botocore"))


def test_params_are_pure_and_complete() -> None:
    req = request(source_arn="arn:s", from_arn="arn:f", return_path_arn="arn:r")
    assert v1_params(req) == {
        "Source": "alice@example.com",
        "Destinations": ["bob@example.org"],
        "RawMessage": {"Data": RAW},
        "ConfigurationSetName": "tx",
        "Tags": [
            {"Name": "message-class", "Value": "transactional"},
            {"Name": "submission-id", "Value": "S-1"},
        ],
        "SourceArn": "arn:s",
        "FromArn": "arn:f",
        "ReturnPathArn": "arn:r",
    }
    v2 = v2_params(request(from_arn="arn:f"))
    assert v2["FromEmailAddressIdentityArn"] == "arn:f"
    assert v2["Destination"] == {"ToAddresses": ["bob@example.org"]}
    assert v2["EmailTags"][0] == {"Name": "message-class", "Value": "transactional"}
    assert v2["Content"] == {"Raw": {"Data": RAW}}
    assert set(v2_params(request(configuration_set=None, tags=()))) == {
        "FromEmailAddress",
        "Destination",
        "Content",
    }
