"""DKIM keys and signing for mail the relay hands to SES.

SES adds its own d=amazonses.com signature; ours makes the mail align with the
sender's domain for DMARC. Keys live in `<data_dir>/dkim/<domain>.<selector>.pem`
(made by `ses-relay dkim keygen`) or wherever the config's [dkim."domain"] says.

What we sign follows SES's "Manual DKIM signing in Amazon SES"
(https://docs.aws.amazon.com/ses/latest/dg/send-email-authentication-dkim-manual.html):
"Don't sign the following fields: Message-ID, Date, Return-Path, Bounces-To",
because SES rewrites them (it replaces Message-ID and Date with its own, see
https://docs.aws.amazon.com/ses/latest/dg/header-fields.html) and a signature
over them would break in transit. The same page asks for keys of at least 1024
bits; we make 2048.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dkim as dkimpy
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

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

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
MIN_BITS = 1024


class DkimError(Exception):
    """A key that cannot be made, found, read or used; the message names domain and path."""


@dataclass(frozen=True)
class KeyInfo:
    """A key on disk and the DNS record that publishes it."""

    domain: str
    selector: str
    path: Path
    record_name: str  # "<selector>._domainkey.<domain>"
    record_value: str  # "v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>"

    def dns_strings(self) -> list[str]:
        """The TXT value as the <=255-byte character-strings one TXT record is made of."""
        return split_txt(self.record_value)

    def zone_line(self) -> str:
        """A BIND zone-file line, for pasting."""
        parts = " ".join(f'"{s}"' for s in self.dns_strings())
        return f"{self.record_name}. IN TXT ( {parts} )"


def split_txt(value: str, size: int = 255) -> list[str]:
    """Split a TXT value into DNS character-strings (each at most `size` bytes, 255 max)."""
    if not 1 <= size <= 255:
        raise ValueError("a DNS character-string holds 1 to 255 bytes")
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


def normalise_domain(domain: str) -> str:
    """Lower-case, IDNA-encoded, no trailing dot; ValueError for anything not a host name."""
    text = domain.strip().rstrip(".").lower()
    try:
        text = text.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"invalid domain {domain!r}: {exc}") from None
    labels = text.split(".")
    if len(labels) < 2 or len(text) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"invalid domain {domain!r}")
    return text


def check_selector(selector: str) -> str:
    """Selectors here are one DNS label: the key file is named <domain>.<selector>.pem."""
    text = selector.strip().lower()
    if not _SELECTOR.match(text):
        raise ValueError(f"invalid DKIM selector {selector!r}: use letters, digits, '-' or '_' (one label)")
    return text


def key_path(data_dir: Path, domain: str, selector: str) -> Path:
    return Path(data_dir) / "dkim" / f"{domain}.{selector}.pem"


def public_record(private_pem: bytes) -> str:
    """The DKIM TXT value for a PEM private key: p= is the DER SubjectPublicKeyInfo, base64."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("only RSA keys are supported")
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def keygen(data_dir: Path, domain: str, selector: str, *, bits: int = 2048, force: bool = False) -> KeyInfo:
    """Make an RSA key in <data_dir>/dkim/<domain>.<selector>.pem (mode 0600).

    Refuses to replace an existing key unless `force`: the old key's public half
    may be in DNS and signing with a new one would fail every verification until
    DNS is changed. The key is written in PKCS#1 PEM ("BEGIN RSA PRIVATE KEY"),
    which dkimpy, OpenDKIM and rspamd all read.
    """
    domain = normalise_domain(domain)
    selector = check_selector(selector)
    if bits < MIN_BITS:
        raise ValueError(f"DKIM keys must have at least {MIN_BITS} bits (SES's guidance), got {bits}")
    path = key_path(data_dir, domain, selector)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() and not force:
        raise FileExistsError(f"DKIM key for {domain} selector {selector} already exists: {path}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    _write_private(path, pem, replace=force)
    return KeyInfo(
        domain=domain,
        selector=selector,
        path=path,
        record_name=f"{selector}._domainkey.{domain}",
        record_value=public_record(pem),
    )


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Create the file 0600 from the start (never world-readable, not even briefly)."""
    if not replace:
        # O_EXCL: if another keygen raced us, fail rather than clobber its key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def key_info(path: Path, domain: str, selector: str) -> KeyInfo:
    """KeyInfo for an existing key file (to print its DNS record again)."""
    domain, selector = normalise_domain(domain), check_selector(selector)
    return KeyInfo(
        domain=domain,
        selector=selector,
        path=Path(path),
        record_name=f"{selector}._domainkey.{domain}",
        record_value=public_record(Path(path).read_bytes()),
    )


class DkimKeys:
    """Which key signs mail from which domain.

    Built from the config's {domain: (selector, key_file)} plus the keys found
    as <data_dir>/dkim/<domain>.<selector>.pem; an explicit config entry wins
    over the files for its domain. Configured files are checked for readability
    here, so a typo stops the relay at start rather than at the first message;
    contents are read on first use and cached (thread-safe: workers share this).
    Two files for one unconfigured domain (a key rotation in progress) are an
    error, since picking either could sign with a key DNS does not have yet;
    configure the selector to choose.
    """

    def __init__(
        self,
        configured: Mapping[str, tuple[str, Path | str | None]] | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self._paths: dict[str, tuple[str, Path]] = {}
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()
        found = self._scan(data_dir) if data_dir is not None else {}
        for domain, candidates in found.items():
            if len(candidates) == 1:
                self._paths[domain] = candidates[0]
        for raw_domain, (raw_selector, key_file) in (configured or {}).items():
            try:
                domain, selector = normalise_domain(raw_domain), check_selector(raw_selector)
            except ValueError as exc:
                raise DkimError(f"dkim.{raw_domain}: {exc}") from None
            if key_file in (None, ""):
                if data_dir is None:
                    raise DkimError(f"dkim.{raw_domain}: no key_file and no data directory to look in")
                path = key_path(data_dir, domain, selector)
            else:
                path = Path(key_file)
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise DkimError(
                    f"dkim.{raw_domain}: key file {path} is not readable: {exc.strerror or exc}"
                ) from None
            self._paths[domain] = (selector, path)
        ambiguous = {d: c for d, c in found.items() if len(c) > 1 and d not in self._paths}
        if ambiguous:
            domain, candidates = sorted(ambiguous.items())[0]
            names = ", ".join(str(path) for _, path in candidates)
            raise DkimError(
                f"several DKIM keys for {domain} ({names}); choose one with "
                f'[dkim."{domain}"] selector = "..."'
            )

    @staticmethod
    def _scan(data_dir: Path) -> dict[str, list[tuple[str, Path]]]:
        found: dict[str, list[tuple[str, Path]]] = {}
        directory = Path(data_dir) / "dkim"
        if not directory.is_dir():
            return found
        for path in sorted(directory.glob("*.pem")):
            stem = path.name[: -len(".pem")]
            domain, _, selector = stem.rpartition(".")
            try:
                domain, selector = normalise_domain(domain), check_selector(selector)
            except ValueError:
                continue  # not one of ours (or misnamed); ignore rather than refuse to start
            found.setdefault(domain, []).append((selector, path))
        return found

    @property
    def has_keys(self) -> bool:
        """Whether any domain has a key: without one, the sender need not look at From."""
        return bool(self._paths)

    @property
    def domains(self) -> list[str]:
        return sorted(self._paths)

    def describe(self) -> dict[str, tuple[str, Path]]:
        """{domain: (selector, path)} for logs and `ses-relay dkim list`."""
        return dict(self._paths)

    def for_domain(self, domain: str) -> tuple[str, bytes] | None:
        """(selector, PEM key bytes) for mail from `domain`, or None to send unsigned."""
        try:
            domain = normalise_domain(domain)
        except ValueError:
            return None
        entry = self._paths.get(domain)
        if entry is None:
            return None
        selector, path = entry
        with self._lock:
            key = self._cache.get(domain)
            if key is None:
                try:
                    key = path.read_bytes()
                except OSError as exc:
                    raise DkimError(f"DKIM key for {domain} at {path}: {exc.strerror or exc}") from None
                self._cache[domain] = key
        return selector, key


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
