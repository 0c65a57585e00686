"""Configuration: one TOML file, validated whole at start.

Every section is a pydantic model with `extra="forbid"`, so a misspelt key is an
error rather than a silently ignored setting; `ConfigError` carries the dotted
key path so the operator sees exactly which line to fix. Keys are never renamed:
a new setting is a new key beside the others, so existing files keep working.

- sections.py: the sections (one model per TOML table) and the value types they
  share (durations, address lists, host:port);
- state.py: `[state]`, where the shared state lives;
- model.py: `Config`, the whole file, and loading it (`load`, `from_dict`, `locate`,
  the cross-checks).
"""

from relay.config.model import (
    Config,
    check_listeners,
    from_dict,
    load,
    locate,
)
from relay.config.sections import (
    DEFAULT_CONFIG_FILE,
    DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
    LOOPBACK_NETWORKS,
    PRESIGN_LIMIT,
    STATE_URL_ENV,
    STATE_URL_SCHEMES,
    AddressList,
    AuthConfig,
    ClassConfig,
    ConfigError,
    DkimDomainConfig,
    Duration,
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
    StrList,
    TlsConfig,
    parse_duration,
    parse_hostport,
    parse_s3_uri,
)
from relay.config.state import (
    StateConfig,
    check_state_url,
)

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_DATA_DIR",
    "DEFAULT_LISTEN",
    "LOOPBACK_NETWORKS",
    "PRESIGN_LIMIT",
    "STATE_URL_ENV",
    "STATE_URL_SCHEMES",
    "AddressList",
    "AuthConfig",
    "ClassConfig",
    "Config",
    "ConfigError",
    "DkimDomainConfig",
    "Duration",
    "FeedbackConfig",
    "GuardConfig",
    "LimitsConfig",
    "ListenerConfig",
    "MetricsConfig",
    "NoticesConfig",
    "PolicyConfig",
    "ReportConfig",
    "Section",
    "SesConfig",
    "StateConfig",
    "StrList",
    "TlsConfig",
    "check_listeners",
    "check_state_url",
    "from_dict",
    "load",
    "locate",
    "parse_duration",
    "parse_hostport",
    "parse_s3_uri",
]
