"""SNS message signatures: is this envelope really from Amazon SNS?

Pure apart from the certificate source (feedback/ingest/sns_certs.py, which also
holds the URL rules). Rules, each there for a reason:

* Everything cheap is checked before a certificate is looked up, so a forged or
  malformed envelope never makes us fetch anything.
* A certificate's validity is judged at the message's own `Timestamp`, not at
  the wall clock, so an archived message still verifies years later while a
  message dated outside its certificate's life does not.
* The string to sign uses canonical key names whatever spelling the envelope
  used (Lambda writes `SigningCertUrl`, `SubscribeUrl`); two spellings of one key
  with different values are refused rather than guessed between.

What a successful check returns is a `SignedMessage` holding only the signed
fields, so callers can apply exactly what was verified and nothing beside it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from feedback.ingest.sns_certs import (
    Certificates,
    Fetch,
    VerifyError,
    check_cert_url,
    check_subscribe_url,
)

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

# The signed fields, in the order SNS concatenates them (byte order of the names).
_CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: _CONFIRMATION_FIELDS,
    UNSUBSCRIBE_CONFIRMATION: _CONFIRMATION_FIELDS,
}
_OPTIONAL = frozenset({"Subject"})
_HASHES: dict[str, tuple[hashes.HashAlgorithm, str]] = {
    "1": (hashes.SHA1(), "SHA1withRSA"),  # noqa: S303 -- SNS SignatureVersion 1 is defined as SHA1withRSA
    "2": (hashes.SHA256(), "SHA256withRSA"),
}


@dataclass(frozen=True)
class SignedMessage:
    """The verified fields of an SNS envelope, under their canonical names."""

    type: str
    message_id: str
    topic_arn: str
    timestamp: datetime
    timestamp_text: str
    message: str
    signature_version: str
    cert_url: str
    subject: str | None = None
    subscribe_url: str | None = None
    token: str | None = None

    def envelope(self) -> dict[str, Any]:
        """An SNS envelope of the signed fields only, for feedback.apply (parse_body reads it)."""
        doc: dict[str, Any] = {
            "Type": self.type,
            "MessageId": self.message_id,
            "TopicArn": self.topic_arn,
            "Message": self.message,
            "Timestamp": self.timestamp_text,
            "SignatureVersion": self.signature_version,
            "SigningCertURL": self.cert_url,
        }
        if self.subject is not None:
            doc["Subject"] = self.subject
        if self.subscribe_url is not None:
            doc["SubscribeURL"] = self.subscribe_url
        if self.token is not None:
            doc["Token"] = self.token
        return doc


# --------------------------------------------------------------------------- pure parts


def get_field(envelope: Mapping[str, Any], name: str) -> Any:
    """The value of `name` under any capitalisation (Lambda: `SigningCertUrl`); None when absent.

    The exact spelling alone is not enough: a second spelling with another value
    would let what is verified differ from what a later reader picks, so that is
    refused.
    """
    wanted = name.lower()
    found = [(k, v) for k, v in envelope.items() if isinstance(k, str) and k.lower() == wanted]
    if not found:
        return None
    values = {json.dumps(v, sort_keys=True, default=str) for _, v in found}
    if len(values) > 1:
        keys = ", ".join(k for k, _ in found)
        raise VerifyError(f"ambiguous envelope: {keys} are spellings of {name} with different values")
    return found[0][1]


def _text(envelope: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = get_field(envelope, name)
    if value is None:
        if required:
            raise VerifyError(f"{name} is missing")
        return None
    if not isinstance(value, str):
        raise VerifyError(f"{name} is a JSON {type(value).__name__}, expected a string")
    return value


def string_to_sign(envelope: Mapping[str, Any]) -> bytes:
    """The bytes SNS signs: "Name\\nvalue\\n" for each signed field present, in the spec's order."""
    kind = _text(envelope, "Type")
    names = _SIGNED_FIELDS.get(kind or "")
    if names is None:
        raise VerifyError(f"Type {kind!r} is not an SNS message type ({', '.join(_SIGNED_FIELDS)})")
    out = []
    for name in names:
        value = _text(envelope, name, required=name not in _OPTIONAL)
        if value is not None:
            out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8")


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise VerifyError(f"Timestamp {text!r} is not an ISO-8601 time") from None
    if value.tzinfo is None:
        raise VerifyError(f"Timestamp {text!r} has no time zone")
    return value.astimezone(UTC)


def _signature_version(envelope: Mapping[str, Any]) -> str:
    value = get_field(envelope, "SignatureVersion")
    if value is None:
        raise VerifyError("not signed: SignatureVersion is missing")
    version = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    if version not in _HASHES:
        raise VerifyError(f"SignatureVersion {value!r} is not supported (1 or 2)")
    return version


