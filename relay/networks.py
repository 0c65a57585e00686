"""Which addresses count as loopback, private or "narrow" (pure).

The open-relay rule needs a definition an operator can predict: a listener that
anyone on the internet can reach must not let anyone on the internet relay.
Loopback and private address space (RFC 1918, CGNAT, link-local, IPv6 ULA) are
narrow whatever their size because they are not routed on the internet; a public
network is narrow when it is at most a /16 (IPv4) or a /48 (IPv6), the size of one
organisation's allocation. `0.0.0.0/0` and `::/0` are never narrow.
"""

from __future__ import annotations

import ipaddress
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
# Explicit lists rather than `is_private`: Python calls 0.0.0.0/0 "private" in some
# versions because both of its ends are in reserved ranges.
PRIVATE = (
    *LOOPBACK,
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fc00::/7"),
    ipaddress.ip_network("fe80::/10"),
)
NARROW_PREFIX = {4: 16, 6: 48}


def peer_ip(peer: Any) -> IPAddress | None:
    """The client's address from aiosmtpd's `session.peer`; IPv4-mapped IPv6 unwrapped."""
    if not isinstance(peer, tuple) or not peer:
        return None
    try:
        ip = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def in_networks(ip: IPAddress | None, networks: tuple[IPNetwork, ...] | list[IPNetwork]) -> bool:
    return ip is not None and any(ip.version == net.version and ip in net for net in networks)


def is_loopback_ip(ip: IPAddress | None) -> bool:
    return in_networks(ip, LOOPBACK)


def is_loopback_host(host: str) -> bool:
    """Is a listener's bind address loopback only? Names other than localhost are not."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return is_loopback_ip(ipaddress.ip_address(host))
    except ValueError:
        return False


def _within(net: IPNetwork, outer: IPNetwork) -> bool:
    return net.version == outer.version and net.subnet_of(outer)  # type: ignore[arg-type]


def wide_network(text: str) -> str | None:
    """Why the allow-list entry `text` is too wide for a listener beyond loopback, or None."""
    net = ipaddress.ip_network(text, strict=False)
    if any(_within(net, private) for private in PRIVATE):
        return None
    if net.prefixlen == 0:
        return f"{text} is every address"
    limit = NARROW_PREFIX[net.version]
    if net.prefixlen < limit:
        return f"{text} is a public network wider than /{limit}"
    return None
