"""SNS message signatures: is this envelope really from Amazon SNS?

Pure apart from the certificate source, which is injected: a directory of PEM
files (for hosts without outbound access) and an optional fetcher (production
only; tests never reach the network). Rules, each there for a reason:

* The certificate URL is matched by one exact pattern, never by a suffix test:
  `https://sns.<region>.amazonaws.com/<name>.pem` (`.amazonaws.com.cn` for the
  China regions). Anyone can host files under some other `*.amazonaws.com` name
  (an S3 bucket), which is how django-ses's suffix check was bypassed
  (CVE-2023-33121 style); a userinfo, port, query, second path segment or odd
  character is refused before any parser can disagree with the fetcher about
  which host is meant.
* Everything cheap is checked before a certificate is looked up, so a forged or
  malformed envelope never makes us fetch anything.
* A certificate's validity is judged at the message's own `Timestamp`, not at
  the wall clock, so an archived message still verifies years later while a
  message dated outside its certificate's life does not.
* The string to sign uses canonical key names whatever spelling the envelope
  used (Lambda writes `SigningCertUrl`, `SubscribeUrl`); two spellings of one key
  with different values are refused rather than guessed between.
* "Could not get the certificate" (`CertificateUnavailable`) is distinct from
  "not authentic": the HTTP endpoint answers the first with 503 so that SNS,
  which retries only 5xx, tries again once the operator has fixed the cert dir
  or the network, and answers the second with 403.

What a successful check returns is a `SignedMessage` holding only the signed
fields, so callers can apply exactly what was verified and nothing beside it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "CertificateUnavailable",
    "Fetch",
    "SignedMessage",
    "SnsVerifier",
    "VerifyError",
    "check_cert_url",
    "check_file",
    "check_subscribe_url",
    "confirm_https",
    "envelopes_in",
    "fetch_https",
    "get_field",
    "string_to_sign",
    "verify",
]

Fetch = Callable[[str], bytes]

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

_REGION = r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}"
_SNS_HOST = re.compile(rf"sns\.(?P<region>{_REGION})\.amazonaws\.com(?P<cn>\.cn)?")
_CERT_URL = re.compile(
    rf"https://(?P<host>{_SNS_HOST.pattern})/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{{0,200}}\.pem)"
)
# Query characters SNS uses in SubscribeURL (an ARN and a hex token); no '#', '@', '\\' or spaces.
_SUBSCRIBE_URL = re.compile(rf"https://(?P<host>{_SNS_HOST.pattern})/(?:\?[A-Za-z0-9._~:/?&=%+-]*)?")

MAX_CERT_BYTES = 64 * 1024
CERT_CACHE_SIZE = 64
HTTP_TIMEOUT_SECONDS = 10.0


class VerifyError(ValueError):
    """The envelope is not an authentic SNS message; the text says exactly why."""


class CertificateUnavailable(VerifyError):
    """The signing certificate could not be obtained (not in the cert dir, fetch failed):
    the message may well be authentic, so a receiver should ask SNS to retry."""


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


def _describe_url_problem(url: str, what: str, form: str) -> str:
    """Why `url` failed the exact pattern, in words an operator can act on."""
    from urllib.parse import urlsplit

    if not url:
        return f"{what} is empty"
    if any(c.isspace() or ord(c) < 32 or c == "\\" for c in url):
        return f"{what} {url!r} contains whitespace, control characters or backslashes"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{what} {url!r} is not a URL ({exc})"
    if parts.scheme != "https":
        return f"{what} {url!r} is not https"
    if "@" in parts.netloc:
        return f"{what} {url!r} carries userinfo"
    if port is not None or parts.netloc.endswith(":"):
        return f"{what} {url!r} names a port"
    if not _SNS_HOST.fullmatch(parts.netloc):
        return f"{what} host {parts.netloc!r} is not sns.<region>.amazonaws.com"
    return f"{what} {url!r} is not of the form {form}"


def _check_partition(match: re.Match[str], url: str, what: str) -> None:
    china = match.group("region").startswith("cn-")
    if china != bool(match.group("cn")):
        domain = "amazonaws.com.cn" if china else "amazonaws.com"
        raise VerifyError(f"{what} {url!r}: region {match.group('region')} is served from {domain}")


def check_cert_url(url: str) -> str:
    """Refuse any SigningCertURL but https://sns.<region>.amazonaws.com/<name>.pem; return <name>."""
    match = _CERT_URL.fullmatch(url)
    if match is None:
        raise VerifyError(
            _describe_url_problem(url, "SigningCertURL", "https://sns.<region>.amazonaws.com/<name>.pem")
        )
    _check_partition(match, url, "SigningCertURL")
    return match.group("name")


