"""The words of bounce notices (pure data): one entry per kind of notice, and plain
text for the status codes and SES bounce subtypes a notice explains.

Kept apart from the composer (feedback.notices.compose) so that changing what a
notice says never touches how it is built; the golden files in tests/golden/notices/
pin both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from relay.vocabulary import NoticeReason


@dataclass(frozen=True)
class Kind:
    """The words and defaults for one kind of notice."""

    subject: str
    happened: str
    todo: str
    status: str  # used when SES gave no valid status
    diag_type: str = "smtp"  # RFC 3464 diagnostic-type when the text carries none
    diag_label: str = "Reported by Amazon SES"


_NOT_SUPPRESSED = "The recipient's address is fine and was not suppressed."

# One entry per NoticeReason, except MESSAGE_REJECTED_CONTENT: the policy records it for
# all three message-at-fault subtypes, and kind_for picks "message_content",
# "message_attachment" or MESSAGE_TOO_LARGE's words by the bounce subtype.
KINDS: Mapping[str, Kind] = MappingProxyType(
    {
        NoticeReason.PERMANENT_BOUNCE: Kind(
            subject="Undelivered Mail Returned to Sender",
            happened="The recipient's mail server refused the message permanently.",
            todo=(
                "Check the address for typing mistakes and ask the recipient for a working one. "
                "The address is removed from future sends: the relay refuses new mail to it."
            ),
            status="5.0.0",
        ),
        NoticeReason.SOFT_BOUNCE_ESCALATED: Kind(
            subject="Undelivered Mail: repeated temporary failures",
            happened=(
                "Delivery to this address failed temporarily too many times in a row "
                "(for example a full mailbox, or a server that keeps deferring mail)."
            ),
            todo=(
                "No change to the message will help. The address is paused for future sends for "
                "a while to protect your sending reputation; if the mail matters, reach the "
                "recipient another way."
            ),
            status="4.0.0",
        ),
        "message_content": Kind(
            subject="Undelivered Mail: content refused",
            happened="The recipient's mail server refused the message because of its content.",
            todo=(
                "Review the content (links, wording, attachments) against the diagnostic below, "
                f"change it and send again. {_NOT_SUPPRESSED}"
            ),
            status="5.6.0",
        ),
        "message_attachment": Kind(
            subject="Undelivered Mail: attachment refused",
            happened=(
                "The recipient's mail server refused an attachment of the message "
                "(often because of its file type)."
            ),
            todo=(
                "Remove the attachment or send it another way (for example as a link), then send "
                f"again. {_NOT_SUPPRESSED}"
            ),
            status="5.6.0",
        ),
        NoticeReason.MESSAGE_TOO_LARGE: Kind(
            subject="Undelivered Mail: message too large",
            happened="The recipient's mail server refused the message because it is too large.",
            todo=(
                "The message is too large: reduce it (smaller or fewer attachments, or a link "
                f"instead of a file) and send it again. {_NOT_SUPPRESSED}"
            ),
            status="5.3.4",
        ),
        NoticeReason.SENDER_AT_FAULT: Kind(
            subject="Undelivered Mail: action needed on your sending domain",
            happened=(
                "The receiving server refused mail from your domain because of DMARC/SPF/DKIM "
                "or reputation (of the sender, its domain or the sending IP addresses)."
            ),
            todo=(
                "Check your domain's authentication: SPF, DKIM and DMARC records and the "
                "diagnostic below; if it names a blocklist, ask for delisting. Then send again. "
                f"{_NOT_SUPPRESSED}"
            ),
            status="5.7.1",
        ),
        NoticeReason.REJECT: Kind(
            subject="Undelivered Mail: rejected by Amazon SES",
            happened=(
                "Amazon SES rejected the message before sending it, usually because it "
                "contains a virus or other harmful content. It was not sent."
            ),
            todo="Remove the harmful content (check every attachment) and send again.",
            status="5.7.1",
            diag_type="x-ses",
        ),
        NoticeReason.RENDERING_FAILURE: Kind(
            subject="Undelivered Mail: template rendering failed",
            happened=(
                "Amazon SES could not render the message's template (for example a missing "
                "or invalid template variable), so it was not sent."
            ),
            todo="Fix the template or the data sent with it, then send again.",
            status="5.6.0",
            diag_type="x-ses",
        ),
        NoticeReason.SEND_FAILED: Kind(
            subject="Undelivered Mail: Amazon SES refused the message",
            happened=(
                "The relay accepted the message but could not hand it to Amazon SES: SES "
                "refused it, or kept failing until the relay stopped retrying."
            ),
            todo=(
                "Read the diagnostic below. Common causes: the sender address or domain is not "
                "verified in SES, the SES account is in the sandbox or paused, or the message is "
                "malformed. The relay will not retry; send again once the cause is fixed."
            ),
            status="5.0.0",
            diag_type="x-ses",
        ),
        NoticeReason.SUPPRESSED: Kind(
            subject="Undelivered Mail: recipient is on the suppression list",
            happened=(
                "The relay did not send the message to this address because the address is on "
                "its suppression list (mail to it bounced or drew a complaint before)."
            ),
            todo=(
                "Remove the address from your list. If you know it works again, ask the relay's "
                "administrator to clear it (ses-relay suppression clear ADDRESS)."
            ),
            status="5.7.1",
            diag_label="The relay replied",
        ),
    }
)

SES_SUBTYPE_TEXT: Mapping[str, str] = MappingProxyType(
    {
        "noemail": "The address does not exist.",
        "suppressed": (
            "Amazon SES did not send to this address because it is on SES's global suppression "
            "list (it bounced recently, from any SES customer)."
        ),
        "onaccountsuppressionlist": (
            "Amazon SES did not send to this address because it is on your SES account's suppression list."
        ),
    }
)

# RFC 3463 status details, in plain words, for the codes SES and receivers really use.
STATUS_TEXT: Mapping[str, str] = MappingProxyType(
    {
        "1.1": "mailbox does not exist",
        "1.2": "recipient's domain does not accept mail",
        "1.3": "malformed recipient address",
        "1.6": "mailbox has moved",
        "2.1": "mailbox disabled",
        "2.2": "mailbox full",
        "2.3": "message larger than the mailbox accepts",
        "3.4": "message too big for the receiving system",
        "4.4": "unable to route",
        "4.7": "delivery time expired",
        "6.0": "refused because of the content",
        "7.0": "refused by security or policy",
        "7.1": "delivery not authorized, message refused",
        "7.25": "reverse DNS check failed",
        "7.26": "sender authentication (DMARC/SPF/DKIM) failed",
    }
)
STATUS_CLASS = MappingProxyType({"4": "temporary failure", "5": "permanent failure"})


def kind_for(reason: str, bounce_subtype: str | None) -> Kind:
    """The words for a notice: by its reason, and for a message at fault by the subtype."""
    if reason == NoticeReason.MESSAGE_REJECTED_CONTENT:
        subtype = (bounce_subtype or "").strip().lower()
        if subtype == "messagetoolarge":
            return KINDS[NoticeReason.MESSAGE_TOO_LARGE]
        if subtype == "attachmentrejected":
            return KINDS["message_attachment"]
        return KINDS["message_content"]
    return KINDS[reason]


def status_words(status: str) -> str:
    """An enhanced status code ("5.1.1") in plain words, as specific as the table knows."""
    klass, subject, detail = status.split(".")
    words = STATUS_CLASS[klass]
    specific = STATUS_TEXT.get(f"{subject}.{detail}")
    return f"{words}: {specific}" if specific else words
