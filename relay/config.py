"""Configuration: one TOML file, validated whole at start.

Every section is a pydantic model with `extra="forbid"`, so a misspelt key is an
error rather than a silently ignored setting; `ConfigError` carries the dotted
key path so the operator sees exactly which line to fix. Keys are never renamed:
a new setting is a new key beside the others, so existing files keep working.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from relay.addresses import AddressError, normalise
from relay.logredact import redact_url
from relay.networks import is_loopback_host, wide_network

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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassConfig(_Section):
    configuration_set: str | None = Field(
        default=None, description="SES configuration set for this class; none sends without one"
    )


class SesConfig(_Section):
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


class DkimDomainConfig(_Section):
    selector: str
    key_file: Path


class ListenerConfig(_Section):
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


class LimitsConfig(_Section):
    message_size: int = Field(default=10 * 1024 * 1024, ge=1024)  # bytes; advertised with SIZE
    recipients: int = Field(default=500, ge=1, le=10_000)  # per message
    connections_per_ip: int = Field(default=20, ge=1)  # open SMTP connections per client address
    messages_per_minute_per_ip: int = Field(default=0, ge=0)  # MAIL commands a minute; 0 = no limit
    command_timeout: Duration = timedelta(minutes=5)  # idle time allowed between commands
    data_timeout: Duration = timedelta(minutes=10)  # for the whole DATA transfer
    line_length: int = Field(default=1000, ge=1000, le=65536)  # octets a line incl. CRLF (RFC 5321: 1000)
    bare_line_endings: Literal["normalize", "reject"] = "normalize"  # bare CR/LF in a message body

    @field_validator("command_timeout", "data_timeout")
    @classmethod
    def _positive_timeout(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least one second")
        return value


class TlsConfig(_Section):
    cert_file: str = ""  # PEM certificate chain; needed by any listener with tls != "none"
    key_file: str = ""  # PEM private key
    min_version: Literal["1.2", "1.3"] = "1.2"


class AuthConfig(_Section):
    users_file: str = ""  # JSON users file; default <data-dir>/users.json (`ses-relay user add`)
    allow_plaintext_loopback: bool = False  # offer AUTH without TLS to loopback clients
    max_failures: int = Field(default=5, ge=1)  # failed AUTHs from one client address...
    max_failures_per_user: int = Field(default=10, ge=1)  # ...or for one user name...
    failure_window: Duration = timedelta(minutes=10)  # ...within this window...
    lockout: Duration = timedelta(minutes=15)  # ...lock AUTH out for this long
    failure_delay: Duration = timedelta(seconds=1)  # 535 delay, doubling per failure (at most 8x)


class FeedbackConfig(_Section):
    queue_urls: StrList = ()
    sns_topic_arns: StrList = ()
    sns_cert_dir: str = ""


class MetricsConfig(_Section):
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


class ReportConfig(_Section):
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


class PolicyConfig(_Section):
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


class NoticesConfig(_Section):
    """Where notices to senders go: `default` unless the sender's domain has a route.

    Routes: "maildir" (<data-dir>/mailboxes/{address}), "maildir:TEMPLATE",
    "lmtp://host:port", "smtp://[user:pass@]host:port[?starttls=1]", "ses".
    """

    sender: str = ""  # default MAILER-DAEMON@<hostname>
    on_suppressed_at_data: bool = True  # tell senders about recipients dropped at DATA
    default: str = "maildir"
    routes: dict[str, str] = Field(default_factory=dict)  # sender domain -> route


class GuardConfig(_Section):
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


def check_state_url(value: str) -> str:
    """A PostgreSQL URL libpq accepts (or "" for the local SQLite store).

    Errors never repeat the value: it may hold a password.
    """
    url = value.strip()
    if not url:
        return ""
    if not url.lower().startswith(STATE_URL_SCHEMES):
        raise ValueError(
            "not a PostgreSQL URL: use postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, "
            'or "" for the local SQLite store'
        )
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except ProgrammingError as exc:
        raise ValueError(f"not a valid PostgreSQL URL ({redact_url(str(exc))})") from None
    for port in str(params.get("port", "")).split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    return url


class StateConfig(_Section):
    """Where the shared state lives: "" keeps it in the local SQLite store (one host)."""

    url: str = Field(default="", repr=False)  # postgresql://...; env SES_RELAY_STATE_URL overrides
    pool_size: int = Field(default=4, ge=1, le=64)  # PostgreSQL connections per process
    connect_timeout: Duration = timedelta(seconds=5)  # to connect, and to wait for a free connection
    # /healthz fails, and `state check` exits 1, once the local mirror is this far behind
    mirror_max_age: Duration = timedelta(minutes=5)
    change_retention: Duration = timedelta(days=1)  # the change log kept for mirrors to catch up from

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_state_url(value)

    @field_validator("connect_timeout")
    @classmethod
    def _timeout(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise ValueError("must be at least one second")
        return value

    @field_validator("mirror_max_age")
    @classmethod
    def _max_age(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 10:
            raise ValueError("must be at least 10 seconds (the mirror polls every second)")
        return value

    @field_validator("change_retention")
    @classmethod
    def _retention(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 3600:
            raise ValueError("must be at least one hour")
        return value

    @property
    def shared(self) -> bool:
        """True when the state is in PostgreSQL (shared by every relay that names it)."""
        return bool(self.url)

    @property
    def where(self) -> str:
        """The URL as it may be printed and logged: without its password."""
        return redact_url(self.url)

    @property
    def password(self) -> str | None:
        """The password the URL carries, if any: the log filter is given it wherever the URL is used,
        so that it is masked in any line, URL or not."""
        if not self.url:
            return None
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(self.url).get("password") or None


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


class Config(_Section):
    default_class: str = "transactional"
    hostname: str = ""  # this relay's name (banner, notices, DSNs); "" = the machine's FQDN
    classes: dict[str, ClassConfig] = Field(
        default_factory=lambda: {
            "transactional": ClassConfig(configuration_set="tx"),
            "list": ClassConfig(configuration_set="list"),
            "bulk": ClassConfig(configuration_set="bulk"),
        }
    )
    ses: SesConfig = SesConfig()
    dkim: dict[str, DkimDomainConfig] = Field(default_factory=dict)
    listeners: tuple[ListenerConfig, ...] = (ListenerConfig(),)
    limits: LimitsConfig = LimitsConfig()
    tls: TlsConfig = TlsConfig()
    auth: AuthConfig = AuthConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    metrics: MetricsConfig = MetricsConfig()
    report: ReportConfig = ReportConfig()
    policy: PolicyConfig = PolicyConfig()
    notices: NoticesConfig = NoticesConfig()
    guard: GuardConfig = GuardConfig()
    state: StateConfig = StateConfig()

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        value = value.strip().rstrip(".")
        if value and not _HOSTNAME.match(value):
            raise ValueError(f"{value!r} is not a host name (letters, digits, '-', dots between labels)")
        return value.lower()

    @field_validator("classes")
    @classmethod
    def _class_names(cls, value: dict[str, ClassConfig]) -> dict[str, ClassConfig]:
        if not value:
            raise ValueError("at least one class must be configured")
        for name in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
                raise ValueError(f"class name {name!r} must be lower-case letters, digits, '-' or '_'")
        return value

    def class_for_configuration_set(self, name: str) -> str | None:
        for klass, conf in self.classes.items():
            if conf.configuration_set == name:
                return klass
        return None


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _cross_check(config: Config) -> Config:
    """Checks that span sections, each naming the key an operator must change."""
    names = ", ".join(sorted(config.classes))
    if config.default_class not in config.classes:
        raise ConfigError("default_class", f"{config.default_class!r} is not a configured class ({names})")
    for i, listener in enumerate(config.listeners):
        if listener.default_class is not None and listener.default_class not in config.classes:
            raise ConfigError(
                f"listeners[{i}].default_class",
                f"{listener.default_class!r} is not a configured class ({names})",
            )
    if config.limits.message_size > config.ses.max_message_size:
        raise ConfigError(
            "limits.message_size",
            f"{config.limits.message_size} exceeds what SES api {config.ses.api!r} accepts "
            f"({config.ses.max_message_size})",
        )
    check_listeners(config)
    return config


def check_listeners(config: Config) -> None:
    """TLS material, AUTH reachability and the open-relay rule, per listener.

    Run again by `serve` after `--listen` replaced the address, because whether a
    listener is exposed depends on where it is bound.
    """
    for i, listener in enumerate(config.listeners):
        key = f"listeners[{i}]"
        if listener.tls != "none":
            for name in ("cert_file", "key_file"):
                if not getattr(config.tls, name):
                    raise ConfigError(
                        f"tls.{name}",
                        f"{key} ({listener.listen}) has tls = {listener.tls!r} but tls.{name} is not set",
                    )
        loopback = is_loopback_host(listener.host)
        if listener.require_auth and listener.tls == "none" and not (
            loopback and config.auth.allow_plaintext_loopback
        ):
            raise ConfigError(
                f"{key}.tls",
                "require_auth = true needs tls = 'starttls' or 'implicit': AUTH is only offered over TLS "
                "(or on a loopback listener with [auth] allow_plaintext_loopback = true)",
            )
        if loopback or listener.require_auth:
            continue
        if "allow_networks" not in listener.model_fields_set:
            raise ConfigError(
                f"{key}.allow_networks",
                f"refusing to start: listener {listener.listen} is bound beyond loopback with neither "
                "require_auth = true nor an explicit allow_networks list; it would be an open relay "
                "(or useless). Set require_auth = true, or list the networks that may relay",
            )
        for net in listener.allow_networks:
            why = wide_network(net)
            if why:
                raise ConfigError(
                    f"{key}.allow_networks",
                    f"refusing to start: listener {listener.listen} would be an open relay: it is bound "
                    f"beyond loopback, does not require AUTH, and {why}. Set require_auth = true, or allow "
                    "only private networks or public ones no wider than /16 (IPv4) or /48 (IPv6)",
                )


def from_dict(data: dict[str, Any]) -> Config:
    """Validate a parsed TOML document; raise ConfigError naming the first bad key."""
    try:
        return _cross_check(Config.model_validate(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p and "]" in p))
        key = _key_path(loc)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        extra = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ConfigError(key or "(top level)", message + extra) from None


def load(path: Path | None) -> Config:
    """Load and validate `path` (None: the defaults), with $SES_RELAY_STATE_URL over [state] url."""
    env_url = os.environ.get(STATE_URL_ENV, "").strip()
    if path is None and not env_url:
        return Config()
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("", f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("", f"{path} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from None
    if env_url and isinstance(data.get("state", {}), dict):
        data["state"] = {**data.get("state", {}), "url": env_url}
        try:
            return from_dict(data)
        except ConfigError as exc:
            if exc.key == "state.url":
                raise ConfigError(exc.key, f"{exc.message} (from ${STATE_URL_ENV})") from None
            raise
    return from_dict(data)


def locate(explicit: str | None) -> Path | None:
    """--config, else $SES_RELAY_CONFIG, else ./ses-relay.toml when it exists."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("SES_RELAY_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None
