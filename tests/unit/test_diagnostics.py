"""The sender-at-fault classifier against real-world diagnostic strings, both sides.

Only a clear sender-side diagnostic may skip suppression; everything else (unknown
users, full mailboxes, relay and access refusals, vague "policy reasons") must follow
its bounce type.
"""

from __future__ import annotations

import pytest

from feedback.diagnostics import SenderFault, sender_at_fault, sender_fault

AUTH, REP, CONTENT = SenderFault.AUTHENTICATION, SenderFault.REPUTATION, SenderFault.CONTENT

SENDER_AT_FAULT: list[tuple[str, str | None, SenderFault]] = [
    # Gmail
    (
        "smtp; 550-5.7.26 This mail is unauthenticated, which poses a security risk to the sender and "
        "Gmail users, and has been blocked. The sender must authenticate with at least one of SPF or DKIM. "
        "For this message, DKIM checks did not pass and SPF check for [shop.example.com] did not pass with "
        "ip: [54.240.3.7]. 550 5.7.26 https://support.google.com/mail/answer/81126#authentication - gsmtp",
        "5.7.26",
        AUTH,
    ),
    (
        "smtp; 550 5.7.26 Unauthenticated email from shop.example.com is not accepted due to domain's "
        "DMARC policy. Please contact the administrator of shop.example.com domain if this was a "
        "legitimate mail. - gsmtp",
        "5.7.26",
        AUTH,
    ),
    (
        "smtp; 550-5.7.1 Our system has detected that this message is likely suspicious due to the very "
        "low reputation of the sending domain. To best protect our users from spam, the message has been "
        "blocked. - gsmtp",
        "5.7.1",
        REP,
    ),
    (
        "smtp; 550-5.7.1 [54.240.3.7] Our system has detected an unusual rate of unsolicited mail "
        "originating from your IP address. To protect our users from spam, mail sent from your IP address "
        "has been blocked. - gsmtp",
        "5.7.1",
        REP,
    ),
    (
        "smtp; 552-5.7.0 This message was blocked because its content presents a potential security "
        "issue. Please visit https://support.google.com/mail/?p=BlockedMessage to review our message "
        "content and attachment content guidelines. - gsmtp",
        "5.7.0",
        CONTENT,
    ),
    (
        "smtp; 550-5.7.25 [54.240.3.7] The IP address sending this message does not have a PTR record "
        "setup, or the corresponding forward DNS entry does not point to the sending IP. - gsmtp",
        "5.7.25",
        REP,
    ),
    # Microsoft (Outlook.com / Exchange Online)
    (
        "smtp; 550 5.7.1 Service unavailable, Client host [54.240.3.7] blocked using Spamhaus. To request "
        "removal from this list see https://www.spamhaus.org/query/ip/54.240.3.7 (AS3130) "
        "[BN8NAM12FT063.eop-nam12.prod.protection.outlook.com]",
        "5.7.1",
        REP,
    ),
    (
        "smtp; 550 5.7.1 Unfortunately, messages from [54.240.3.7] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list (S3150). You can "
        "also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors.",
        "5.7.1",
        REP,
    ),
    (
        "smtp; 550 5.7.606 Access denied, banned sending IP [54.240.3.7]. To request removal from this "
        "list please visit https://sender.office.com/ and follow the directions.",
        "5.7.606",
        REP,
    ),
    (
        "smtp; 550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
        "5.7.708",
        REP,
    ),
    (
        "smtp; 550 5.7.509 Access denied, sending domain [SHOP.EXAMPLE.COM] does not pass DMARC "
        "verification and has a DMARC policy of reject.",
        "5.7.509",
        AUTH,
    ),
    (
        "smtp; 550 5.7.515 Access denied, sending domain shop.example.com doesn't meet the required "
        "authentication level.",
        "5.7.515",
        AUTH,
    ),
    (
        "smtp; 550 5.7.350 Remote server returned message detected as spam -> 554 5.7.1 Message rejected "
        "as spam by Content Filtering.",
        "5.7.350",
        CONTENT,
    ),
    # Yahoo / AOL
    (
        "smtp; 550 5.7.1 Unauthenticated email from shop.example.com is not accepted due to domain's DMARC "
        "policy",
        "5.7.1",
        AUTH,
    ),
    (
        "smtp; 553 5.7.1 [BL21] Connections will not be accepted from 54.240.3.7, because the ip is in "
        "Spamhaus's list; see http://postmaster.yahoo.com/errors/postmaster-28.html",
        "5.7.1",
        REP,
    ),
    # Postfix, appliances and everyone else
    (
        "smtp; 554 5.7.1 Service unavailable; Client host [54.240.3.7] blocked using zen.spamhaus.org; "
        "https://www.spamhaus.org/query/ip/54.240.3.7",
        "5.7.1",
        REP,
    ),
    ("smtp; 554 5.7.1 rejected due to DMARC policy", "5.7.1", AUTH),
    ("smtp; 550 5.7.1 SPF fail", "5.7.1", AUTH),
    (
        "smtp; 550 5.7.23 <bob@example.net>: Recipient address rejected: Message rejected due to: SPF fail "
        "- not authorized. Please see http://www.openspf.net/Why?s=mfrom;id=orders@shop.example.com;"
        "ip=54.240.3.7;r=example.net",
        "5.7.23",
        AUTH,
    ),
    ("smtp; 550 5.7.20 Message not delivered: DKIM signature verification failed", "5.7.20", AUTH),
    (
        "smtp; 554 5.7.1 resimta-po-01v.sys.comcast.net comcast 54.240.3.7 Comcast block for spam. "
        "Please see http://postmaster.comcast.net/smtp-error-codes.php#BL000000",
        "5.7.1",
        REP,
    ),
    ("smtp; 554 5.7.1 Blocked - see https://ipcheck.proofpoint.com/?ip=54.240.3.7", "5.7.1", REP),
    (
        "smtp; 550 5.7.1 Poor Reputation Sender. - https://csi.cloudmark.com/reset-request/?ip=54.240.3.7",
        "5.7.1",
        REP,
    ),
    (
        "smtp; 554 5.7.1 The message was rejected because it contains prohibited virus or spam content",
        "5.7.1",
        CONTENT,
    ),
    ("smtp; 554 Message rejected due to DMARC policy", "5.7.1", AUTH),  # the code only in `status`
    ("smtp; 550 5.0.0 Blocked by Spamhaus - listed at zen.spamhaus.org", None, REP),  # generic 5.0.0
    (
        "smtp; 550-5.7.26 This mail has been blocked because the sender is\r\n550-5.7.26 unauthenticated. "
        "Gmail requires all senders to authenticate with\r\n550 5.7.26 either SPF or DKIM.",
        None,
        AUTH,
    ),
]

