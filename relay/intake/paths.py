"""MAIL FROM and RCPT TO paths in the form applications send them (pure).

aiosmtpd's `SMTP._getaddr` defines a `typing.Protocol` class on every call and parses
the path with the email package's RFC 5322 parser: ~57 µs a command, a quarter of
the intake's interpreter time under load. Nearly every path is `<local@domain>` of
plain dot-atoms, or the null path `<>`; `plain_path` takes those apart with one
regular expression and returns exactly what aiosmtpd's parser returns for them. For
anything else (quoted local parts, source routes, domain literals, comments, a path
without brackets, non-ASCII, garbage) it returns None and the caller asks aiosmtpd.
"""

from __future__ import annotations

import re

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
# The local part may be any dot-atom; the domain too (the parser takes `-b` or `1` as a
# domain, as it does here). A dot at either end, two dots in a row, or any other
# character fails the match and goes to aiosmtpd's parser.
_PLAIN = re.compile(rf"<({_DOT_ATOM}@{_DOT_ATOM})>")
_CFWS_START = " \t"  # the email parser's CFWS_LEADER without "(": where it strips after ">"


def plain_path(arg: str) -> tuple[str, str] | None:
    """(address, the rest of the line) for `<local@domain>` and `<>`, as aiosmtpd's
    `_getaddr` returns them; None for every other form.

    After the closing bracket aiosmtpd's parser skips folding white space (which starts
    with a space or tab and then takes any white space) and comments; a comment
    sends the path to aiosmtpd. After `<>` it skips nothing.
    """
    if arg.startswith("<>"):
        return "<>", arg[2:]
    match = _PLAIN.match(arg)
    if match is None:
        return None
    rest = arg[match.end() :]
    if rest and rest[0] in _CFWS_START:
        rest = rest.lstrip()
    if rest.startswith("("):
        return None
    return match.group(1), rest
