"""The whole configuration (`Config`), and how a file becomes one: parsed, validated
whole, cross-checked, with errors that name the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    ValidationError,
    field_validator,
)

from relay.config.sections import (
    DEFAULT_CONFIG_FILE,
    STATE_URL_ENV,
    AuthConfig,
    ClassConfig,
    ConfigError,
    DkimDomainConfig,
    FeedbackConfig,
    GuardConfig,
    LimitsConfig,
    ListenerConfig,
    MetricsConfig,
    NoticesConfig,
    PolicyConfig,
    ReportConfig,
    Section,
    SesConfig,
    TlsConfig,
)  # fmt: skip
from relay.config.state import StateConfig
from relay.networks import is_loopback_host, wide_network

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


class Config(Section):
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