NOT_SENDER_AT_FAULT: list[tuple[str | None, str | None]] = [
    ("smtp; 550 5.1.1 user unknown", "5.1.1"),
    (
        "smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces. - gsmtp",
        "5.1.1",
    ),
    (
        "smtp; 552-5.2.2 The email account that you tried to reach is over quota and inactive. - gsmtp",
        "5.2.2",
    ),
    ("smtp; 552 5.2.2 Mailbox full", "5.2.2"),
    ("smtp; 550 5.2.1 The email account that you tried to reach is disabled. - gsmtp", "5.2.1"),
    ("smtp; 550 5.7.1 Relaying denied", "5.7.1"),
    ("smtp; 550 5.7.1 <bob@example.net>: Relay access denied", "5.7.1"),
    ("smtp; 554 5.7.1 <bob@example.net>: Recipient address rejected: Access denied", "5.7.1"),
    (
        "smtp; 550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
        "[DM6NAM11FT012.eop-nam11.prod.protection.outlook.com]",
        "5.4.1",
    ),
    ("smtp; 550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302)", "5.5.0"),
    ("smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", "5.1.10"),
    ("smtp; 550 5.7.1 RESOLVER.RST.AuthRequired; authentication required", "5.7.1"),
    ("smtp; 550 5.7.1 RESOLVER.RST.NotAuthorized; not authorized", "5.7.1"),
    (
        "smtp; 554 5.7.9 Message not accepted for policy reasons. See "
        "https://help.yahoo.com/kb/postmaster/SLN7253.html",
        "5.7.9",
    ),
    ("smtp; 550 5.7.0 Local policy violation", "5.7.0"),
    (
        "smtp; 550 5.7.1 Delivery not authorized, message refused: the recipient has blocked the sender",
        "5.7.1",
    ),
    (
        "Amazon SES did not send the message to this address because it is on the suppression list for "
        "your account. For more information about removing addresses from the suppression list, see the "
        "Amazon SES Developer Guide.",
        "5.1.1",
    ),
    # a specific non-policy code wins over sender-side words
    (
        "smtp; 550 5.1.1 <trap@example.net>: Recipient address rejected: spam trap, mailbox does not exist",
        None,
    ),
    ("smtp; 552 5.2.2 Mailbox full; too much spam kept", "5.2.2"),
    ("smtp; 421 4.4.1 Unable to connect to remote host", "4.4.1"),
    ("smtp; 552 Requested mail action aborted: exceeded storage allocation", None),
    ("smtp; 550 Requested action not taken: mailbox unavailable", "5.0.0"),
    ("", "5.7.1"),
    (None, "5.7.1"),
    (None, None),
]


@pytest.mark.parametrize(("diagnostic", "status", "fault"), SENDER_AT_FAULT)
def test_sender_side_diagnostics(diagnostic: str, status: str | None, fault: SenderFault) -> None:
    assert sender_at_fault(diagnostic, status) is True
    assert sender_fault(diagnostic, status) is fault


@pytest.mark.parametrize(("diagnostic", "status"), NOT_SENDER_AT_FAULT)
def test_recipient_side_or_unclear_diagnostics(diagnostic: str | None, status: str | None) -> None:
    assert sender_at_fault(diagnostic, status) is False
    assert sender_fault(diagnostic, status) is None


def test_status_code_contradicting_the_text_wins() -> None:
    text = "smtp; 550 Rejected: listed at zen.spamhaus.org"
    assert sender_at_fault(text, None) is True
    assert sender_at_fault(text, "5.7.1") is True
    assert sender_at_fault(text, "5.1.1") is False


def test_ip_addresses_are_not_mistaken_for_status_codes() -> None:
    # "4.5.7.1" and "192.0.2.10" contain digit-dot runs that look like x.y.z codes
    assert sender_at_fault("smtp; 550 Client host [4.5.7.1] blocked using zen.spamhaus.org", None) is True
    assert sender_at_fault(
        "smtp; 550 5.7.1 Client host [192.0.2.10] blocked using b.barracudacentral.org", None
    )
