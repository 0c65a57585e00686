"""Address normalisation and validation: the one definition of "the same recipient".

Suppressions, recipient rows and feedback events are all keyed by the normalised
form, so every entry point (SMTP, CLI, SES events) must go through `normalise`.
"""

from __future__ import annotations

import re

MAX_LOCAL = 64
MAX_DOMAIN = 253
MAX_ADDRESS = 254

# Printable ASCII without space, angle brackets, comma, semicolon, backslash and
# parentheses: enough for every local part real senders use, while refusing the
# characters that make header injection or parser confusion possible.
_LOCAL_OK = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.\"]+$")
_LABEL_OK = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class AddressError(ValueError):
    """An address that cannot be used as a recipient; the message says why."""

    def __init__(self, address: str, why: str) -> None:
        super().__init__(f"{why}: {address!r}")
        self.address = address
        self.why = why


def normalise(address: str) -> str:
    """Return the canonical form: trimmed, angle brackets removed, lower-cased,
    IDNA (punycode) domain. Raise AddressError when it is not a usable mailbox.
    """
    text = unbracket(address)
    if not text:
        raise AddressError(address, "empty address")
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise AddressError(address, "control characters in address")
    if "@" not in text:
        raise AddressError(address, "address has no domain")
    local, _, domain = text.rpartition("@")
    if not local:
        raise AddressError(address, "address has an empty local part")
    if len(local.encode("utf-8")) > MAX_LOCAL:
        raise AddressError(address, f"local part longer than {MAX_LOCAL} octets")
    if not local.isascii():
        raise AddressError(address, "non-ASCII local part (SMTPUTF8) is not supported")
    if not _LOCAL_OK.match(local) or local.startswith(".") or local.endswith(".") or ".." in local:
        raise AddressError(address, "malformed local part")
    domain = _normalise_domain(address, domain)
    result = f"{local.lower()}@{domain}"
    if len(result) > MAX_ADDRESS:
        raise AddressError(address, f"address longer than {MAX_ADDRESS} octets")
    return result


def unbracket(address: str) -> str:
    """The address as written, trimmed and without one pair of enclosing angle brackets:
    the form in which an envelope sender can be addressed again, before any check."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text


def _normalise_domain(address: str, domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    if not domain:
        raise AddressError(address, "address has an empty domain")
    if domain.startswith("[") and domain.endswith("]"):
        raise AddressError(address, "address literals are not accepted")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise AddressError(address, f"invalid international domain ({exc})") from None
    if len(ascii_domain) > MAX_DOMAIN:
        raise AddressError(address, f"domain longer than {MAX_DOMAIN} octets")
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL_OK.match(label) for label in labels):
        raise AddressError(address, "malformed domain")
    return ascii_domain


def domain_of(address: str) -> str:
    """The domain part of an already normalised address."""
    return address.rpartition("@")[2]
