"""SNS signature checks (feedback.ingest.sns_verify, sns_certs): what verifies, and why the rest does not.

Envelopes are signed here with a locally made certificate kept in a tmp cert dir,
named as the SigningCertURL's last path part; nothing is ever fetched (a `fetch`
passed in is a local function handing back the same PEM, to count calls).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from feedback.bodies import BodyKind, parse_body
from feedback.ingest.sns_certs import (
    CertificateUnavailable,
    VerifyError,
    check_cert_url,
    check_subscribe_url,
)
from feedback.ingest.sns_verify import SnsVerifier, check_file, verify
from tests.support.sns_signing import (
    CERT_NAME,
    CERT_URL,
    TOPIC,
    Signer,
    confirmation,
    make_signer,
    notification,
)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer()


@pytest.fixture
def cert_dir(tmp_path: Path, signer: Signer) -> Path:
    signer.install(tmp_path / "certs")
    return tmp_path / "certs"


def check(doc: dict[str, Any], cert_dir: Path | None) -> Any:
    return verify(doc, cert_dir=cert_dir, fetch=None)


def refused(doc: dict[str, Any], cert_dir: Path | None) -> str:
    with pytest.raises(VerifyError) as info:
        check(doc, cert_dir)
    return str(info.value)


# --------------------------------------------------------------------------- what verifies


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_notification_verifies_with_both_signature_versions(
    signer: Signer, cert_dir: Path, version: str
) -> None:
    doc = signer.sign(notification(), version)
    signed = check(doc, cert_dir)
    assert signed.type == "Notification"
    assert signed.topic_arn == TOPIC
    assert signed.message_id == doc["MessageId"]
    assert signed.signature_version == version
    assert signed.timestamp == datetime(2024, 3, 12, 7, 30, 1, 512000, tzinfo=UTC)
    # What is handed on holds the signed fields only, and still parses as the same SES bounce.
    parsed = parse_body(json.dumps(signed.envelope()))
    assert parsed.kind is BodyKind.EVENTS
    assert [e.recipient for e in parsed.events] == ["nomailbox@example.com"]
    assert "UnsubscribeURL" not in signed.envelope()


@pytest.mark.parametrize("version", ["1", "2"])
def test_subject_is_signed_when_present(signer: Signer, cert_dir: Path, version: str) -> None:
    doc = signer.sign(notification(subject="Amazon SES Email Event Notification"), version)
    assert check(doc, cert_dir).subject == "Amazon SES Email Event Notification"
    doc["Subject"] = "Amazon SES Email Event Notification!"
    assert "signature does not match" in refused(doc, cert_dir)


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
@pytest.mark.parametrize("version", ["1", "2"])
def test_confirmations_verify_with_their_own_string_to_sign(
    signer: Signer, cert_dir: Path, kind: str, version: str
) -> None:
    doc = signer.sign(confirmation(kind), version)
    signed = check(doc, cert_dir)
    assert signed.type == kind
    assert signed.subscribe_url == doc["SubscribeURL"]
    assert signed.token == doc["Token"]
    doc["Token"] = doc["Token"][:-1] + "0"
    assert "signature does not match" in refused(doc, cert_dir)


def test_lambda_spellings_verify(signer: Signer, cert_dir: Path) -> None:
    """Lambda's SNS records say SigningCertUrl/UnsubscribeUrl and Subject: null."""
    doc = notification()
    doc["UnsubscribeUrl"] = doc.pop("UnsubscribeURL")
    doc["Subject"] = None
    doc["MessageAttributes"] = {}
    signed = signer.sign(doc, "2", url_key="SigningCertUrl")
    assert check(signed, cert_dir).cert_url == CERT_URL


def test_two_spellings_of_one_key_with_different_values_are_refused(signer: Signer, cert_dir: Path) -> None:
    doc = signer.sign(notification())
    doc["SigningCertUrl"] = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-other.pem"
    assert "ambiguous envelope" in refused(doc, cert_dir)
    doc = signer.sign(notification())
    doc["message"] = "{}"
    assert "ambiguous envelope: Message, message" in refused(doc, cert_dir)


def test_a_china_region_certificate_url_is_accepted(signer: Signer, tmp_path: Path) -> None:
    url = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-3242f31f6b5a1fe9.pem"
    assert check_cert_url(url) == "SimpleNotificationService-3242f31f6b5a1fe9.pem"
    china = make_signer(cert_url=url)
    china.install(tmp_path)
    assert (
        check(china.sign(notification(topic="arn:aws-cn:sns:cn-north-1:1:t")), tmp_path).type
        == "Notification"
    )