def check_subscribe_url(url: str) -> str:
    """Refuse a SubscribeURL anywhere but https://sns.<region>.amazonaws.com/ (no SSRF via SNS)."""
    match = _SUBSCRIBE_URL.fullmatch(url)
    if match is None:
        raise VerifyError(
            _describe_url_problem(url, "SubscribeURL", "https://sns.<region>.amazonaws.com/?Action=...")
        )
    _check_partition(match, url, "SubscribeURL")
    return url


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


def load_certificate(pem: bytes, where: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise VerifyError(f"{where} is not a PEM certificate ({exc})") from None


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
    run), so each certificate is read or fetched once. Thread-safe: the endpoint
    verifies in worker threads because a fetch blocks.
    """

    def __init__(self, *, cert_dir: Path | None, fetch: Fetch | None) -> None:
        self.cert_dir = cert_dir
        self.fetch = fetch
        self._cache: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

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
        cert = self.certificate(cert_url, name)
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

    def certificate(self, url: str, name: str) -> x509.Certificate:
        """The certificate for a trusted `url`: cache, then `<cert_dir>/<name>`, then a fetch."""
        with self._lock:
            cached = self._cache.get(url)
        if cached is not None:
            return cached
        cert = self._from_dir(name)
        if cert is None:
            cert = self._fetched(url, name)
        with self._lock:
            if len(self._cache) >= CERT_CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[url] = cert
        return cert

    def _from_dir(self, name: str) -> x509.Certificate | None:
        if self.cert_dir is None:
            return None
        path = self.cert_dir / name
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CertificateUnavailable(f"cannot read certificate {path}: {exc.strerror or exc}") from None
        return load_certificate(pem, str(path))

    def _fetched(self, url: str, name: str) -> x509.Certificate:
        if self.fetch is None:
            where = f"in {self.cert_dir}" if self.cert_dir is not None else "(no certificate directory)"
            raise CertificateUnavailable(f"certificate {name} is not {where} and fetching is off")
        try:
            pem = self.fetch(url)
        except VerifyError:
            raise
        except Exception as exc:
            raise CertificateUnavailable(f"cannot fetch {url}: {exc}") from None
        return load_certificate(pem, url)


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


# --------------------------------------------------------------------------- production network


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead anywhere; SNS never redirects these URLs, so neither do we."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise urllib.error.HTTPError(req.full_url, code, f"refusing redirect to {newurl}", headers, fp)


def _https_get(url: str, limit: int) -> bytes:
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=ssl.create_default_context()), _NoRedirect()
    )
    request = urllib.request.Request(url, headers={"User-Agent": "ses-relay"})  # noqa: S310 -- https only, host checked
    with opener.open(request, timeout=HTTP_TIMEOUT_SECONDS) as reply:
        data: bytes = reply.read(limit + 1)
    if len(data) > limit:
        raise VerifyError(f"{url} answered more than {limit} bytes")
    return data


def fetch_https(url: str) -> bytes:
    """Production certificate fetcher: TLS-verified GET of a checked SigningCertURL, no redirects."""
    check_cert_url(url)
    try:
        return _https_get(url, MAX_CERT_BYTES)
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404, 410):
            # SNS's host says there is no such certificate: nothing to retry.
            raise VerifyError(f"no certificate at {url} (HTTP {exc.code})") from None
        raise CertificateUnavailable(f"cannot fetch {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CertificateUnavailable(f"cannot fetch {url}: {getattr(exc, 'reason', exc)}") from None


def confirm_https(url: str) -> None:
    """Production subscription confirmation: GET the (checked) SubscribeURL over verified TLS."""
    check_subscribe_url(url)
    _https_get(url, MAX_CERT_BYTES)
