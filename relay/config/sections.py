"""The configuration's sections, each a pydantic model of one TOML table, and the
value types they share (durations, address lists). `[state]` is in state.py, the
whole file (`Config`) and its loading in model.py.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)

from relay.addresses import AddressError, normalise

DEFAULT_CONFIG_FILE = Path("ses-relay.toml")
DEFAULT_DATA_DIR = Path("ses-relay-data")
DEFAULT_LISTEN = "127.0.0.1:2525"
STATE_URL_ENV = "SES_RELAY_STATE_URL"  # overrides [state] url
STATE_URL_SCHEMES = ("postgresql://", "postgres://")
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ConfigError(ValueError):
    """A configuration problem; `key` is the dotted path of the offending setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


def parse_duration(value: Any) -> timedelta:
    """Accept "90s", "15m", "24h", "7d", "2w", a bare number of seconds, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', '15m', '24h' or '7d'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration; use e.g. '30s', '15m', '24h' or '7d'")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def at_least(minimum: timedelta, words: str) -> AfterValidator:
    """For a Duration that may not be shorter than `minimum`: "must be at least <words>"."""

    def check(value: timedelta) -> timedelta:
        if value < minimum:
            raise ValueError(f"must be at least {words}")
        return value

    return AfterValidator(check)


Timeout = Annotated[Duration, at_least(timedelta(seconds=1), "one second")]  # a Duration of a second or more


def _one_or_many(value: Any) -> Any:
    """A list-valued key also takes one string, `"a"` or `"a, b"` (split at commas)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _addresses(value: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for address in value:
        try:
            out.append(normalise(address))
        except AddressError as exc:
            raise ValueError(f"{address!r}: {exc.why}") from None
    return tuple(out)


# Every list-valued key: a TOML list of strings, or a single string.
StrList = Annotated[tuple[str, ...], BeforeValidator(_one_or_many)]
AddressList = Annotated[tuple[str, ...], BeforeValidator(_one_or_many), AfterValidator(_addresses)]


def parse_hostport(value: str) -> tuple[str, int]:
    """Split "HOST:PORT" or "[v6]:PORT"; the port must be 0..65535."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host, int(port)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassConfig(Section):
    configuration_set: str | None = Field(
        default=None, description="SES configuration set for this class; none sends without one"
    )


class SesConfig(Section):
    region: str = "us-east-1"
    endpoint_url: str = ""  # SES (v1 and v2) only; empty: AWS_ENDPOINT_URL_SES[V2], AWS_ENDPOINT_URL
    api: Literal["v1", "v2"] = "v1"
    max_send_rate: float | Literal["auto"] = "auto"  # recipients/s across all workers
    concurrency: int = Field(default=8, ge=1, le=256)
    retry_max_age: Duration = timedelta(hours=24)  # then the recipients are `failed`
    retry_cap: Duration = timedelta(minutes=5)  # longest wait between two tries of one message
    source_arn: str = ""
    from_arn: str = ""
    return_path_arn: str = ""

    @field_validator("max_send_rate")
    @classmethod
    def _positive_rate(cls, value: float | str) -> float | str:
        if isinstance(value, float) and value <= 0:
            raise ValueError("must be a positive number of messages per second, or 'auto'")
        return value

    @property
    def max_message_size(self) -> int:
        """SendRawEmail takes 10 MB; SESv2 SendEmail with Raw content takes 40 MB."""
        return 40 * 1024 * 1024 if self.api == "v2" else 10 * 1024 * 1024


class DkimDomainConfig(Section):
    selector: str
    key_file: Path


class ListenerConfig(Section):
    listen: str = DEFAULT_LISTEN
    tls: Literal["none", "starttls", "implicit"] = "none"
    require_auth: bool = False
    allow_networks: StrList = LOOPBACK_NETWORKS
    default_class: str | None = None

    @field_validator("listen")
    @classmethod
    def _hostport(cls, value: str) -> str:
        parse_hostport(value)
        return value

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"{net!r} is not a network in CIDR form ({exc})") from None
        return value

    @property
    def host(self) -> str:
        return parse_hostport(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_hostport(self.listen)[1]


class LimitsConfig(Section):
    message_size: int = Field(default=10 * 1024 * 1024, ge=1024)  # bytes; advertised with SIZE
    recipients: int = Field(default=500, ge=1, le=10_000)  # per message
    connections_per_ip: int = Field(default=20, ge=1)  # open SMTP connections per client address
    messages_per_minute_per_ip: int = Field(default=0, ge=0)  # MAIL commands a minute; 0 = no limit
    command_timeout: Timeout = timedelta(minutes=5)  # idle time allowed between commands
    data_timeout: Timeout = timedelta(minutes=10)  # for the whole DATA transfer
    line_length: int = Field(default=1000, ge=1000, le=65536)  # octets a line incl. CRLF (RFC 5321: 1000)
    bare_line_endings: Literal["normalize", "reject"] = "normalize"  # bare CR/LF in a message body


class TlsConfig(Section):
    cert_file: str = ""  # PEM certificate chain; needed by any listener with tls != "none"
    key_file: str = ""  # PEM private key
    min_version: Literal["1.2", "1.3"] = "1.2"


class AuthConfig(Section):
    users_file: str = ""  # JSON users file; default <data-dir>/users.json (`ses-relay user add`)
    allow_plaintext_loopback: bool = False  # offer AUTH without TLS to loopback clients
    max_failures: int = Field(default=5, ge=1)  # failed AUTHs from one client address...
    max_failures_per_user: int = Field(default=10, ge=1)  # ...or for one user name...
    failure_window: Duration = timedelta(minutes=10)  # ...within this window...
    lockout: Duration = timedelta(minutes=15)  # ...lock AUTH out for this long
    failure_delay: Duration = timedelta(seconds=1)  # 535 delay, doubling per failure (at most 8x)


class FeedbackConfig(Section):
    queue_urls: StrList = ()
    sns_topic_arns: StrList = ()
    sns_cert_dir: str = ""


class MetricsConfig(Section):
    listen: str = ""  # HOST:PORT for /metrics, /healthz, /readyz; empty = off
    stuck_after: Duration = timedelta(hours=1)  # /healthz fails: oldest spooled this old, SES not sending

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value:
            parse_hostport(value)
        return value


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
PRESIGN_LIMIT = timedelta(days=7)  # S3 refuses SigV4 presigned URLs that last longer


def parse_s3_uri(value: str) -> tuple[str, str]:
    """Split `s3://bucket/some/prefix` into ("bucket", "some/prefix/"): the prefix is a folder or empty."""
    text = value.strip()
    if not text.startswith("s3://"):
        raise ValueError(f"{value!r} is not an S3 URI; use s3://BUCKET/PREFIX/")
    bucket, _, prefix = text[5:].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket or re.fullmatch(r"[\d.]+", bucket):
        raise ValueError(f"{bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, '.' or '-')")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class ReportConfig(Section):
    """The daily dashboard: bounces and complaints of the last 24 hours, mailed or published to S3."""

    daily_to: AddressList = ()  # empty = no daily mail
    hour: int = Field(default=7, ge=0, le=23)  # UTC hour from which the day's report is due
    s3_uri: str = ""  # "s3://bucket/prefix/": publish there and mail a link; empty = attach the files
    s3_region: str = ""  # the bucket's region, which presigned URLs are signed for; empty: [ses] region
    link_expiry: Duration = PRESIGN_LIMIT  # how long the mailed links work

    @field_validator("s3_uri")
    @classmethod
    def _s3_uri(cls, value: str) -> str:
        if not value.strip():
            return ""
        bucket, prefix = parse_s3_uri(value)
        return f"s3://{bucket}/{prefix}"

    @field_validator("link_expiry")
    @classmethod
    def _link_expiry(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least one second")
        if value > PRESIGN_LIMIT:
            raise ValueError(
                f"S3 presigned URLs (SigV4) work for at most 7 days ('7d'), "
                f"not {value.total_seconds() / 86400:g} days"
            )
        return value

    @property
    def s3_bucket(self) -> str:
        return parse_s3_uri(self.s3_uri)[0] if self.s3_uri else ""

    @property
    def s3_prefix(self) -> str:
        return parse_s3_uri(self.s3_uri)[1] if self.s3_uri else ""


class PolicyConfig(Section):
    """The numbers of the suppression policy (feedback/policy.py; README "Suppression policy")."""

    permanent_general_expiry: Duration = timedelta(days=30)  # Permanent/General ("recoverable")
    soft_bounce_expiry: Duration = timedelta(hours=1)  # Transient/General, /MailboxFull
    escalate_after: int = Field(default=5, ge=1)  # transient bounces within the window...
    escalate_window: Duration = timedelta(hours=24)
    escalate_expiry: Duration = timedelta(days=7)  # ...make a hard suppression this long
    engaged_window: Duration = timedelta(days=30)  # an open or click this recent...
    escalate_after_engaged: int = Field(default=15, ge=1)  # ...needs this many instead of escalate_after
    reclear_window: Duration = timedelta(days=7)  # a bounce this soon after a clear: twice its window
    max_clears_per_day: int = Field(default=100, ge=0)  # clears by all admins in 24 h, unless --force


class NoticesConfig(Section):
    """Where notices to senders go: `default` unless the sender's domain has a route.

    Routes: "maildir" (<data-dir>/mailboxes/{address}), "maildir:TEMPLATE",
    "lmtp://host:port", "smtp://[user:pass@]host:port[?starttls=1]", "ses".
    """

    sender: str = ""  # default MAILER-DAEMON@<hostname>
    on_suppressed_at_data: bool = True  # tell senders about recipients dropped at DATA
    default: str = "maildir"
    routes: dict[str, str] = Field(default_factory=dict)  # sender domain -> route


class GuardConfig(Section):
    """The reputation guard: pause a class before SES reviews the account.

    SES reviews at a 5 % bounce or 0.1 % complaint rate and may pause sending at
    10 % / 0.5 %; the default rates act at half the review thresholds. SES judges
    rates over a representative volume, so the guard waits for one too (min_volume)
    and for enough events that a rate is not one unlucky send (min_bounces,
    min_complaints): one complaint in 209 sends is 0.5 %, and still one person.
    """

    enabled: bool = True
    bounce_rate: float = Field(default=0.025, gt=0, le=1)  # permanent bounces / sent
    complaint_rate: float = Field(default=0.0005, gt=0, le=1)  # complaints / sent
    min_volume: int = Field(default=1000, ge=1)  # sends in the window before rates count
    min_bounces: int = Field(default=10, ge=1)  # permanent bounces before the bounce rate counts
    min_complaints: int = Field(default=3, ge=1)  # complaints before the complaint rate counts
    window: Duration = timedelta(hours=24)
    check_every: Duration = timedelta(minutes=1)
    action: Literal["refuse", "hold"] = "refuse"  # new mail: 451 4.7.1, or accept and hold
    alert_to: AddressList = ()  # who is mailed when a class is paused
