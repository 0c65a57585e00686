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

This module is about keys: names, files, which key signs which domain, and a check
that each key file holds a PEM private key, made without dkimpy or cryptography (serve
checks the keys at start and never signs: those two cost it ~10 MB). Making a key
loads cryptography; signing is relay.sending.dkim_sign's.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
MIN_BITS = 1024


_PEM_KEY = re.compile(
    rb"-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----\s*"
    rb"([A-Za-z0-9+/=\s]+?)\s*-----END \1?PRIVATE KEY-----"
)
_RSA_OID = bytes.fromhex("06092a864886f70d010101")  # rsaEncryption, near the start of a PKCS#8 RSA key


class DkimError(Exception):
    """A key that cannot be made, found, read or used; the message names domain and path."""


def pem_problem(data: bytes) -> str | None:
    """What is wrong with `data` as an unencrypted PEM RSA private key, or None.

    The shape only (a PEM block of valid base64; PKCS#1, or PKCS#8 naming RSA), read
    without cryptography: enough to stop at start on a wrong or truncated file; the
    worker loads each key properly before it signs with it.
    """
    match = _PEM_KEY.search(data)
    if match is None:
        return "does not hold a PEM private key"
    kind = match.group(1)
    if kind == b"ENCRYPTED ":
        return "holds an encrypted private key (DKIM keys are read without a password)"
    if kind == b"EC ":
        return "holds an EC key; only RSA keys are supported"
    try:
        der = base64.b64decode(b"".join(match.group(2).split()), validate=True)
    except binascii.Error:
        return "holds a PEM block that is not valid base64"
    if kind is None and _RSA_OID not in der[:32]:
        return "holds a private key that is not RSA; only RSA keys are supported"
    return None


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
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

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
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

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
    over the files for its domain. Each chosen file is checked here (readable, a
    PEM RSA private key: `pem_problem`), so a typo or a wrong file stops the relay at
    start rather than at the first message; contents are read again on first use and
    cached (thread-safe: workers share this).
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
        for domain, (_selector, path) in sorted(self._paths.items()):
            try:
                problem = pem_problem(path.read_bytes())
            except OSError as exc:
                problem = f"is not readable: {exc.strerror or exc}"
            if problem:
                raise DkimError(f"DKIM key for {domain}: {path} {problem}")
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