# --------------------------------------------------------------------------- forged or tampered


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("name", ["Message", "MessageId", "Timestamp", "TopicArn"])
def test_one_changed_byte_in_any_signed_field_is_refused(
    signer: Signer, cert_dir: Path, version: str, name: str
) -> None:
    doc = signer.sign(notification(), version)
    value = doc[name]
    doc[name] = value[:10] + chr(ord(value[10]) ^ 1) + value[11:]
    assert refused(doc, cert_dir) == (
        f"signature does not match (SignatureVersion {version}, "
        f"{'SHA1withRSA' if version == '1' else 'SHA256withRSA'}, certificate {CERT_NAME})"
    )


def test_a_signature_by_another_key_is_refused(cert_dir: Path) -> None:
    impostor = make_signer(key=1)  # same certificate URL, different key
    assert "signature does not match" in refused(impostor.sign(notification()), cert_dir)


def test_the_signature_of_one_version_does_not_pass_as_the_other(signer: Signer, cert_dir: Path) -> None:
    doc = signer.sign(notification(), "1")
    doc["SignatureVersion"] = "2"
    assert "signature does not match (SignatureVersion 2" in refused(doc, cert_dir)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: d.pop("Signature"), "not signed: Signature is missing"),
        (lambda d: d.update(Signature=""), "not signed: Signature is missing"),
        (lambda d: d.pop("SignatureVersion"), "not signed: SignatureVersion is missing"),
        (lambda d: d.update(SignatureVersion="3"), "SignatureVersion '3' is not supported (1 or 2)"),
        (lambda d: d.update(Signature="not base64!"), "Signature is not valid base64"),
        (lambda d: d.pop("SigningCertURL"), "SigningCertURL is missing"),
        (lambda d: d.pop("Timestamp"), "Timestamp is missing"),
        (lambda d: d.update(Timestamp="yesterday"), "Timestamp 'yesterday' is not an ISO-8601 time"),
        (lambda d: d.pop("Type"), "not an SNS message: Type is missing"),
        (lambda d: d.update(Type="Surprise"), "Type 'Surprise' is not an SNS message type"),
        (lambda d: d.update(Message=42), "Message is a JSON int, expected a string"),
        (lambda d: d.pop("MessageId"), "MessageId is missing"),
    ],
)
def test_unsigned_and_malformed_envelopes_say_why(
    signer: Signer, cert_dir: Path, change: Any, why: str
) -> None:
    doc = signer.sign(notification())
    change(doc)
    assert refused(doc, cert_dir).startswith(why)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://sns.eu-west-1.amazonaws.com.evil.com/" + CERT_NAME,
         "host 'sns.eu-west-1.amazonaws.com.evil.com' is not sns.<region>.amazonaws.com"),
        ("http://sns.eu-west-1.amazonaws.com/" + CERT_NAME, "is not https"),
        ("https://evil-bucket.s3.eu-west-1.amazonaws.com/" + CERT_NAME, "is not sns.<region>.amazonaws.com"),
        ("https://sns.eu-west-1.amazonaws.com.s3.amazonaws.com/" + CERT_NAME,
         "is not sns.<region>.amazonaws.com"),
        ("https://amazonaws.com/" + CERT_NAME, "is not sns.<region>.amazonaws.com"),
        ("https://sns.eu-west-1.amazonaws.com@evil.com/" + CERT_NAME, "carries userinfo"),
        ("https://evil.com@sns.eu-west-1.amazonaws.com/" + CERT_NAME, "carries userinfo"),
        ("https://sns.eu-west-1.amazonaws.com:8443/" + CERT_NAME, "names a port"),
        ("https://sns.eu-west-1.amazonaws.com:443/" + CERT_NAME, "names a port"),
        ("https://sns.eu-west-1.amazonaws.com./" + CERT_NAME, "is not sns.<region>.amazonaws.com"),
        ("https://SNS.eu-west-1.amazonaws.com/" + CERT_NAME, "is not sns.<region>.amazonaws.com"),
        ("https://sns.eu-west-1.amazonaws.com/bucket/" + CERT_NAME, "is not of the form"),
        ("https://sns.eu-west-1.amazonaws.com/../" + CERT_NAME, "is not of the form"),
        ("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.txt", "is not of the form"),
        ("https://sns.eu-west-1.amazonaws.com/" + CERT_NAME + "?x=1", "is not of the form"),
        ("https://sns.eu-west-1.amazonaws.com/" + CERT_NAME + "#frag", "is not of the form"),
        ("https://sns.eu-west-1.amazonaws.com\\@evil.com/" + CERT_NAME, "backslashes"),
        ("https://sns.eu-west-1.amazon\naws.com/" + CERT_NAME, "control characters"),
        (" https://sns.eu-west-1.amazonaws.com/" + CERT_NAME, "whitespace"),
        ("https://sns.cn-north-1.amazonaws.com/" + CERT_NAME, "cn-north-1 is served from amazonaws.com.cn"),
        ("https://sns.eu-west-1.amazonaws.com.cn/" + CERT_NAME, "eu-west-1 is served from amazonaws.com"),
        ("", "SigningCertURL is empty"),
    ],
)  # fmt: skip
def test_certificate_urls_off_sns_hosts_are_refused_even_with_a_valid_signature(
    signer: Signer, tmp_path: Path, url: str, why: str
) -> None:
    """The PEM sits in the cert dir under the URL's name, so only the URL check can refuse."""
    signer.install(tmp_path, CERT_NAME)
    fetched: list[str] = []
    doc = signer.sign(notification(), cert_url=url)
    with pytest.raises(VerifyError) as info:
        verify(doc, cert_dir=tmp_path, fetch=lambda u: fetched.append(u) or signer.pem)
    assert why in str(info.value)
    assert not isinstance(info.value, CertificateUnavailable)
    assert fetched == []


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.eu-west-1.amazonaws.com.evil.com/?Action=ConfirmSubscription",
        "http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
        "https://127.0.0.1/?Action=ConfirmSubscription",
        "https://sns.eu-west-1.amazonaws.com:8080/?Action=ConfirmSubscription",
        "https://sns.eu-west-1.amazonaws.com@127.0.0.1/?Action=ConfirmSubscription",
        "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription#@evil.com",
    ],
)
def test_a_signed_confirmation_with_a_subscribe_url_off_sns_is_refused(
    signer: Signer, cert_dir: Path, url: str
) -> None:
    doc = signer.sign(confirmation(subscribe_url=url), "2")
    assert "SubscribeURL" in refused(doc, cert_dir)
    with pytest.raises(VerifyError):
        check_subscribe_url(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://sns.cn-north-1.amazonaws.com/?Action=A", "cn-north-1 is served from amazonaws.com.cn"),
        ("https://sns.eu-west-1.amazonaws.com.cn/?Action=A", "eu-west-1 is served from amazonaws.com"),
        ("https://sns.eu-west-1.amazonaws.com/x?Action=A", "is not of the form https://sns."),
    ],
)
def test_a_subscribe_url_in_the_wrong_partition_or_form_is_refused_saying_why(url: str, why: str) -> None:
    with pytest.raises(VerifyError) as info:
        check_subscribe_url(url)
    assert why in str(info.value)
    assert str(info.value).startswith("SubscribeURL ")


