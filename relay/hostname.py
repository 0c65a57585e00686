"""The relay's own host name: one answer for everything that names this host.

The SMTP banner and EHLO reply, the From address and Message-ID domain of notices
and guard alerts, the Reporting-MTA of delivery reports and the name the notifier
gives in LHLO/EHLO all come from `relay_hostname`, so a sender never sees a notice
from MAILER-DAEMON@localhost while the banner names another host. The top-level
`hostname` setting wins; without it, the machine's fully qualified name. In
containers the FQDN lookup often finds only `localhost` (the loopback line of
/etc/hosts), and then the plain host name is the better answer.
"""

from __future__ import annotations

import functools
import socket

from relay.config import Config

_LOCAL_NAMES = frozenset(
    {"localhost", "localhost.localdomain", "localhost6", "localhost6.localdomain6", "ip6-localhost",
     "ip6-loopback"}
)  # fmt: skip


def relay_hostname(config: Config) -> str:
    """`hostname` from the configuration, else the machine's name (`machine_hostname`)."""
    return config.hostname or machine_hostname()


@functools.cache
def machine_hostname() -> str:
    """The machine's name, looked up once per process (a reverse lookup may be slow)."""
    return choose_hostname(socket.getfqdn(), socket.gethostname())


def choose_hostname(fqdn: str, plain: str) -> str:
    """The first qualified name that is not a loopback name, else the first such name,
    else "localhost" (pure: the lookups are the caller's)."""
    names = [n.strip().rstrip(".").lower() for n in (fqdn, plain) if n and n.strip().rstrip(".")]
    usable = [n for n in names if n not in _LOCAL_NAMES and not n.startswith("localhost.")]
    return next((n for n in usable if "." in n), usable[0] if usable else "localhost")
