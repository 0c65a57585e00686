"""Putting a composed notice into the sender's mailbox (thin IO shell).

Four routes, chosen per sender domain from `[notices]`: a local Maildir (the default,
so a laptop sandbox needs nothing else), LMTP (Dovecot, Cyrus), SMTP (the sender's own
mail server, optionally with STARTTLS and AUTH) and SES (the relay's own sending path,
passed in by the caller because `relay` owns it).

Every failure is a `DeliveryError` whose `temporary` tells the caller what to do: keep
the notice pending and retry with backoff, or give up on it. Only a 5xx reply to the
transaction itself is final; a refused connection, a timeout, a 4xx, bad credentials
or a TLS problem are worth retrying, because an admin can fix them and a notice must
not be lost to a misconfiguration that lasted an hour.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import smtplib
import socket
import ssl
import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from relay import maildir
from relay.addresses import unbracket

__all__ = [
    "DEFAULT_MAILDIR_TEMPLATE",
    "DeliveryError",
    "Route",
    "SesSend",
    "deliver",
    "deliver_lmtp",
    "deliver_maildir",
    "deliver_smtp",
    "maildir_path",
    "parse_route",
    "parse_routes",
    "route_for",
]

ROUTE_KINDS = ("maildir", "lmtp", "smtp", "ses")
DEFAULT_MAILDIR_TEMPLATE = "mailboxes/{address}"  # relative to the data dir
_PLACEHOLDERS = frozenset({"address", "domain", "local"})
_DEFAULT_PORTS = {"lmtp": 24, "smtp": 25}
# 5xx replies that blame our route's settings (RFC 4954: authentication or TLS required,
# mechanism too weak, credentials refused), not the notice: retry while an admin fixes them.
_CONFIG_REPLIES = frozenset({530, 534, 535, 538})
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_ROUTE_FORMS = (
    "expected one of: maildir, maildir:/path/{address}, lmtp://host:port, lmtp:///path/to/socket, "
    "smtp://host:port, smtp://user:pass@host:port?starttls=1, ses"
)

# (raw message, envelope source, destination) -> sent. Supplied by the caller for "ses".
SesSend = Callable[[bytes, str, str], Awaitable[None]]


class DeliveryError(Exception):
    """A notice could not be delivered. `temporary`: keep it and retry later."""

    def __init__(self, message: str, *, temporary: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.code = code


@dataclass(frozen=True)
class Route:
    """Where notices for one sender domain go.

    maildir: `target` is the path template ("" = <data-dir>/mailboxes/{address});
    lmtp/smtp: `target` is the host, or an absolute unix socket path for LMTP;
    ses: no target.
    """

    kind: str
    target: str = ""
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    cafile: str | None = None


def parse_route(text: str) -> Route:
    """Parse one route from the config; ValueError naming what is wrong."""
    raw = text.strip()
    if not raw:
        raise ValueError(f"empty notice route; {_ROUTE_FORMS}")
    lowered = raw.lower()
    if lowered in ("maildir", "ses"):
        return Route(kind=lowered)
    if lowered.startswith("maildir:"):
        template = raw[len("maildir:") :]
        _check_template(template)
        return Route(kind="maildir", target=template)
    scheme = lowered.partition(":")[0]
    if scheme in ("lmtp", "smtp"):
        return _parse_url(raw, scheme)
    raise ValueError(f"unknown notice route {raw!r}; {_ROUTE_FORMS}")


def parse_routes(routes: Mapping[str, str]) -> dict[str, Route]:
    """Parse `[notices]` routes keyed by domain at start-up, naming the bad key."""
    parsed: dict[str, Route] = {}
    for domain, text in routes.items():
        key = _domain_key(domain)
        if not key:
            raise ValueError(f"notices route key {domain!r} is not a domain")
        try:
            parsed[key] = parse_route(text)
        except ValueError as exc:
            raise ValueError(f"notices route for {domain!r}: {exc}") from None
    return parsed


def route_for(sender: str, routes: Mapping[str, str], default: str) -> Route:
    """The route for `sender`: its exact domain, then each parent domain, else `default`.

    `mail.example.com` falls back to `example.com`, so one entry covers a company's
    subdomains while a more specific one can still override it.
    """
    _, _, domain = unbracket(sender).rpartition("@")
    table = {_domain_key(key): value for key, value in routes.items()}
    labels = _domain_key(domain).split(".") if domain else []
    for i in range(len(labels)):
        candidate = ".".join(labels[i:])
        if candidate in table:
            return parse_route(table[candidate])
    return parse_route(default)


def maildir_path(route: Route, address: str, data_dir: Path) -> Path:
    """The Maildir for `address` under `route`'s template.

    Raises ValueError when the address would leave the template's base directory:
    normalised addresses may legally contain "/" in the local part, and a template
    like /srv/mail/{local} must not let `../../etc` choose where we write.
    """
    template = route.target or DEFAULT_MAILDIR_TEMPLATE
    _check_template(template)
    bare = unbracket(address)
    local, at, domain = bare.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"cannot file a notice for {address!r}: not an address")
    values = {"address": bare.lower(), "local": local.lower(), "domain": domain.lower()}
    for name, value in values.items():
        if "/" in value or "\\" in value or "\x00" in value or value.startswith("."):
            raise ValueError(f"refusing Maildir path for {address!r}: {name} {value!r} could escape the base")
    absolute = Path(template).is_absolute()
    filled = template.format(**values)
    path = Path(os.path.normpath(filled if absolute else data_dir / filled))
    # The base is the directory the template fixes before its first placeholder.
    base_text = template.split("{", 1)[0]
    base = Path(os.path.normpath(base_text if absolute else data_dir / base_text))
    if base_text and not base_text.endswith(("/", os.sep)):
        base = base.parent
    if path != base and base not in path.parents:
        raise ValueError(f"refusing Maildir path {str(path)!r} for {address!r}: outside {str(base)!r}")
    return path


def deliver_maildir(path: Path, message: bytes) -> None:
    """Add `message` to the Maildir at `path` (created with its parents), durably.

    Lines are stored LF-ended, as local delivery agents do. The file and new/ are
    fsync'd before returning, because the caller marks the notice delivered next;
    concurrent first deliveries to a new Maildir are safe (relay.maildir).
    """
    try:
        maildir.add(path, message.replace(b"\r\n", b"\n"))
    except OSError as exc:
        raise DeliveryError(f"Maildir {path}: {exc}", temporary=True) from exc


async def deliver_lmtp(
    host: str,
    port: int | None,
    mail_from: str,
    rcpt: str,
    message: bytes,
    timeout: float = 30,  # noqa: ASYNC109 - a socket timeout: a thread cannot be cancelled
    *,
    local_hostname: str | None = None,
) -> None:
    """One LMTP transaction (RFC 2033) in a worker thread; `host` may be a socket path."""

    def talk() -> None:
        # smtplib treats a host starting with "/" as a unix socket path
        with smtplib.LMTP(
            host, port or 0, local_hostname=local_hostname or _hostname(), timeout=timeout
        ) as client:
            client.sendmail(mail_from, [rcpt], message)

    where = host if host.startswith("/") else f"{host}:{port}"
    await _transaction(f"LMTP {where}", talk)


async def deliver_smtp(
    host: str,
    port: int,
    mail_from: str,
    rcpt: str,
    message: bytes,
    *,
    starttls: bool,
    username: str | None,
    password: str | None,
    timeout: float = 30,  # noqa: ASYNC109 - a socket timeout: a thread cannot be cancelled
    ssl_context: ssl.SSLContext | None = None,
    local_hostname: str | None = None,
) -> None:
    """One SMTP transaction in a worker thread, with optional STARTTLS and AUTH.

    With `starttls` the TLS upgrade is required (no silent plain-text fallback) and
    the certificate is verified against `ssl_context` (default: the system's CAs).
    """

    def talk() -> None:
        with smtplib.SMTP(host, port, local_hostname=local_hostname or _hostname(), timeout=timeout) as c:
            c.ehlo()
            if starttls:
                c.starttls(context=ssl_context or ssl.create_default_context())
                c.ehlo()
            if username is not None:
                c.login(username, password or "")
            c.sendmail(mail_from, [rcpt], message)

    await _transaction(f"SMTP {host}:{port}", talk)


async def deliver(
    route: Route,
    *,
    notice_sender: str,
    recipient: str,
    message: bytes,
    data_dir: Path,
    ses_send: SesSend | None = None,
    timeout: float = 30,  # noqa: ASYNC109 - a socket timeout: a thread cannot be cancelled
    local_hostname: str | None = None,
) -> None:
    """Deliver one notice to `recipient` (the original envelope sender) along `route`.

    `local_hostname` is the name given in LHLO/EHLO (the relay's hostname).

    Maildir, LMTP and SMTP use the null reverse-path, as RFC 3464 asks of delivery
    reports, so a failing notice cannot bounce back into another one. SES refuses a
    null reverse-path, so the SES route uses the notice sender's address as the source.
    """
    if route.kind == "maildir":
        try:
            path = maildir_path(route, recipient, data_dir)
        except ValueError as exc:
            raise DeliveryError(str(exc), temporary=False) from exc
        await asyncio.to_thread(deliver_maildir, path, b"Return-Path: <>\r\n" + message)
    elif route.kind == "lmtp":
        await deliver_lmtp(
            route.target, route.port, "", recipient, message, timeout, local_hostname=local_hostname
        )
    elif route.kind == "smtp":
        context = ssl.create_default_context(cafile=route.cafile) if route.cafile else None
        await deliver_smtp(
            route.target,
            route.port or _DEFAULT_PORTS["smtp"],
            "",
            recipient,
            message,
            starttls=route.starttls,
            username=route.username,
            password=route.password,
            timeout=timeout,
            ssl_context=context,
            local_hostname=local_hostname,
        )
    elif route.kind == "ses":
        if ses_send is None:
            raise ValueError("the 'ses' notice route needs the relay's ses_send callable")
        source = parseaddr(notice_sender)[1]
        if not source:
            raise ValueError(f"notice_sender {notice_sender!r} has no address to use as the SES source")
        await ses_send(message, source, unbracket(recipient))
    else:
        raise ValueError(f"unknown route kind {route.kind!r}; expected one of {', '.join(ROUTE_KINDS)}")


# --- helpers ---------------------------------------------------------------------------


def _parse_url(raw: str, scheme: str) -> Route:
    parts = urlsplit(raw)
    if parts.fragment:
        raise ValueError(f"notice route {raw!r}: unexpected '#' fragment")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"notice route {raw!r}: port must be a number from 1 to 65535") from None
    host = parts.hostname or ""
    if scheme == "lmtp" and not host and parts.path.startswith("/") and len(parts.path) > 1:
        if parts.query or parts.username is not None or port is not None:
            raise ValueError(f"notice route {raw!r}: a unix socket route takes no port, user or options")
        return Route(kind="lmtp", target=unquote(parts.path))
    if not host:
        raise ValueError(f"notice route {raw!r}: missing host (expected {scheme}://host:port)")
    if port == 0:
        raise ValueError(f"notice route {raw!r}: port must be a number from 1 to 65535")
    if parts.path not in ("", "/"):
        raise ValueError(f"notice route {raw!r}: unexpected path {parts.path!r}")
    if scheme == "lmtp":
        if parts.query or parts.username is not None:
            raise ValueError(f"notice route {raw!r}: lmtp routes take no user or options")
        return Route(kind="lmtp", target=host, port=port or _DEFAULT_PORTS["lmtp"])

    starttls = False
    cafile: str | None = None
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key == "starttls":
            if value.lower() in _TRUE:
                starttls = True
            elif value.lower() not in _FALSE:
                raise ValueError(f"notice route {raw!r}: starttls must be 1 or 0, got {value!r}")
        elif key == "cafile":
            cafile = value or None
        else:
            raise ValueError(f"notice route {raw!r}: unknown option {key!r} (known: starttls, cafile)")
    if parts.query and not parse_qsl(parts.query, keep_blank_values=True):
        raise ValueError(f"notice route {raw!r}: cannot read options {parts.query!r}")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if username is not None and not username:
        raise ValueError(f"notice route {raw!r}: empty user name")
    if username is not None and not starttls and not _is_loopback(host):
        raise ValueError(
            f"notice route {_redacted(raw)!r}: refusing to send a password without TLS to {host}; "
            "add ?starttls=1"
        )
    return Route(
        kind="smtp",
        target=host,
        port=port or _DEFAULT_PORTS["smtp"],
        username=username,
        password=password,
        starttls=starttls,
        cafile=cafile,
    )


def _check_template(template: str) -> None:
    if not template.strip():
        raise ValueError(f"empty Maildir path in notice route; {_ROUTE_FORMS}")
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"Maildir path template {template!r}: {exc}") from None
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in _PLACEHOLDERS or spec or conversion:
            raise ValueError(
                f"Maildir path template {template!r}: unknown placeholder {{{name}}}; "
                "use {address}, {domain} or {local}"
            )


async def _transaction(where: str, talk: Callable[[], None]) -> None:
    """Hold one blocking smtplib conversation in a worker thread; its smtplib and socket
    failures come out as DeliveryErrors naming `where`, anything else unchanged."""

    def run() -> None:
        try:
            talk()
        except Exception as exc:
            error = _classify(exc, where)
            if error is exc:
                raise
            raise error from exc

    await asyncio.to_thread(run)


def _classify(exc: BaseException, where: str) -> BaseException:
    """Map an smtplib/socket failure to a DeliveryError (other exceptions pass through)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()))
        return _reply_error(where, "refused the recipient", code, text)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return DeliveryError(
            f"{where}: authentication failed ({exc.smtp_code} {_text(exc.smtp_error)}); check the route's "
            "user and password",
            temporary=True,
            code=exc.smtp_code,
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return DeliveryError(f"{where}: {exc}", temporary=True)
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply_error(where, "refused the notice", exc.smtp_code, exc.smtp_error)
    if isinstance(exc, smtplib.SMTPException | OSError):  # refused, reset, timeout, TLS
        return DeliveryError(f"{where}: {exc or type(exc).__name__}", temporary=True)
    return exc


def _reply_error(where: str, what: str, code: int, text: bytes | str) -> DeliveryError:
    final = 500 <= code < 600 and code not in _CONFIG_REPLIES
    return DeliveryError(f"{where} {what}: {code} {_text(text)}", temporary=not final, code=code)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _hostname() -> str:
    # smtplib's default is socket.getfqdn(), a reverse DNS lookup that can stall for
    # seconds; the plain host name costs nothing and is fine for LHLO/EHLO.
    return socket.gethostname() or "localhost"


def _domain_key(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _redacted(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.password is None:
        return raw
    return raw.replace(f":{parts.password}@", ":***@", 1)