def test_a_subscribe_url_of_a_china_region_is_kept_as_given() -> None:
    url = "https://sns.cn-north-1.amazonaws.com.cn/?Action=ConfirmSubscription&Token=ab12"
    assert check_subscribe_url(url) == url


# --------------------------------------------------------------------------- certificate validity and source


def test_a_certificate_expired_at_the_message_timestamp_is_refused(tmp_path: Path) -> None:
    old = make_signer(not_before=datetime(2019, 1, 1, tzinfo=UTC), not_after=datetime(2021, 1, 1, tzinfo=UTC))
    old.install(tmp_path)
    late = old.sign(notification(at=datetime(2024, 3, 12, tzinfo=UTC)))
    why = refused(late, tmp_path)
    assert why.startswith(f"certificate {CERT_NAME} was not valid at the message's Timestamp 2024-03-12")
    early = old.sign(notification(at=datetime(2018, 12, 31, 23, 59, tzinfo=UTC)))
    assert "was not valid at the message's Timestamp 2018-12-31" in refused(early, tmp_path)


def test_an_archived_message_verifies_with_a_certificate_long_expired_now(tmp_path: Path) -> None:
    old = make_signer(not_before=datetime(2019, 1, 1, tzinfo=UTC), not_after=datetime(2021, 1, 1, tzinfo=UTC))
    old.install(tmp_path)
    archived = old.sign(notification(at=datetime(2020, 6, 1, 12, 0, tzinfo=UTC)), "2")
    assert check(archived, tmp_path).timestamp == datetime(2020, 6, 1, 12, 0, tzinfo=UTC)


def test_no_certificate_in_the_dir_and_no_fetch_is_unavailable_not_forged(
    signer: Signer, tmp_path: Path
) -> None:
    doc = signer.sign(notification())
    with pytest.raises(
        CertificateUnavailable, match=f"certificate {CERT_NAME} is not in {tmp_path} and fetching is off"
    ):
        check(doc, tmp_path)
    with pytest.raises(CertificateUnavailable, match="no certificate directory"):
        check(doc, None)


