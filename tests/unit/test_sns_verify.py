"""SNS signature checks without a certificate: the string to sign, and URL checks before any network."""

from __future__ import annotations

import pytest

from feedback.ingest.sns_certs import VerifyError, fetch_https
from feedback.ingest.sns_verify import string_to_sign
from tests.support.sns_signing import CERT_NAME


def test_string_to_sign_is_the_documented_layout() -> None:
    note = {"Type": "Notification", "MessageId": "m", "TopicArn": "t", "Message": "a\nb", "Timestamp": "ts",
            "Subject": "s", "UnsubscribeURL": "u", "SignatureVersion": "1"}  # fmt: skip
    assert (
        string_to_sign(note)
        == b"Message\na\nb\nMessageId\nm\nSubject\ns\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
    )
    del note["Subject"]
    assert (
        string_to_sign(note)
        == b"Message\na\nb\nMessageId\nm\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
    )
    conf = {"Type": "SubscriptionConfirmation", "MessageId": "m", "TopicArn": "t", "Message": "x",
            "Timestamp": "ts", "Token": "k", "SubscribeURL": "u"}  # fmt: skip
    assert string_to_sign(conf) == (
        b"Message\nx\nMessageId\nm\nSubscribeURL\nu\nTimestamp\nts\nToken\nk\nTopicArn\nt\nType\n"
        b"SubscriptionConfirmation\n"
    )


def test_the_production_fetcher_checks_the_url_before_any_network() -> None:
    with pytest.raises(VerifyError, match=r"is not sns\.<region>\.amazonaws\.com"):
        fetch_https("https://sns.eu-west-1.amazonaws.com.evil.com/" + CERT_NAME)
