"""X-SES-*-ARN headers: what the sender reads back from a spooled message (pure)."""

from __future__ import annotations

from relay.sending.sender import spooled_arns
from tests.support.samples import arn_message


def test_spooled_arns_reads_only_the_arn_headers() -> None:
    assert spooled_arns(arn_message()) == {
        "source_arn": "arn:aws:ses:us-east-1:111111111111:identity/example.com",
        "from_arn": "arn:aws:ses:us-east-1:111111111111:identity/example.com",
    }
    assert spooled_arns(arn_message("")) == {}
    assert spooled_arns(arn_message("x-ses-return-path-arn: arn:aws:ses:us-east-1:1:identity/rp\r\n")) == {
        "return_path_arn": "arn:aws:ses:us-east-1:1:identity/rp"
    }
    assert spooled_arns(b"Subject: hi\r\n\r\nX-SES-SOURCE-ARN: in the body, not a header\r\n") == {}