def test_the_cert_dir_comes_before_any_fetch_and_certificates_are_cached(
    signer: Signer, tmp_path: Path
) -> None:
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return signer.pem

    in_dir = SnsVerifier(cert_dir=signer.install(tmp_path / "certs").parent, fetch=fetch)
    in_dir.verify(signer.sign(notification()))
    assert fetched == []

    verifier = SnsVerifier(cert_dir=tmp_path / "empty", fetch=fetch)
    for version in ("1", "2", "1"):
        verifier.verify(signer.sign(notification(), version))
    assert fetched == [CERT_URL]  # fetched once, then served from memory


def test_a_failing_fetch_is_unavailable_and_a_fetched_non_pem_is_refused(
    signer: Signer, tmp_path: Path
) -> None:
    doc = signer.sign(notification())

    def down(url: str) -> bytes:
        raise OSError("network is unreachable")

    with pytest.raises(CertificateUnavailable, match=r"cannot fetch .*network is unreachable"):
        verify(doc, cert_dir=None, fetch=down)
    with pytest.raises(VerifyError, match="is not a PEM certificate") as info:
        verify(doc, cert_dir=None, fetch=lambda url: b"<html>hello</html>")
    assert not isinstance(info.value, CertificateUnavailable)


def test_a_cert_dir_file_that_is_not_a_certificate_is_refused(signer: Signer, tmp_path: Path) -> None:
    (tmp_path / CERT_NAME).write_text("-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")
    assert "is not a PEM certificate" in refused(signer.sign(notification()), tmp_path)


def test_a_certificate_without_an_rsa_key_is_refused(signer: Signer, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2035, 1, 1, tzinfo=UTC)).sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / CERT_NAME).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert (
        refused(signer.sign(notification()), tmp_path) == f"certificate {CERT_NAME} does not hold an RSA key"
    )


# --------------------------------------------------------------------------- saved files (`feedback verify`)


def test_check_file_reads_envelopes_sqs_records_lambda_events_and_json_lines(
    signer: Signer, cert_dir: Path, tmp_path: Path
) -> None:
    verifier = SnsVerifier(cert_dir=cert_dir, fetch=None)
    one = signer.sign(notification(), "1")
    two = signer.sign(notification(), "2")
    lambda_record = dict(two)
    lambda_record["SigningCertUrl"] = lambda_record.pop("SigningCertURL")
    files = {
        "envelope.json": json.dumps(one, indent=2),
        "sqs.json": json.dumps({"MessageId": "q", "ReceiptHandle": "r", "Body": json.dumps(two)}),
        "lambda.json": json.dumps({"Records": [{"EventSource": "aws:sns", "Sns": lambda_record}]}),
        "lines.jsonl": json.dumps(one) + "\n" + json.dumps(two) + "\n",
        "list.json": json.dumps([one, two]),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        assert check_file(tmp_path / name, verifier) is None, name

    tampered = dict(two, Message=two["Message"].replace("nomailbox", "nomailbot"))
    (tmp_path / "bad.jsonl").write_text(json.dumps(one) + "\n" + json.dumps(tampered) + "\n")
    assert check_file(tmp_path / "bad.jsonl", verifier) == (
        f"message 2: signature does not match (SignatureVersion 2, SHA256withRSA, certificate {CERT_NAME})"
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json at all", "not JSON"),
        ("[]", "no SNS message in the file"),
        ("42", "a saved SNS message is a JSON object, not a JSON int"),
        ('{"notificationType": "Bounce", "mail": {}}', "raw message delivery"),
        ('{"Body": "{nope"}', "SQS record Body is not JSON"),
    ],
)
def test_check_file_says_why_a_file_holds_no_verifiable_message(
    tmp_path: Path, cert_dir: Path, text: str, why: str
) -> None:
    (tmp_path / "saved.json").write_text(text)
    assert why in (check_file(tmp_path / "saved.json", SnsVerifier(cert_dir=cert_dir, fetch=None)) or "")


def test_check_file_reports_an_unreadable_file(tmp_path: Path) -> None:
    verifier = SnsVerifier(cert_dir=None, fetch=None)
    assert check_file(tmp_path / "missing.json", verifier) == "no such file"
    (tmp_path / "latin1.json").write_bytes(b"\xff\xfe{}")
    assert check_file(tmp_path / "latin1.json", verifier) == "not UTF-8 text"
