"""Keep secrets out of the logs, whatever the log level.

aiosmtpd logs every client line (at info, and again at debug), hiding only the
argument of `AUTH <mech> <arg>`. A client that sends its credentials when the
server did not ask (after a refused AUTH, or pipelined) would have them logged as
an "unrecognised command". At debug level it also logs every line of DATA, and
botocore logs request headers, which carry session tokens.

This filter sits on the root handlers (installed by the CLI's logging set-up), so
it sees every record from every library, and rewrites a record whose text:
- is a client's AUTH command as aiosmtpd logs it -> `AUTH <mech> ********`, whatever
  the mechanism or case;
- has an AUTH exchange anywhere else -> `AUTH PLAIN ********`: a mechanism is a
  registered SASL name in any case, or an upper-case token, so that prose such as
  "requires AUTH and is not authenticated" keeps its words;
- is a client line from aiosmtpd that is not a known SMTP verb -> redacted;
- is a DATA line at debug -> its length only;
- contains the value of AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN from the
  environment, or looks like `X-Amz-Security-Token`/`aws_secret_access_key`
  with a value -> the value replaced;
- has a password in a URL (`smtp://user:secret@host`) -> the password replaced;
- contains any extra literal secret the caller registered.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

MASK = "********"
SMTP_VERBS = frozenset(
    "HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY EXPN HELP STARTTLS AUTH".split()
)
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
MIN_SECRET = 6

_SASL_NAMES = (
    r"PLAIN|LOGIN|CRAM-MD5|DIGEST-MD5|XOAUTH2?|OAUTHBEARER|SCRAM-SHA-\d+(?:-PLUS)?|GSSAPI|NTLM|EXTERNAL"
)
_AUTH_ARG = re.compile(
    rf"((?i:\bAUTH)\s+(?:(?i:{_SASL_NAMES})|[A-Z0-9][A-Z0-9_-]*)\s+)[^\s'\"\\]+"
)
_KEYED = re.compile(
    r"(?i)((?:x-amz-security-token|aws_secret_access_key|aws_session_token|secretaccesskey|sessiontoken|password)"
    r"['\"]?\s*[:=]\s*b?['\"]?)[^\s'\",}&]+"
)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s]*@", re.IGNORECASE)  # to the last @
_CLIENT_LINE_FORMATS = ("%r >> %r", "_handle_client readline: %r", "%r unrecognised: %s")
_ALWAYS_REDACT_FORMATS = ("%r can't decode base64: %s",)


def _verb(line: object) -> str:
    raw = line.decode("ascii", "replace") if isinstance(line, bytes | bytearray) else str(line)
    return raw.strip().split(" ", 1)[0].upper()


def _auth_command(line: object) -> object:
    """`AUTH <mech> <anything>` -> `AUTH <mech> ********`, in the type it came in."""
    raw = line.decode("ascii", "replace") if isinstance(line, bytes | bytearray) else str(line)
    words = raw.split(None, 2)
    if len(words) < 3:
        return line
    masked = f"{words[0]} {words[1]} {MASK}"
    return masked.encode("ascii", "replace") if isinstance(line, bytes | bytearray) else masked


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        env = [os.environ.get(name, "") for name in SECRET_ENV]
        self.secrets = sorted({s for s in [*env, *secrets] if len(s) >= MIN_SECRET}, key=len, reverse=True)

    def add_secret(self, secret: str) -> None:
        if len(secret) >= MIN_SECRET and secret not in self.secrets:
            self.secrets = sorted([*self.secrets, secret], key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("mail.log"):
            self._smtp_record(record)
        try:
            text = record.getMessage()
        except Exception:  # a broken format string is the logging module's to report
            return True
        clean = redact(text, self.secrets)
        if clean != text:
            record.msg, record.args = clean, None
        return True

    def _smtp_record(self, record: logging.LogRecord) -> None:
        fmt = record.msg if isinstance(record.msg, str) else ""
        args = record.args if isinstance(record.args, tuple) else ()
        if fmt == "DATA readline: %s" and args:
            record.msg, record.args = "DATA line of %d octets", (len(args[0]),)
        elif fmt in _CLIENT_LINE_FORMATS and args and _verb(args[-1]) not in SMTP_VERBS:
            record.args = (*args[:-1], "[client line redacted: not an SMTP command]")
        elif fmt in _CLIENT_LINE_FORMATS and args and _verb(args[-1]) == "AUTH":
            record.args = (*args[:-1], _auth_command(args[-1]))
        elif fmt in _ALWAYS_REDACT_FORMATS and args:
            record.args = (*args[:-1], MASK)


# Every match of _AUTH_ARG, _URL_PASSWORD or _KEYED contains one of these (lower-cased);
# ASCII text without any of them cannot match, and skips the three searches (~10 µs a line).
_PATTERN_WORDS = ("auth", "://", "token", "secret", "password")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if text.isascii():
        lowered = text.lower()
        for word in _PATTERN_WORDS:
            if word in lowered:
                break
        else:
            return text
    text = _AUTH_ARG.sub(lambda m: m.group(1) + MASK, text)
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", text)
    return _KEYED.sub(lambda m: m.group(1) + MASK, text)


def redact_url(url: str) -> str:
    """A connection URL (or any text holding one) with every password masked.

    Catches `scheme://user:PASSWORD@host` and a `password=` parameter, the two ways a
    libpq URL carries one.
    """
    text = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", url)
    return _KEYED.sub(lambda m: m.group(1) + MASK, text)


def install(secrets: Iterable[str] = ()) -> RedactSecrets:
    """Put one RedactSecrets on every root handler (idempotent)."""
    root = logging.getLogger()
    found: RedactSecrets | None = None
    for handler in root.handlers:
        for existing in handler.filters:
            if isinstance(existing, RedactSecrets):
                found = existing
    flt = found or RedactSecrets(secrets)
    for secret in secrets:
        flt.add_secret(secret)
    for handler in root.handlers:
        if flt not in handler.filters:
            handler.addFilter(flt)
    return flt
