"""Signing SNS envelopes the way SNS does, with a locally made certificate.

The string to sign is written out here independently of feedback.ingest.sns_verify (field
list per message type, "Name\\nvalue\\n" each), so a mistake in the module under
test cannot be mirrored by the tests. The certificate is self-signed (no CA): the
verifier trusts a certificate because of where it comes from (a checked
sns.<region>.amazonaws.com URL, or the operator's cert dir), and tests always put
theirs in a cert dir, so nothing is ever fetched.
"""

from __future__ import annotations

import base64
import functools
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

REGION = "eu-west-1"
TOPIC = f"arn:aws:sns:{REGION}:123456789012:ses-feedback"
OTHER_TOPIC = f"arn:aws:sns:{REGION}:123456789012:someone-elses-topic"
CERT_NAME = "SimpleNotificationService-0123456789abcdef0123456789abcdef.pem"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/{CERT_NAME}"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ses"

_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


@functools.cache
def rsa_key(n: int = 0) -> rsa.RSAPrivateKey:
    """RSA keys are slow to make; each test session makes a few and reuses them."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sns_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Signer:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    cert_url: str = CERT_URL

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def file_name(self) -> str:
        return self.cert_url.rsplit("/", 1)[-1]

    def install(self, cert_dir: Path, name: str | None = None) -> Path:
        """Put the certificate in `cert_dir` under the URL's last path part."""
        cert_dir.mkdir(parents=True, exist_ok=True)
        path = cert_dir / (name or self.file_name)
        path.write_bytes(self.pem)
        return path

    def sign(self, envelope: dict[str, Any], version: str = "1", *, cert_url: str | None = None,
             url_key: str = "SigningCertURL") -> dict[str, Any]:  # fmt: skip
        """A copy of `envelope` with SignatureVersion, SigningCertURL and Signature set."""
        doc = dict(envelope)
        doc["SignatureVersion"] = version
        doc[url_key] = self.cert_url if cert_url is None else cert_url
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(bytes_to_sign(doc), padding.PKCS1v15(), algorithm)
        doc["Signature"] = base64.b64encode(signature).decode("ascii")
        return doc


def bytes_to_sign(doc: dict[str, Any]) -> bytes:
    fields = _NOTIFICATION_FIELDS if doc["Type"] == "Notification" else _CONFIRMATION_FIELDS
    out = ""
    for name in fields:
        value = doc.get(name)
        if value is not None:
            out += f"{name}\n{value}\n"
    return out.encode("utf-8")


def make_signer(
    *,
    key: int = 0,
    not_before: datetime = datetime(2020, 1, 1, tzinfo=UTC),
    not_after: datetime = datetime(2035, 1, 1, tzinfo=UTC),
    cert_url: str = CERT_URL,
) -> Signer:
    private = rsa_key(key)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(private, hashes.SHA256())
    )
    return Signer(private, cert, cert_url)


def ses_bounce(recipient: str = "nomailbox@example.com", message_id: str | None = None) -> dict[str, Any]:
    """The SES bounce inside tests/fixtures/ses/sns_notification_bounce.json, for `recipient`."""
    envelope = json.loads((FIXTURES / "sns_notification_bounce.json").read_text(encoding="utf-8"))
    bounce = json.loads(envelope["Message"])
    bounce["bounce"]["bouncedRecipients"][0]["emailAddress"] = recipient
    bounce["mail"]["destination"] = [recipient]
    if message_id:
        bounce["mail"]["messageId"] = message_id
    return bounce


def notification(
    message: dict[str, Any] | str | None = None,
    *,
    topic: str = TOPIC,
    message_id: str | None = None,
    at: datetime | None = None,
    subject: str | None = None,
) -> dict[str, Any]:
    """An unsigned SNS Notification envelope carrying `message` (default: an SES bounce)."""
    payload = ses_bounce() if message is None else message
    doc: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": payload if isinstance(payload, str) else json.dumps(payload),
        "Timestamp": sns_time(at or datetime(2024, 3, 12, 7, 30, 1, 512000, tzinfo=UTC)),
        "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic}:x",
    }
    if subject is not None:
        doc["Subject"] = subject
    return doc


def confirmation(
    kind: str = "SubscriptionConfirmation",
    *,
    topic: str = TOPIC,
    subscribe_url: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    token = "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3"
    return {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "Token": token,
        "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, "
        "visit the SubscribeURL included in this message.",
        "SubscribeURL": subscribe_url
        or f"https://sns.{REGION}.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token={token}",
        "Timestamp": sns_time(at or datetime.now(UTC) - timedelta(seconds=1)),
    }
