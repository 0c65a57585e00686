"""Recipient statuses and the one move allowed between them: forward.

Shared by the feedback policy (which decides a status from an SES event) and the
store (which applies the statuses of events that arrived before the sender had
recorded their SES message id), so both order statuses the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# Weakest first. A later event may only move a recipient to the right: what the
# sender most needs to know (a complaint, a bounce) must not be hidden by a late
# Delivery or a redelivered Send.
STATUS_ORDER: tuple[str, ...] = (
    "queued",
    "sent",
    "delayed",
    "delivered",
    "failed",
    "rejected",
    "bounced",
    "complained",
)
STATUS_RANK: Mapping[str, int] = MappingProxyType({s: i for i, s in enumerate(STATUS_ORDER)})


def advance_status(current: str | None, new: str) -> str:
    """The stronger of two statuses (see STATUS_ORDER); ValueError for unknown names."""
    if new not in STATUS_RANK:
        raise ValueError(f"unknown recipient status {new!r}; expected one of {', '.join(STATUS_ORDER)}")
    if current is None:
        return new
    if current not in STATUS_RANK:
        raise ValueError(f"unknown recipient status {current!r}; expected one of {', '.join(STATUS_ORDER)}")
    return new if STATUS_RANK[new] > STATUS_RANK[current] else current
