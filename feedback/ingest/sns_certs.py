"""SNS signing certificates: which URLs may hold them, and where they come from.

The certificate URL is matched by one exact pattern, never by a suffix test:
`https://sns.<region>.amazonaws.com/<name>.pem` (`.amazonaws.com.cn` for the
China regions). Anyone can host files under some other `*.amazonaws.com` name
(an S3 bucket), which is how django-ses's suffix check was bypassed
(CVE-2023-33121 style); a userinfo, port, query, second path segment or odd
character is refused before any parser can disagree with the fetcher about which
host is meant. A SubscribeURL gets the same treatment, so SNS cannot be used to
make us visit anything else.

Certificates come from a directory of PEM files (for hosts without outbound
access), then an injected fetcher (production only: `fetch_https`; tests never
reach the network). "Could not get the certificate" (`CertificateUnavailable`)
is distinct from "not authentic" (`VerifyError`): the HTTP endpoint answers the
first with 503 so that SNS, which retries only 5xx, tries again once the
operator has fixed the cert dir or the network, and answers the second with 403.
"""

from __future__ import annotations

import re
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

Fetch = Callable[[str], bytes]

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


def _sns_url(pattern: re.Pattern[str], url: str, what: str, form: str) -> re.Match[str]:
    """`url` matched in full by `pattern`, on the host of its own partition (a China
    region only under amazonaws.com.cn, any other never), or a VerifyError saying why not."""
    match = pattern.fullmatch(url)
    if match is None:
        raise VerifyError(_describe_url_problem(url, what, form))
    china = match.group("region").startswith("cn-")
    if china != bool(match.group("cn")):
        domain = "amazonaws.com.cn" if china else "amazonaws.com"
        raise VerifyError(f"{what} {url!r}: region {match.group('region')} is served from {domain}")
    return match


def check_cert_url(url: str) -> str:
    """Refuse any SigningCertURL but https://sns.<region>.amazonaws.com/<name>.pem; return <name>."""
    form = "https://sns.<region>.amazonaws.com/<name>.pem"
    return _sns_url(_CERT_URL, url, "SigningCertURL", form).group("name")


def check_subscribe_url(url: str) -> str:
    """Refuse a SubscribeURL anywhere but https://sns.<region>.amazonaws.com/ (no SSRF via SNS)."""
    _sns_url(_SUBSCRIBE_URL, url, "SubscribeURL", "https://sns.<region>.amazonaws.com/?Action=...")
    return url


def load_certificate(pem: bytes, where: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise VerifyError(f"{where} is not a PEM certificate ({exc})") from None


class Certificates:
    """Certificates for trusted URLs: an in-memory cache, then `<cert_dir>/<name>`, then `fetch`.

    One instance serves a whole process, so each certificate is read or fetched once.
    Thread-safe: the HTTP endpoint verifies in worker threads because a fetch blocks.
    """

    def __init__(self, *, cert_dir: Path | None, fetch: Fetch | None) -> None:
        self.cert_dir = cert_dir
        self.fetch = fetch
        self._cache: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

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
