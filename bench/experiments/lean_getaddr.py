"""Experiment: MAIL/RCPT addresses without aiosmtpd's per-call class and RFC 5322 parser.

aiosmtpd's SMTP._getaddr defines a typing.Protocol class on every call (ABCMeta,
Protocol.__init_subclass__) and parses the path with the email package's header
parser: ~57 µs a command here, three commands a message. A plain `<local@domain>`
path, what applications send, is taken apart with one regex; anything else still
goes to aiosmtpd's parser. The real change: RelaySMTP overrides _getaddr.
"""

import re

from aiosmtpd import smtp

_PLAIN = re.compile(r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+)>(.*)\Z", re.DOTALL)
_original = smtp.SMTP._getaddr


def _getaddr(self, arg):  # type: ignore[no-untyped-def]
    if arg:
        match = _PLAIN.match(arg.lstrip())
        if match:
            address, rest = match.group(1), match.group(2).lstrip()
            if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
                return None, None
            return address, rest
    return _original(self, arg)


smtp.SMTP._getaddr = _getaddr
