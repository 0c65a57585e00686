"""DKIM signing of mail the relay hands to SES (the keys: relay.sending.dkim).

What is signed follows SES's "Manual DKIM signing in Amazon SES"
(https://docs.aws.amazon.com/ses/latest/dg/send-email-authentication-dkim-manual.html):
never Message-ID, Date, Return-Path or Bounces-To, which SES rewrites. Only the
worker imports this module: it loads dkimpy and cryptography.
"""

from __future__ import annotations

import base64
import functools

import dkim as dkimpy
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from relay.sending.dkim import DkimError, DkimKeys, normalise_domain

#: Signed when present, in this order. Never Message-ID, Date, Return-Path or
#: Bounces-To (SES rewrites them); never internal X- headers (stripped before us).
SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "In-Reply-To",
    "References",
    "Feedback-ID",
)
NEVER_SIGNED: frozenset[str] = frozenset({"message-id", "date", "return-path", "bounces-to"})


def _line_ending(raw: bytes) -> bytes:
    head_end = raw.find(b"\n")
    return b"\r\n" if head_end > 0 and raw[head_end - 1 : head_end] == b"\r" else b"\n"


def headers_to_sign(raw: bytes) -> list[bytes]:
    """The h= list for `raw`: each SIGNED_HEADERS field once per occurrence, plus From once more.

    The extra From (oversigning) covers a From that is *not* there, so a From
    added in transit breaks the signature instead of hiding behind ours.
    """
    headers, _ = dkimpy.rfc822_parse(raw)
    present: dict[bytes, int] = {}
    for name, _value in headers:
        key = name.strip().lower()
        present[key] = present.get(key, 0) + 1
    chosen: list[bytes] = []
    for name in SIGNED_HEADERS:
        key = name.lower().encode("ascii")
        chosen.extend([key] * present.get(key, 0))
    chosen.append(b"from")
    return chosen


def load_keys(keys: DkimKeys) -> None:
    """Load every key as signing will (cryptography parses and checks it), so that a key
    DkimKeys's shape check let through but OpenSSL refuses stops the worker at start.
    The parsed keys stay cached for signing."""
    for domain, (_selector, path) in keys.describe().items():
        entry = keys.for_domain(domain)
        if entry is None:
            continue
        try:
            _load_rsa_key(entry[1])
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise DkimError(f"DKIM key for {domain}: {path} cannot be loaded: {exc}") from None


@functools.lru_cache(maxsize=64)
def _load_rsa_key(pem: bytes) -> rsa.RSAPrivateKey:
    """Parse once per key: loading checks the key, which costs more than signing with it."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("only RSA keys are supported")
    return key


class _Signer(dkimpy.DKIM):
    """dkimpy's signer with only the RSA step done by OpenSSL (via cryptography).

    dkimpy computes RSA in pure Python: two big pow() calls holding the GIL,
    about 6 ms of the 7-8 ms a signature costs on the development machine, next
    to 2.5-3 ms for the whole boto3 call. OpenSSL makes the same signature
    (RSASSA-PKCS1-v1_5 is deterministic, so the bytes are identical; the tests
    compare them) in about 0.3 ms. Header selection, canonicalisation, hashing
    and folding stay dkimpy's; this mirrors DKIM.gen_header of dkimpy 1.1 for the
    non-ARC case.
    """

    def __init__(self, message: bytes, key: rsa.RSAPrivateKey, linesep: bytes) -> None:
        super().__init__(message, linesep=linesep)
        self._rsa_key = key

    def gen_header(  # type: ignore[no-untyped-def]
        self, fields, include_headers, canon_policy, header_name, pk, standardize=False
    ):
        if standardize or self.signature_algorithm != b"rsa-sha256":
            return super().gen_header(fields, include_headers, canon_policy, header_name, pk, standardize)
        # Hash the signature header with an empty b= exactly as a verifier will see it.
        value = dkimpy.fold(b"; ".join(b"=".join(x) for x in fields), namelen=len(header_name))
        value = dkimpy.RE_BTAG.sub(b"\\1", value)
        hasher = self.hasher()
        headers = canon_policy.canonicalize_headers(self.headers)
        self.signed_headers = dkimpy.hash_headers(
            hasher, canon_policy, headers, include_headers, (header_name, b" " + value), dict(fields)
        )
        signature = self._rsa_key.sign(hasher.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        fields = [(b"b", base64.b64encode(signature)) if k == b"b" else (k, v) for k, v in fields]
        value = b"; ".join(b"=".join(x) for x in fields) + self.linesep
        return dkimpy.fold(value, namelen=len(header_name), linesep=self.linesep)


def sign(raw: bytes, domain: str, selector: str, key: bytes) -> bytes:
    """Return `raw` with a DKIM-Signature (relaxed/relaxed, rsa-sha256) prepended.

    The signature header uses the message's own line ending so the result is
    not a mix of CRLF and LF. Raises DkimError when the message has no From
    (DKIM requires signing it) or the key cannot be used.
    """
    try:
        include = headers_to_sign(raw)
    except dkimpy.MessageFormatError as exc:
        raise DkimError(f"cannot DKIM-sign for {domain}: malformed message: {exc}") from None
    if include.count(b"from") < 2:
        raise DkimError(f"cannot DKIM-sign for {domain}: the message has no From header")
    try:
        signer = _Signer(raw, _load_rsa_key(key), _line_ending(raw))
        header = signer.sign(
            selector.encode("ascii"),
            normalise_domain(domain).encode("ascii"),
            key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )
    except (dkimpy.DKIMException, ValueError, TypeError, UnicodeError) as exc:
        raise DkimError(f"cannot DKIM-sign for {domain} (selector {selector}): {exc}") from None
    return header + raw
