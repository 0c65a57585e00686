"""The narrow interface between the sender worker and whatever plays SES.

The real boto3 client (relay.sending.ses_client), the sandbox stand-in (relay.sandbox.stand_in) and test
doubles all implement `SesApi`, so the worker's retry and bookkeeping logic is the
same whichever upstream is behind it. Calls are synchronous: the worker runs them
in threads (or its own process), keeping the SMTP intake's event loop free.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SendRequest:
    """One SendRawEmail call: at most MAX_DESTINATIONS recipients."""

    raw: bytes
    source: str
    destinations: tuple[str, ...]
    configuration_set: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    source_arn: str | None = None
    from_arn: str | None = None
    return_path_arn: str | None = None


MAX_DESTINATIONS = 50


class Disposition(enum.Enum):
    """What the worker should do after a failed call."""

    RETRY = "retry"  # throttling, 5xx, connection trouble: try again later
    PERMANENT = "permanent"  # SES refused this message for good: mark failed, tell the sender


@dataclass
class SesError(Exception):
    """A failed SES call, already classified.

    `code` is SES's error code (e.g. "Throttling", "MessageRejected") or a local
    name such as "ConnectionError"; `message` is SES's text, kept for the notice
    to the sender and the recipient's status detail.
    """

    code: str
    message: str
    disposition: Disposition
    http_status: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        status = f" (HTTP {self.http_status})" if self.http_status else ""
        return f"{self.code}{status}: {self.message}"

    @property
    def retryable(self) -> bool:
        return self.disposition is Disposition.RETRY


class SesApi(Protocol):
    def send_raw(self, request: SendRequest) -> str:
        """Send one raw message; return SES's MessageId or raise SesError."""
        ...

    def max_send_rate(self) -> float:
        """Messages (recipients) per second the account may send (GetSendQuota)."""
        ...
