"""Is a permanent bounce the sender's fault rather than the mailbox's? (pure)

The policy suppresses an address after a permanent bounce, which is right when
the mailbox is gone and wrong when the receiving server refused *us*: failed DMARC,
SPF or DKIM, content scored as spam, or our sending IP or domain on a block list.
Suppressing the recipient then hides a problem the sender must fix, and would block
a perfectly good address for a month.

Suppression is the safe default, so only a clear sender-side diagnostic counts:

* the enhanced status code must be a 5.7.x policy reply. A more specific non-policy
  code (5.1.1 "bad mailbox", 5.2.2 "mailbox full", ...) anywhere in the status or the
  text wins, whatever words follow; the generic 5.0.0 and the absence of any code
  neither confirm nor contradict, and then the words alone decide;
* and the text must name one of the sender-side causes below. Policy replies that do
  not ("5.7.1 relaying denied", "Recipient address rejected: Access denied", "not
  authorized", Exchange's "authentication required" for restricted groups) are about
  the recipient's configuration and follow their bounce type.
"""

from __future__ import annotations

import enum
import re

__all__ = ["SenderFault", "sender_at_fault", "sender_fault"]


class SenderFault(enum.StrEnum):
    """Which sender-side problem the receiving server named."""

    AUTHENTICATION = "authentication"  # DMARC, SPF, DKIM
    CONTENT = "content"  # spam, virus, phishing, content filters
    REPUTATION = "reputation"  # sending IP/domain blocked, block lists, reputation


_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")

# Checked in this order: the first match names the category shown to reviewers.
_PATTERNS: tuple[tuple[SenderFault, re.Pattern[str]], ...] = (
    (
        SenderFault.AUTHENTICATION,
        re.compile(
            r"\bdmarc\b|\bspf\b|\bdkim\b|sender policy framework|domainkeys"
            r"|\bunauthenticated\b"
            r"|authentication (?:check )?fail|fail\w* (?:\w+ ){0,3}authentication|authentication level"
        ),
    ),
    (
        SenderFault.REPUTATION,
        re.compile(
            r"\breputation\b"
            r"|black ?list|block ?list|deny ?list|\bbl\d+\b|\brbl\b|\bdnsbl\b|\brhsbl\b"
            r"|spamhaus|spamcop|barracuda|\bsorbs\b|\bsurbl\b|\buribl\b|cloudmark|ipcheck\.proofpoint"
            r"|blocked using\b|client host\b[^;]*\b(?:rejected|blocked)"
            r"|\bbanned (?:sending )?(?:ip|sender|sending)"
            r"|\bip\b[^.;]*\b(?:blocked|blacklisted|blocklisted|banned|not accepted|denied|listed)"
            r"|(?:blocked|banned|not accepted|denied)\b[^.;]*\b(?:from|sending|your|this|source) ip\b"
            r"|\bptr record|reverse dns|\brdns\b"
        ),
    ),
    (
        SenderFault.CONTENT,
        re.compile(
            r"\bspam\b|\bspammy\b|\bunsolicited\b|\bjunk mail\b|\bbulk mail\b"
            r"|\bvirus\b|\bmalware\b|\bphish"
            r"|\bcontent\b(?:\W+\w+){0,6}?\W+(?:reject|block|filter|polic|restrict|violat|prohibit"
            r"|identified|security|not accept|risk)"
            r"|(?:reject|block|filter|prohibit)\w*(?:\W+\w+){0,4}?\W+(?:message |mail )?content\b"
            r"|\bsuspicious\b"
        ),
    ),
)


def _codes(diagnostic: str, status: str | None) -> list[tuple[str, str]]:
    """(subject, detail) of every enhanced status code in the text and the status."""
    found = [m.group(2, 3) for m in _ENHANCED.finditer(diagnostic)]
    if status:
        found += [m.group(2, 3) for m in _ENHANCED.finditer(status)]
    return found


def sender_fault(diagnostic_code: str | None, status: str | None) -> SenderFault | None:
    """The sender-side cause a permanent bounce names, or None when the diagnostic
    does not clearly put the fault on the sender."""
    if not diagnostic_code or not diagnostic_code.strip():
        return None
    text = " ".join(diagnostic_code.lower().split())
    for subject, detail in _codes(text, status):
        if subject != "7" and (subject, detail) != ("0", "0"):
            return None  # a specific non-policy code (mailbox, system, protocol) wins
    for fault, pattern in _PATTERNS:
        if pattern.search(text):
            return fault
    return None


def sender_at_fault(diagnostic_code: str | None, status: str | None) -> bool:
    """True when only a clear sender-side diagnostic (the policy's sender-at-fault row)."""
    return sender_fault(diagnostic_code, status) is not None
