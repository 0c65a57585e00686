"""The lean client's pure parts: the body botocore would serialize, the answers it reads."""

from __future__ import annotations

from urllib.parse import parse_qs

import botocore.session
import pytest
from botocore.exceptions import ParamValidationError
from botocore.serialize import create_serializer

from relay.sending.ses_client import translate, v1_params
from relay.sending.ses_lean import client_error, message_id, send_raw_body
from tests.support.samples import RAW, request

ARN = "arn:aws:ses:eu-west-2:123456789012:identity/example.com"


def botocore_fields(params: dict[str, object]) -> dict[str, list[str]]:
    """The form fields boto3's serializer makes of the same parameters (SES's service model)."""
    model = botocore.session.get_session().get_service_model("ses")
    operation = model.operation_model("SendRawEmail")
    body = create_serializer("query").serialize_to_request(params, operation)["body"]
    return {name: [str(value)] for name, value in body.items()}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"configuration_set": None, "tags": ()},
        {"source_arn": ARN, "from_arn": ARN + "/f", "return_path_arn": ARN + "/rp"},
        {"destinations": tuple(f"r{i}+x@example.org" for i in range(50)), "source": "b+x=y@example.com"},
        {"tags": (("app", "a b/c=d&e~f"), ("ünï", "çødé")), "raw": RAW + bytes(range(256)) * 9},
    ],
)
def test_the_body_is_the_one_botocore_serializes(overrides: dict[str, object]) -> None:
    sent = request(**overrides)
    body = send_raw_body(sent)
    assert parse_qs(body.decode(), keep_blank_values=True) == botocore_fields(v1_params(sent))


@pytest.mark.parametrize(
    "overrides", [{"configuration_set": 123}, {"destinations": ("a@example.org", None)}, {"tags": (("a",),)}]
)
def test_a_parameter_of_the_wrong_type_is_refused_before_sending(overrides: dict[str, object]) -> None:
    with pytest.raises(ParamValidationError) as info:
        send_raw_body(request(**overrides))
    assert translate(info.value).code == "ParamValidationError"


def test_message_id_is_read_from_the_answer() -> None:
    answer = (
        b'<SendRawEmailResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/">\n'
        b"  <SendRawEmailResult>\n    <MessageId>0100018c-abc-000000</MessageId>\n  </SendRawEmailResult>\n"
        b"  <ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata>\n</SendRawEmailResponse>\n"
    )
    assert message_id(answer) == "0100018c-abc-000000"
    assert message_id(b"<SendRawEmailResponse/>") is None


def test_an_error_answer_becomes_the_client_error_boto3_raises() -> None:
    answer = (
        b'<ErrorResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/"><Error><Type>Sender</Type>'
        b"<Code>Throttling</Code><Message>Daily message quota exceeded.</Message></Error>"
        b"<RequestId>r-2</RequestId></ErrorResponse>"
    )
    err = translate(client_error(400, {"Content-Type": "text/xml"}, answer))
    assert (err.code, err.http_status, err.message) == ("Throttling", 400, "Daily message quota exceeded.")
    assert err.extra == {"kind": "quota", "request_id": "r-2"}
