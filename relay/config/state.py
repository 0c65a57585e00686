"""`[state]`: where the shared state lives (PostgreSQL), or "" for the local SQLite store."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import (
    Field,
    field_validator,
)

from relay.config.sections import STATE_URL_SCHEMES, Duration, Section, Timeout, at_least
from relay.logredact import redact_url

MirrorAge = Annotated[Duration, at_least(timedelta(seconds=10), "10 seconds (the mirror polls every second)")]
Retention = Annotated[Duration, at_least(timedelta(hours=1), "one hour")]


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


class StateConfig(Section):
    """Where the shared state lives: "" keeps it in the local SQLite store (one host)."""

    url: str = Field(default="", repr=False)  # postgresql://...; env SES_RELAY_STATE_URL overrides
    pool_size: int = Field(default=4, ge=1, le=64)  # PostgreSQL connections per process
    connect_timeout: Timeout = timedelta(seconds=5)  # to connect, and to wait for a free connection
    # /healthz fails, and `state check` exits 1, once the local mirror is this far behind
    mirror_max_age: MirrorAge = timedelta(minutes=5)
    change_retention: Retention = timedelta(days=1)  # the change log kept for mirrors to catch up from

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_state_url(value)

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