def _signature(envelope: Mapping[str, Any]) -> bytes:
    value = get_field(envelope, "Signature")
    if value is None or value == "":
        raise VerifyError("not signed: Signature is missing")
    if not isinstance(value, str):
        raise VerifyError(f"Signature is a JSON {type(value).__name__}, expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise VerifyError("Signature is not valid base64") from None


def check_signature(cert: x509.Certificate, name: str, version: str, signature: bytes, data: bytes,
                    at: datetime) -> None:  # fmt: skip
    """The certificate must have been valid at `at` (the message's Timestamp) and made `signature`."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if not start <= at <= end:
        raise VerifyError(
            f"certificate {name} was not valid at the message's Timestamp {at.isoformat()} "
            f"(valid {start.isoformat()} to {end.isoformat()})"
        )
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise VerifyError(f"certificate {name} does not hold an RSA key")
    algorithm, label = _HASHES[version]
    try:
        key.verify(signature, data, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise VerifyError(
            f"signature does not match (SignatureVersion {version}, {label}, certificate {name})"
        ) from None


# --------------------------------------------------------------------------- the verifier


class SnsVerifier:
    """Verifies envelopes with certificates from a cert dir, an in-memory cache, then `fetch`.

    One instance serves a whole process (the HTTP endpoint, or one `feedback verify`
    run), so each certificate is read or fetched once. Thread-safe, as `Certificates` is.
    """

    def __init__(self, *, cert_dir: Path | None, fetch: Fetch | None) -> None:
        self.certificates = Certificates(cert_dir=cert_dir, fetch=fetch)

    def verify(self, envelope: Mapping[str, Any]) -> SignedMessage:
        """Return the signed fields of `envelope`, or raise VerifyError saying why not."""
        if not isinstance(envelope, Mapping):
            raise VerifyError(f"an SNS envelope is a JSON object, not a JSON {type(envelope).__name__}")
        kind = get_field(envelope, "Type")
        if kind is None:
            raise VerifyError("not an SNS message: Type is missing")
        version = _signature_version(envelope)
        signature = _signature(envelope)
        cert_url = _text(envelope, "SigningCertURL")
        assert cert_url is not None
        name = check_cert_url(cert_url)
        data = string_to_sign(envelope)  # also checks Type and the required fields
        timestamp_text = _text(envelope, "Timestamp")
        assert timestamp_text is not None
        at = _timestamp(timestamp_text)
        subscribe_url = _text(envelope, "SubscribeURL", required=False) if kind != NOTIFICATION else None
        if subscribe_url is not None:
            check_subscribe_url(subscribe_url)
        cert = self.certificates.certificate(cert_url, name)
        check_signature(cert, name, version, signature, data, at)
        return SignedMessage(
            type=kind,
            message_id=_text(envelope, "MessageId") or "",
            topic_arn=_text(envelope, "TopicArn") or "",
            timestamp=at,
            timestamp_text=timestamp_text,
            message=_text(envelope, "Message") or "",
            signature_version=version,
            cert_url=cert_url,
            subject=_text(envelope, "Subject", required=False) if kind == NOTIFICATION else None,
            subscribe_url=subscribe_url,
            token=_text(envelope, "Token", required=False) if kind != NOTIFICATION else None,
        )


def verify(envelope: Mapping[str, Any], *, cert_dir: Path | None, fetch: Fetch | None) -> SignedMessage:
    """One-off check (no cache kept between calls); raise VerifyError saying why it fails."""
    return SnsVerifier(cert_dir=cert_dir, fetch=fetch).verify(envelope)


# --------------------------------------------------------------------------- saved messages


def envelopes_in(doc: Any) -> Iterator[Any]:
    """The SNS envelopes inside a saved document: an envelope itself, an SQS record whose Body
    is one, a Lambda SNS record (`Sns`) or event (`Records`), or a list of any of these."""
    if isinstance(doc, list):
        for item in doc:
            yield from envelopes_in(item)
        return
    if not isinstance(doc, dict):
        raise VerifyError(f"a saved SNS message is a JSON object, not a JSON {type(doc).__name__}")
    if isinstance(doc.get("Records"), list):
        for record in doc["Records"]:
            yield from envelopes_in(record)
        return
    if isinstance(doc.get("Sns"), dict):
        yield doc["Sns"]
        return
    body = doc.get("Body", doc.get("body"))
    if get_field(doc, "Type") is None and isinstance(body, str):
        try:
            yield json.loads(body)
        except json.JSONDecodeError as exc:
            raise VerifyError(f"SQS record Body is not JSON ({exc})") from None
        return
    if get_field(doc, "Type") is None and ("eventType" in doc or "notificationType" in doc):
        raise VerifyError("an SES event without its SNS envelope (raw message delivery) carries no signature")
    yield doc


def _documents(text: str) -> list[Any]:
    try:
        return [json.loads(text)]
    except json.JSONDecodeError as whole_error:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            raise VerifyError(f"not JSON ({whole_error})") from None
        docs = []
        for number, line in enumerate(lines, 1):
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise VerifyError(f"line {number} is not JSON ({exc})") from None
        return docs


def check_file(path: Path, verifier: SnsVerifier) -> str | None:
    """None when every SNS message in `path` verifies, else why not (`feedback verify`).

    A file holds one JSON document or JSON Lines; several messages are numbered in
    the reason so the operator can find the bad one.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "no such file"
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    try:
        envelopes = [env for doc in _documents(text) for env in envelopes_in(doc)]
    except VerifyError as exc:
        return str(exc)
    if not envelopes:
        return "no SNS message in the file"
    for number, envelope in enumerate(envelopes, 1):
        try:
            verifier.verify(envelope)
        except VerifyError as exc:
            return f"message {number}: {exc}" if len(envelopes) > 1 else str(exc)
    return None
